// Reference FlashMLA backend: plain TypeScript, f64 accumulation, the same structure as the CUDA
// kernels — a main kernel over the scheduler's (request, block-range) work items writing either the
// final result (unsplit request) or a partial (split), then the LSE combine.
// Reference: https://github.com/deepseek-ai/FlashMLA/blob/main/csrc/kernels/splitkv_mla.cu and
// csrc/kernels/mla_combine.cu; interface flash_mla/flash_mla_interface.py (flash_mla_with_kvcache).
import { combineSplits } from './combine.ts';
import { allocCacheLayer, readRow } from './kv-format.ts';
import { keyLimit, planFlashMla, type FlashMlaPlan } from './validate.ts';
import { MLA_BLOCK_SIZE, type FlashMlaArgs, type FlashMlaResult, type SyncFlashMlaKernel } from './types.ts';
import type { MlaWorkItem } from './metadata.ts';

/** Scratch reused across work items (grown on demand). */
interface Scratch {
  k: Float64Array; // [n, dQK] dequantized K rows of the item
  q: Float64Array; // [dQK]
  s: Float64Array; // [n] scores of one row
  o: Float64Array; // [dV]
}

function grow(buf: Float64Array, n: number): Float64Array {
  return buf.length >= n ? buf : new Float64Array(Math.max(n, buf.length * 2));
}

/**
 * One work item for one kv head: rows r = sIdx·g + j over keys [blockBegin·64, min(blockEnd·64, len)).
 * Keys at or past a row's causal limit or past the sequence length are never loaded or multiplied, so
 * NaN in unused cache slots cannot reach the result.
 */
function runItem(
  a: FlashMlaArgs, plan: FlashMlaPlan, it: MlaWorkItem, h: number, sc: Scratch,
  dstO: Float32Array | Float64Array, dstLse: Float32Array | Float64Array,
  oIndex: (r: number) => number, lseIndex: (r: number) => number, emptyLse: number,
): void {
  const { dQK, dV, qkBegin, g, rows, maxBlocks, sQ, hQ } = plan;
  const len = a.cacheSeqlens[it.batchIdx]!;
  const t0 = it.blockBegin * MLA_BLOCK_SIZE;
  const t1 = Math.min(it.blockEnd * MLA_BLOCK_SIZE, len);
  const n = Math.max(0, t1 - t0);
  sc.k = grow(sc.k, n * dQK);
  sc.s = grow(sc.s, n);
  const row = sc.k;
  for (let t = 0; t < n; t++) {
    const pos = t0 + t;
    const block = a.blockTable[it.batchIdx * maxBlocks + Math.floor(pos / MLA_BLOCK_SIZE)]!;
    readRow(a.kCache, block, pos % MLA_BLOCK_SIZE, h, row.subarray(t * dQK, (t + 1) * dQK));
  }
  const { q, s, o } = sc;
  for (let r = 0; r < rows; r++) {
    const sIdx = Math.floor(r / g);
    const qh = h * g + (r % g);
    const qo = ((it.batchIdx * sQ + sIdx) * hQ + qh) * dQK;
    for (let i = 0; i < dQK; i++) q[i] = a.q[qo + i]!;
    const lim = Math.min(n, keyLimit(plan, len, r) - t0); // keys of this item the row may see
    const oo = oIndex(r);
    if (lim <= 0) {
      for (let k = 0; k < dV; k++) dstO[oo + k] = 0;
      dstLse[lseIndex(r)] = emptyLse;
      continue;
    }
    let m = -Infinity;
    for (let t = 0; t < lim; t++) {
      let dot = 0;
      const ko = t * dQK;
      for (let i = qkBegin; i < dQK; i++) dot += q[i]! * row[ko + i]!;
      s[t] = dot * a.softmaxScale;
      if (s[t]! > m) m = s[t]!;
    }
    let sum = 0;
    o.fill(0);
    for (let t = 0; t < lim; t++) {
      const p = Math.exp(s[t]! - m);
      sum += p;
      const ko = t * dQK;
      for (let k = 0; k < dV; k++) o[k] += p * row[ko + k]!;
    }
    for (let k = 0; k < dV; k++) dstO[oo + k] = o[k]! / sum;
    dstLse[lseIndex(r)] = Math.log(sum) + m;
  }
}

/** flash_mla_with_kvcache on the CPU in f64: out [b, sQ, hQ, dV], lse [b, hQ, sQ]. */
export function flashMlaWithKvcacheRef(a: FlashMlaArgs): FlashMlaResult {
  const plan = planFlashMla(a);
  const { b, sQ, hQ, hKv, g, rows, dQK, dV, numSlots } = plan;
  const out = a.out ?? new Float32Array(b * sQ * hQ * dV);
  const lse = a.lse ?? new Float32Array(b * hQ * sQ);
  const oAcc = new Float64Array(numSlots * hKv * rows * dV);
  const lseAcc = new Float64Array(numSlots * hKv * rows);
  const sc: Scratch = { k: new Float64Array(0), q: new Float64Array(dQK), s: new Float64Array(0), o: new Float64Array(dV) };
  for (const it of plan.items) {
    const bi = it.batchIdx;
    for (let h = 0; h < hKv; h++) {
      if (it.noSplit) {
        // Final result: out [b, sQ, hQ, dV], lse [b, hQ, sQ]; a row with no keys gets O 0 and lse +inf.
        runItem(a, plan, it, h, sc, out, lse,
          (r) => ((bi * sQ + Math.floor(r / g)) * hQ + h * g + (r % g)) * dV,
          (r) => (bi * hQ + h * g + (r % g)) * sQ + Math.floor(r / g), Infinity);
      } else {
        // Partial: slot numSplits[b] + split; a row with no keys in this range gets O 0 and lse −inf.
        const slot = a.meta.numSplits[bi]! + it.splitIdx;
        runItem(a, plan, it, h, sc, oAcc, lseAcc,
          (r) => ((slot * hKv + h) * rows + r) * dV, (r) => (slot * hKv + h) * rows + r, -Infinity);
      }
    }
  }
  combineSplits(plan, a.meta.numSplits, oAcc, lseAcc, out, lse);
  return { out, lse };
}

/** The ref backend as a FlashMlaKernel (one thread; a few parts so the split/combine path is exercised). */
export function createRefFlashMla(): SyncFlashMlaKernel {
  return {
    backend: 'ref',
    threads: 1,
    numParts: () => 4,
    flashMlaWithKvcache: flashMlaWithKvcacheRef,
    allocCache: (dtype, numBlocks, numKvHeads, headDim, ropeDim) => allocCacheLayer(dtype, numBlocks, numKvHeads, headDim, ropeDim),
    async dispose() {},
  };
}
