// Helpers shared by the DeepGEMM tests (not a test file): seeded random data and the float64 oracle.
import { BLOCK, type Fp8Matrix, type GroupedFp8Weights } from './types.ts';
import { dequantize, dequantizeGroup } from './quant.ts';
import { mulberry32 } from '../../tensor/random.ts';

/** mulberry32: small seeded PRNG, uniform in [0, 1). */
export const rng = mulberry32;

/** Standard normal values (Box-Muller), as f32. */
export function randn(len: number, seed: number, scale = 1): Float32Array {
  const u = rng(seed);
  const out = new Float32Array(len);
  for (let i = 0; i < len; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u())), t = 2 * Math.PI * u();
    out[i] = r * Math.cos(t) * scale;
    if (i + 1 < len) out[i + 1] = r * Math.sin(t) * scale;
  }
  return out;
}

/** Float64 product x[rows, k] · w[n, k]ᵀ for the listed rows and columns (out [rows.length, cols.length]). */
export function f64GemmNt(x: ArrayLike<number>, w: ArrayLike<number>, k: number, rows: readonly number[], cols: readonly number[]): Float64Array {
  const out = new Float64Array(rows.length * cols.length);
  rows.forEach((r, i) => {
    cols.forEach((c, j) => {
      let s = 0;
      for (let t = 0; t < k; t++) s += x[r * k + t]! * w[c * k + t]!;
      out[i * cols.length + j] = s;
    });
  });
  return out;
}

/** Picks `count` distinct sorted indices of [0, n) (all of them when count >= n), always including 0 and n-1. */
export function sample(n: number, count: number, seed: number): number[] {
  if (count >= n) return Array.from({ length: n }, (_, i) => i);
  const u = rng(seed), set = new Set<number>([0, n - 1]);
  while (set.size < count) set.add(Math.floor(u() * n));
  return [...set].sort((a, b) => a - b);
}

/** out values at the listed rows/cols. */
export function pick(out: Float32Array, n: number, rows: readonly number[], cols: readonly number[]): Float64Array {
  const r = new Float64Array(rows.length * cols.length);
  rows.forEach((i, a) => cols.forEach((j, b) => { r[a * cols.length + b] = out[i * n + j]!; }));
  return r;
}

/** Float64 oracle of a grouped FP8 product over A (dequantized) for row r using group g. */
export function groupedOracle(a: Fp8Matrix, b: GroupedFp8Weights, groupOfRow: (r: number) => number, rows: readonly number[], cols: readonly number[]): Float64Array {
  const aDeq = dequantize(a);
  const out = new Float64Array(rows.length * cols.length);
  const cache = new Map<number, Float64Array>();
  rows.forEach((r, i) => {
    const g = groupOfRow(r);
    if (g < 0) return;
    if (!cache.has(g)) cache.set(g, dequantizeGroup(b, g));
    const w = cache.get(g)!;
    const o = f64GemmNt(aDeq.subarray(r * a.cols, (r + 1) * a.cols), w, a.cols, [0], cols);
    out.set(o, i * cols.length);
  });
  return out;
}

export { BLOCK };
