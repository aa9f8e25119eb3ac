// FlashMLA's split-KV combine: merges the partial outputs of a request's splits with their LSEs.
// Reference: https://github.com/deepseek-ai/FlashMLA/blob/main/csrc/kernels/mla_combine.cu
// Per (request, head, query row) with n > 1 splits:
//   m = max_i lse_i (0 if all are −inf);  lse = ln Σ e^(lse_i − m) + m, or +inf if that sum is 0 or NaN;
//   O = Σ e^(lse_i − lse) · O_i.
// A split that saw no keys for a row holds lse −inf and O 0, so it drops out; a row no split saw gets
// lse +inf and O = 0 (e^(−inf) · 0), never NaN.
import type { FlashMlaPlan } from './validate.ts';

/**
 * Partial results: oAcc [numSlots, hKv, rows, dV] and lseAcc [numSlots, hKv, rows], slot = numSplits[b] + split.
 * Writes requests with more than one split into out [b, sQ, hQ, dV] and lse [b, hQ, sQ].
 */
export function combineSplits(
  plan: FlashMlaPlan, numSplits: Int32Array, oAcc: Float32Array | Float64Array, lseAcc: Float32Array | Float64Array,
  out: Float32Array, lse: Float32Array, batchBegin = 0, batchEnd = plan.b,
): void {
  const { sQ, hQ, hKv, g, rows, dV } = plan;
  const scale = new Float64Array(Math.max(1, numSplits[plan.b]!));
  const acc = new Float64Array(dV);
  for (let bi = batchBegin; bi < batchEnd; bi++) {
    const s0 = numSplits[bi]!;
    const n = numSplits[bi + 1]! - s0;
    if (n <= 1) continue;
    for (let h = 0; h < hKv; h++) {
      for (let r = 0; r < rows; r++) {
        let m = -Infinity;
        for (let i = 0; i < n; i++) m = Math.max(m, lseAcc[((s0 + i) * hKv + h) * rows + r]!);
        if (m === -Infinity) m = 0;
        let sum = 0;
        for (let i = 0; i < n; i++) sum += Math.exp(lseAcc[((s0 + i) * hKv + h) * rows + r]! - m);
        const total = sum === 0 || Number.isNaN(sum) ? Infinity : Math.log(sum) + m;
        for (let i = 0; i < n; i++) scale[i] = Math.exp(lseAcc[((s0 + i) * hKv + h) * rows + r]! - total);
        acc.fill(0);
        for (let i = 0; i < n; i++) {
          const w = scale[i]!;
          if (w === 0) continue; // the split saw no keys for this row (its O is 0): nothing to add
          const o = (((s0 + i) * hKv + h) * rows + r) * dV;
          for (let k = 0; k < dV; k++) acc[k] += w * oAcc[o + k]!;
        }
        const sIdx = Math.floor(r / g);
        const qh = h * g + (r % g);
        const oo = ((bi * sQ + sIdx) * hQ + qh) * dV;
        for (let k = 0; k < dV; k++) out[oo + k] = acc[k]!;
        lse[(bi * hQ + qh) * sQ + sIdx] = total;
      }
    }
  }
}
