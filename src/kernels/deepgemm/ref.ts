// DeepGEMM port, plain-TypeScript reference (the oracle every optimized backend is tested against).
// Reference: https://github.com/deepseek-ai/DeepGEMM (deep_gemm/include/deep_gemm/fp8_gemm.cuh: the
// promotion `final_accum += scale_a * scale_b * accum` after each 128-wide K block).
//
// FP8 x FP8 (`fp8GemmNt` and the grouped variants) follows DeepGEMM's promotion rule in f32:
//   partial = Σ_{k in block} A[i,k]·B[j,k]          (f32, order below)
//   acc     = acc + fround(sA[i,kb]·sB[j/128,kb]) · partial   (f32)
// `order` fixes the f32 summation order inside a block so that optimized kernels can be checked bit for
// bit: 'sequential' (k ascending, what a register-blocked GEMM micro-kernel does) or 'lanes16' (8
// partial sums over the 16 lanes of each 16-k chunk, reduced as the SIMD GEMV does; see fp8Dot2 in
// ../wasm/assembly/gemm.ts).
// FP8 products are exact in f32 (4+4 significant bits), so only the sums round.
//
// Weight-only and bf16 variants dequantize the weight to f32 (fround(q·s)) and sum in f64 (oracle).
import { FP8_E4M3_TABLE, bf16ToF32 } from '../../tensor/dtypes.ts';
import {
  BLOCK, ceilDiv, checkFp8Matrix, checkGrouped, checkMasked, checkMIndices, DeepGemmShapeError, outBuffer,
  type DeepGemm1d1dOps, type DeepGemmOps, type Fp8Matrix, type GroupedBf16Weights, type GroupedFp8Weights,
} from './types.ts';

export type PromotionOrder = 'sequential' | 'lanes16';

const fr = Math.fround;

/** f32 sum of a[aOff + t]·b[bOff + t] for t in [0, len), in the given order. */
function blockPartial(a: Float32Array, aOff: number, b: Float32Array, bOff: number, len: number, order: PromotionOrder): number {
  if (order === 'sequential') {
    let p = 0;
    for (let t = 0; t < len; t++) p = fr(p + a[aOff + t]! * b[bOff + t]!);
    return p;
  }
  // The GEMV (fp8Dot2) keeps 2 accumulators per row, P and Q, of 4 SIMD lanes: lane i of P sums
  // t ≡ 4i, 4i + 2 (mod 16) in k order, lane i of Q t ≡ 4i + 1, 4i + 3 (x is transposed per 16 to match its
  // shift-based FP8 decode); v = P + Q per SIMD lane; h = (v0 + v2) + (v1 + v3).
  const P = [0, 0, 0, 0], Q = [0, 0, 0, 0];
  const full = len - (len % 16);
  for (let t = 0; t < full; t += 16) {
    for (let i = 0; i < 4; i++) {
      const k = aOff + t + 4 * i, j = bOff + t + 4 * i;
      P[i] = fr(P[i]! + a[k]! * b[j]!);
      Q[i] = fr(Q[i]! + a[k + 1]! * b[j + 1]!);
      P[i] = fr(P[i]! + a[k + 2]! * b[j + 2]!);
      Q[i] = fr(Q[i]! + a[k + 3]! * b[j + 3]!);
    }
  }
  const v = [0, 1, 2, 3].map((i) => fr(P[i]! + Q[i]!));
  let p = fr(fr(v[0]! + v[2]!) + fr(v[1]! + v[3]!));
  for (let t = full; t < len; t++) p = fr(p + a[aOff + t]! * b[bOff + t]!);
  return p;
}

function decodeFp8(src: Uint8Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = FP8_E4M3_TABLE[src[i]!]!;
  return out;
}

/**
 * One FP8xFP8 NT product of rows [0, m) of A (values/scales given) against B (values/scales),
 * writing out[(outRow0 + i) * n + j]. `rowOf(i)` maps an output row to the A row.
 */
function fp8Rows(aVals: Float32Array, aScales: Float32Array, rows: readonly number[], outRows: readonly number[],
  bVals: Float32Array, bScales: Float32Array, n: number, k: number, out: Float32Array, order: PromotionOrder,
  bBlock: '1x128' | '128x128' = '128x128'): void {
  const kb = ceilDiv(k, BLOCK);
  // B's scale row of output column j: its 128-row block (1D2D) or the row itself (1D1D).
  const bRow = bBlock === '1x128' ? (j: number) => j : (j: number) => Math.floor(j / BLOCK);
  for (let t = 0; t < rows.length; t++) {
    const i = rows[t]!, o = outRows[t]!;
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let b = 0; b < kb; b++) {
        const c0 = b * BLOCK, len = Math.min(k, c0 + BLOCK) - c0;
        const partial = blockPartial(aVals, i * k + c0, bVals, j * k + c0, len, order);
        acc = fr(acc + fr(fr(aScales[i * kb + b]! * bScales[bRow(j) * kb + b]!) * partial));
      }
      out[o * n + j] = acc;
    }
  }
}

export interface RefOptions { order?: PromotionOrder }

/** D[m, n] = A[m, k]·B[n, k]ᵀ with DeepGEMM's promotion (see top). */
export function fp8GemmNt(a: Fp8Matrix, b: Fp8Matrix, out?: Float32Array, opts: RefOptions = {}): Float32Array {
  return ntProduct('fp8GemmNt', a, b, '128x128', out, opts);
}

/**
 * 1D1D recipe (DeepGEMM's wgrad kernels, DeepSeek-V3 §3.3.2 for Wgrad): D[m, n] = A[m, k]·B[n, k]ᵀ with
 * BOTH operands in 1x128 tiles along K (scales [m, kb] and [n, kb]); same promotion as fp8GemmNt:
 * acc = fround(acc + fround(fround(sA[i,kb]·sB[j,kb])·partial)) after each 128-wide K block.
 */
export function fp8GemmNt1d1d(a: Fp8Matrix, b: Fp8Matrix, out?: Float32Array, opts: RefOptions = {}): Float32Array {
  return ntProduct('fp8GemmNt1d1d', a, b, '1x128', out, opts);
}

/** A (1x128 tiles) times Bᵀ whose scales come in `bBlock` layout. */
function ntProduct(op: string, a: Fp8Matrix, b: Fp8Matrix, bBlock: '1x128' | '128x128', out: Float32Array | undefined, opts: RefOptions): Float32Array {
  checkFp8Matrix(op, 'a', a, '1x128');
  checkFp8Matrix(op, 'b', b, bBlock);
  if (a.cols !== b.cols) throw new DeepGemmShapeError(op, `a has k=${a.cols}, b has k=${b.cols}`);
  const o = outBuffer(op, out, a.rows * b.rows);
  const rows = Array.from({ length: a.rows }, (_, i) => i);
  fp8Rows(decodeFp8(a.data), a.scales, rows, rows, decodeFp8(b.data), b.scales, b.rows, a.cols, o, opts.order ?? 'sequential', bBlock);
  return o;
}

function groupSlices(b: GroupedFp8Weights, g: number): { vals: Float32Array; scales: Float32Array } {
  const per = ceilDiv(b.n, BLOCK) * ceilDiv(b.k, BLOCK);
  return { vals: decodeFp8(b.data.subarray(g * b.n * b.k, (g + 1) * b.n * b.k)), scales: b.scales.subarray(g * per, (g + 1) * per) };
}

/** Rows of each group: contiguous layout (mIndices, -1 = none). */
function rowsByGroup(mIndices: Int32Array, groups: number): number[][] {
  const by: number[][] = Array.from({ length: groups }, () => []);
  mIndices.forEach((g, r) => { if (g >= 0) by[g]!.push(r); });
  return by;
}

function maskedRows(maskedM: Int32Array, mMax: number, g: number): number[] {
  return Array.from({ length: maskedM[g]! }, (_, r) => g * mMax + r);
}

export function mGroupedFp8GemmNtContiguous(a: Fp8Matrix, b: GroupedFp8Weights, mIndices: Int32Array, out?: Float32Array, opts: RefOptions = {}): Float32Array {
  const op = 'mGroupedFp8GemmNtContiguous';
  checkFp8Matrix(op, 'a', a, '1x128');
  checkGrouped(op, b, a.cols);
  checkMIndices(op, mIndices, a.rows, b.groups);
  const o = outBuffer(op, out, a.rows * b.n);
  const aVals = decodeFp8(a.data);
  rowsByGroup(mIndices, b.groups).forEach((rows, g) => {
    if (rows.length === 0) return;
    const s = groupSlices(b, g);
    fp8Rows(aVals, a.scales, rows, rows, s.vals, s.scales, b.n, b.k, o, opts.order ?? 'sequential');
  });
  mIndices.forEach((g, r) => { if (g < 0) o.fill(0, r * b.n, (r + 1) * b.n); });
  return o;
}

export function mGroupedFp8GemmNtMasked(a: Fp8Matrix, b: GroupedFp8Weights, maskedM: Int32Array, mMax: number, out?: Float32Array, opts: RefOptions = {}): Float32Array {
  const op = 'mGroupedFp8GemmNtMasked';
  checkFp8Matrix(op, 'a', a, '1x128');
  checkGrouped(op, b, a.cols);
  checkMasked(op, maskedM, mMax, b.groups, a.rows);
  const o = outBuffer(op, out, a.rows * b.n);
  const aVals = decodeFp8(a.data);
  for (let g = 0; g < b.groups; g++) {
    if (maskedM[g] === 0) continue;
    const rows = maskedRows(maskedM, mMax, g);
    const s = groupSlices(b, g);
    fp8Rows(aVals, a.scales, rows, rows, s.vals, s.scales, b.n, b.k, o, opts.order ?? 'sequential');
  }
  return o;
}

// ------------------------------------------------------------------ weight-only and bf16 (f64 oracle)

/** out[r*n + j] = Σ_k x[r*k + c]·w(j, c) for the listed rows, w given as dequantized f32 values [n, k]. */
function denseRows(x: Float32Array, rows: readonly number[], w: Float32Array, n: number, k: number, out: Float32Array): void {
  for (const r of rows) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let c = 0; c < k; c++) s += x[r * k + c]! * w[j * k + c]!;
      out[r * n + j] = s;
    }
  }
}

/** Dequantized f32 weights fround(q·s) of group g, [n, k]. */
export function fp8GroupF32(b: GroupedFp8Weights, g: number): Float32Array {
  const { n, k } = b, kb = ceilDiv(k, BLOCK), per = ceilDiv(n, BLOCK) * kb;
  const w = new Float32Array(n * k);
  for (let j = 0; j < n; j++) {
    for (let c = 0; c < k; c++) {
      w[j * k + c] = FP8_E4M3_TABLE[b.data[g * n * k + j * k + c]!]! * b.scales[g * per + Math.floor(j / BLOCK) * kb + Math.floor(c / BLOCK)]!;
    }
  }
  return w;
}

function bf16GroupF32(b: GroupedBf16Weights, g: number): Float32Array {
  const w = new Float32Array(b.n * b.k);
  for (let i = 0; i < w.length; i++) w[i] = bf16ToF32(b.data[g * b.n * b.k + i]!);
  return w;
}

function checkX(op: string, x: Float32Array, m: number, k: number): void {
  if (!Number.isInteger(m) || m < 0 || x.length !== m * k) throw new DeepGemmShapeError(op, `x has ${x.length} values, want ${m}*${k}`);
}

function contiguousDense<W extends GroupedFp8Weights | GroupedBf16Weights>(op: string, x: Float32Array, m: number, b: W,
  mIndices: Int32Array, out: Float32Array | undefined, weights: (b: W, g: number) => Float32Array): Float32Array {
  checkGrouped(op, b, b.k);
  checkX(op, x, m, b.k);
  checkMIndices(op, mIndices, m, b.groups);
  const o = outBuffer(op, out, m * b.n);
  rowsByGroup(mIndices, b.groups).forEach((rows, g) => { if (rows.length) denseRows(x, rows, weights(b, g), b.n, b.k, o); });
  mIndices.forEach((g, r) => { if (g < 0) o.fill(0, r * b.n, (r + 1) * b.n); });
  return o;
}

function maskedDense<W extends GroupedFp8Weights | GroupedBf16Weights>(op: string, x: Float32Array, b: W, maskedM: Int32Array,
  mMax: number, out: Float32Array | undefined, weights: (b: W, g: number) => Float32Array): Float32Array {
  checkGrouped(op, b, b.k);
  checkX(op, x, b.groups * mMax, b.k);
  checkMasked(op, maskedM, mMax, b.groups, b.groups * mMax);
  const o = outBuffer(op, out, b.groups * mMax * b.n);
  for (let g = 0; g < b.groups; g++) if (maskedM[g]! > 0) denseRows(x, maskedRows(maskedM, mMax, g), weights(b, g), b.n, b.k, o);
  return o;
}

export const refDeepGemm: DeepGemmOps & DeepGemm1d1dOps = {
  fp8GemmNt: (a, b, out) => fp8GemmNt(a, b, out),
  fp8GemmNt1d1d: (a, b, out) => fp8GemmNt1d1d(a, b, out),
  mGroupedFp8GemmNtContiguous: (a, b, mIndices, out) => mGroupedFp8GemmNtContiguous(a, b, mIndices, out),
  mGroupedFp8GemmNtMasked: (a, b, maskedM, mMax, out) => mGroupedFp8GemmNtMasked(a, b, maskedM, mMax, out),
  mGroupedFp8WeightGemmNtContiguous: (x, m, b, mIndices, out) =>
    contiguousDense('mGroupedFp8WeightGemmNtContiguous', x, m, b, mIndices, out, fp8GroupF32),
  mGroupedFp8WeightGemmNtMasked: (x, b, maskedM, mMax, out) =>
    maskedDense('mGroupedFp8WeightGemmNtMasked', x, b, maskedM, mMax, out, fp8GroupF32),
  mGroupedBf16GemmNtContiguous: (x, m, b, mIndices, out) =>
    contiguousDense('mGroupedBf16GemmNtContiguous', x, m, b, mIndices, out, bf16GroupF32),
  mGroupedBf16GemmNtMasked: (x, b, maskedM, mMax, out) =>
    maskedDense('mGroupedBf16GemmNtMasked', x, b, maskedM, mMax, out, bf16GroupF32),
};
