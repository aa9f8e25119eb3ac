// Deterministic test data for the DeepEP checks: every rank can regenerate every other rank's inputs,
// so expected receive buffers are computed locally, independently of the code under test.
import { mulberry32 } from '../../../tensor/random.ts';
export const rng = mulberry32;

/** N(0,1) samples (Box-Muller). */
export function randn(n: number, rand: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(rand(), 1e-12);
    const v = rand();
    const r = Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** [T, K] distinct random experts per token, then `numMasked` random slots set to -1; weights in (0, 1]. */
export function randomTopk(T: number, K: number, E: number, numMasked: number, rand: () => number): { idx: Int32Array; weights: Float32Array } {
  const idx = new Int32Array(T * K);
  const weights = new Float32Array(T * K);
  for (let t = 0; t < T; t++) {
    const chosen = new Set<number>();
    for (let k = 0; k < K; k++) {
      let e: number;
      do e = Math.floor(rand() * E); while (chosen.has(e));
      chosen.add(e);
      idx[t * K + k] = e;
      weights[t * K + k] = Math.fround(0.05 + 0.95 * rand());
    }
  }
  for (let i = 0; i < numMasked && T * K > 0; i++) {
    const p = Math.floor(rand() * T * K);
    idx[p] = -1;
  }
  return { idx, weights };
}

/** DeepEP's calc_diff: 1 - 2·Σxy / Σ(x² + y²) (0 when equal), in f64. */
export function calcDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let xy = 0;
  let sq = 0;
  for (let i = 0; i < x.length; i++) {
    xy += x[i]! * y[i]!;
    sq += x[i]! * x[i]! + y[i]! * y[i]!;
  }
  return sq === 0 ? 0 : 1 - (2 * xy) / sq;
}
