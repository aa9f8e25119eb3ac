// Multi-head Latent Attention (DeepSeek-V2 §2.1) over the paged latent cache, in both forms:
// - naive: decompress K_nope and V per head from the cached latents with kv_b_proj, then standard
//   attention (mathematically the reference's naive k/v cache);
// - absorbed: fold kv_b_proj's K part into the query and its V part into the output, and attend over
//   the cached rows [c_kv | k_pe] directly (what FlashMLA computes: q is [q_lat | q_pe] of rowDim).
// References: deepseek-ai/DeepSeek-V3 inference/model.py `MLA.forward` (attn_impl naive / absorb);
// deepseek-ai/FlashMLA `flash_mla_with_kvcache`.
// Shapes: T new tokens of all sequences (varlen, concatenated), Hd heads, R = rowDim = kv_lora + rope.
import { FP8_BLOCK, groupSlice, type GroupedWeight, type Kernels, type WeightDType, type WeightMatrix } from '../kernels/api.ts';
import { FP8_E4M3_TABLE } from '../tensor/dtypes.ts';
import { getMlaMetadata } from '../kernels/flashmla/metadata.ts';
import type { KvCacheLayer, SyncFlashMlaKernel } from '../kernels/flashmla/types.ts';
import { CACHE_BLOCK_SIZE, type LatentCache } from './latent-cache.ts';

/** Positions numCached..numCached+numNew-1 of one sequence. */
export interface SeqSlice { blockTable: Int32Array; numCached: number; numNew: number }

/** Per-head weights derived from kv_b_proj for the absorbed form. */
export interface AbsorbedWeights {
  /** [Hd] of W_UK(h)ᵀ: [kv_lora, nope], so q_lat = q_nope · W_UK(h) is a matmul x·Wᵀ. */
  kT: WeightMatrix[];
  /** [Hd] of W_UV(h): [v, kv_lora], so out = o_lat · W_UV(h)ᵀ. */
  v: WeightMatrix[];
  /**
   * The same matrices stacked per head, [Hd, kv_lora, nope] and [Hd, v, kv_lora] (kT[h] and v[h] are
   * views of group h), so that all heads run as ONE grouped product (absorbQuery/absorbOutput: one pool
   * hand-off instead of Hd). Absent when the heads' slices do not share one format.
   */
  kTAll?: GroupedWeight;
  vAll?: GroupedWeight;
}

/** The format sliceWeight gives rows [rowStart, ...) of w: FP8 only on a 128-row block boundary. */
function sliceDType(w: WeightMatrix, rowStart: number): WeightDType {
  return w.dtype === 'fp8' && rowStart % FP8_BLOCK !== 0 ? 'f32' : w.dtype;
}

/**
 * Copies rows [rowStart, rowStart + rowCount) of W (optionally transposed) into a new backend
 * weight. Keeps the stored format when it can: BF16/F32 always, FP8 when rowStart is on a 128-row
 * block boundary (the scale grid then maps block to block); otherwise the slice is dequantised
 * exactly to f32 (only for shapes where head boundaries split FP8 blocks, e.g. tiny test models).
 */
export function sliceWeight(k: Kernels, w: WeightMatrix, rowStart: number, rowCount: number, transpose: boolean, dst?: WeightMatrix): WeightMatrix {
  const K = w.cols;
  const outRows = transpose ? K : rowCount;
  const outCols = transpose ? rowCount : K;
  const src = (r: number, c: number) => (rowStart + r) * K + c; // element (r, c) of the slice
  if (dst && (dst.dtype !== sliceDType(w, rowStart) || dst.rows !== outRows || dst.cols !== outCols)) {
    throw new Error(`sliceWeight: destination ${dst.dtype} [${dst.rows}, ${dst.cols}] does not fit the slice`);
  }
  if (w.dtype === 'fp8' && rowStart % FP8_BLOCK === 0) {
    const o = dst ?? k.allocWeight('fp8', outRows, outCols);
    if (o.dtype !== 'fp8') throw new Error('allocWeight returned the wrong dtype');
    for (let r = 0; r < rowCount; r++) {
      for (let c = 0; c < K; c++) o.data[transpose ? c * outCols + r : r * outCols + c] = w.data[src(r, c)]!;
    }
    const inSc = Math.ceil(K / FP8_BLOCK);
    const outSc = Math.ceil(outCols / FP8_BLOCK);
    const rb0 = rowStart / FP8_BLOCK;
    for (let rb = 0; rb < Math.ceil(rowCount / FP8_BLOCK); rb++) {
      for (let cb = 0; cb < inSc; cb++) {
        const s = w.scaleInv[(rb0 + rb) * inSc + cb]!;
        if (transpose) o.scaleInv[cb * outSc + rb] = s;
        else o.scaleInv[rb * outSc + cb] = s;
      }
    }
    return o;
  }
  const dtype = w.dtype === 'fp8' ? 'f32' : w.dtype;
  const o = dst ?? k.allocWeight(dtype, outRows, outCols);
  for (let r = 0; r < rowCount; r++) {
    for (let c = 0; c < K; c++) {
      const d = transpose ? c * outCols + r : r * outCols + c;
      const i = src(r, c);
      if (w.dtype === 'fp8') {
        const s = w.scaleInv[Math.floor((rowStart + r) / FP8_BLOCK) * Math.ceil(K / FP8_BLOCK) + Math.floor(c / FP8_BLOCK)]!;
        (o.data as Float32Array)[d] = FP8_E4M3_TABLE[w.data[i]!]! * s;
      } else {
        (o.data as Float32Array | Uint16Array)[d] = w.data[i]!;
      }
    }
  }
  return o;
}

export function deriveAbsorbed(k: Kernels, kvB: WeightMatrix, heads: number, nope: number, v: number): AbsorbedWeights {
  const kT: WeightMatrix[] = [];
  const vv: WeightMatrix[] = [];
  const kvLora = kvB.cols;
  const kStart = (h: number) => h * (nope + v), vStart = (h: number) => h * (nope + v) + nope;
  const kd = sliceDType(kvB, 0), vd = sliceDType(kvB, nope);
  let same = true;
  for (let h = 0; h < heads; h++) same &&= sliceDType(kvB, kStart(h)) === kd && sliceDType(kvB, vStart(h)) === vd;
  if (same && heads > 0) {
    // Stacked: each head's slice written into its group (no second copy).
    const kTAll = k.allocGroupedWeight(kd, heads, kvLora, nope);
    const vAll = k.allocGroupedWeight(vd, heads, v, kvLora);
    for (let h = 0; h < heads; h++) {
      kT.push(sliceWeight(k, kvB, kStart(h), nope, true, groupSlice(kTAll, h)));
      vv.push(sliceWeight(k, kvB, vStart(h), v, false, groupSlice(vAll, h)));
    }
    return { kT, v: vv, kTAll, vAll };
  }
  for (let h = 0; h < heads; h++) {
    kT.push(sliceWeight(k, kvB, kStart(h), nope, true));
    vv.push(sliceWeight(k, kvB, vStart(h), v, false));
  }
  return { kT, v: vv };
}

/** Scratch the absorbed products stage through (the model's reused activation buffers). */
export type ScratchFn = (name: string, n: number) => Float32Array;

/** Segments of Hd groups of T rows each: head h owns rows [h·T, (h + 1)·T). */
function headSegments(heads: number, T: number): { start: Int32Array; count: Int32Array } {
  return { start: Int32Array.from({ length: heads }, (_, h) => h * T), count: new Int32Array(heads).fill(T) };
}

/**
 * FlashMLA's query qf [T, Hd, kvLora + rope] from q [T, Hd, nope + rope]: per head h,
 * q_lat = q_nope(h) · W_UK(h) (ab.kT[h]) and q_pe copied next to it. All heads in one grouped product
 * when ab.kTAll is there (same kernels per head as one matmul each, so the same bits), else head by head.
 */
export function absorbQuery(k: Kernels, ab: AbsorbedWeights, q: Float32Array, T: number, heads: number, nope: number, rope: number,
  qf: Float32Array, ws: ScratchFn): void {
  const qk = nope + rope;
  const kvLora = ab.kT[0]!.rows;
  const R = kvLora + rope;
  if (!ab.kTAll) {
    const qn = ws('qn', T * nope), qLat = ws('qLat', T * kvLora);
    for (let h = 0; h < heads; h++) {
      k.matmul(gatherCols(q, T, heads * qk, h * qk, nope, qn), T, ab.kT[h]!, qLat);
      scatterCols(qLat, T, kvLora, qf, heads * R, h * R);
      copyCols(q, T, heads * qk, h * qk + nope, rope, qf, heads * R, h * R + kvLora);
    }
    return;
  }
  // Rows grouped by head: row h·T + t = q_nope(t, h).
  const qn = ws('qn', heads * T * nope);
  for (let h = 0; h < heads; h++) gatherCols(q, T, heads * qk, h * qk, nope, qn.subarray(h * T * nope, (h + 1) * T * nope));
  const qLat = k.groupedMatmul(qn, heads * T, ab.kTAll, headSegments(heads, T), ws('qLat', heads * T * kvLora));
  for (let h = 0; h < heads; h++) {
    scatterCols(qLat.subarray(h * T * kvLora, (h + 1) * T * kvLora), T, kvLora, qf, heads * R, h * R);
    copyCols(q, T, heads * qk, h * qk + nope, rope, qf, heads * R, h * R + kvLora);
  }
}

/**
 * o [T, Hd, v] from FlashMLA's oLat [T, Hd, kvLora]: per head h, o(h) = oLat(h) · W_UV(h)ᵀ (ab.v[h]); all
 * heads in one grouped product when ab.vAll is there, else head by head.
 */
export function absorbOutput(k: Kernels, ab: AbsorbedWeights, oLat: Float32Array, T: number, heads: number, o: Float32Array, ws: ScratchFn): void {
  const kvLora = ab.v[0]!.cols, vDim = ab.v[0]!.rows;
  if (!ab.vAll) {
    const ol = ws('ol', T * kvLora), oh = ws('oh', T * vDim);
    for (let h = 0; h < heads; h++) {
      k.matmul(gatherCols(oLat, T, heads * kvLora, h * kvLora, kvLora, ol), T, ab.v[h]!, oh);
      scatterCols(oh, T, vDim, o, heads * vDim, h * vDim);
    }
    return;
  }
  // One token: oLat's rows already go by head. Else regroup rows by head.
  let xs = oLat;
  if (T > 1) {
    xs = ws('ol', heads * T * kvLora);
    for (let h = 0; h < heads; h++) gatherCols(oLat, T, heads * kvLora, h * kvLora, kvLora, xs.subarray(h * T * kvLora, (h + 1) * T * kvLora));
  }
  const y = k.groupedMatmul(xs.subarray(0, heads * T * kvLora), heads * T, ab.vAll, headSegments(heads, T), ws('oh', heads * T * vDim));
  if (T === 1) { o.set(y.subarray(0, heads * vDim)); return; }
  for (let h = 0; h < heads; h++) scatterCols(y.subarray(h * T * vDim, (h + 1) * T * vDim), T, vDim, o, heads * vDim, h * vDim);
}

/** Copies column block [off, off + n) of each row of x[rows, stride] into out[rows, n]. */
export function gatherCols(x: Float32Array, rows: number, stride: number, off: number, n: number, out: Float32Array = new Float32Array(rows * n)): Float32Array {
  for (let r = 0; r < rows; r++) out.set(x.subarray(r * stride + off, r * stride + off + n), r * n);
  return out;
}

/** Copies column block [srcOff, srcOff + n) of src[rows, srcStride] into block [dstOff, dstOff + n) of dst[rows, dstStride]. */
export function copyCols(src: Float32Array, rows: number, srcStride: number, srcOff: number, n: number, dst: Float32Array, dstStride: number, dstOff: number): void {
  for (let r = 0; r < rows; r++) {
    const s0 = r * srcStride + srcOff, d0 = r * dstStride + dstOff;
    for (let i = 0; i < n; i++) dst[d0 + i] = src[s0 + i]!;
  }
}

/** Writes src[rows, n] into column block [off, off + n) of each row of x[rows, stride]. */
export function scatterCols(src: Float32Array, rows: number, n: number, x: Float32Array, stride: number, off: number): void {
  for (let r = 0; r < rows; r++) x.set(src.subarray(r * n, (r + 1) * n), r * stride + off);
}

/**
 * Absorbed attention over the paged latent cache through the FlashMLA port (varlen, causal):
 * q [T, Hd, R] = [q_lat | q_pe]; each new token at position p attends to positions 0..p of its
 * sequence; out [T, Hd, kvLora] = Σ softmax(q·row · scale) · c_kv. Sequences with the same number of
 * new tokens form one FlashMLA call (q [b, sQ, Hd, R], cache_seqlens = numCached + numNew, causal):
 * FlashMLA's causal rule lets new token i see keys ≤ numCached + i, which covers decode (sQ = 1),
 * prefill and chunked prefill (new tokens attend to the cached prefix plus themselves).
 */
export function latentAttention(
  q: Float32Array, seqs: readonly SeqSlice[], cache: LatentCache, layer: number, heads: number, scale: number,
  mla: SyncFlashMlaKernel, out?: Float32Array,
): Float32Array {
  const R = cache.rowDim;
  const dv = cache.kvLoraRank;
  const T = q.length / (heads * R);
  const o = out ?? new Float32Array(T * heads * dv);
  const starts: number[] = [];
  let t0 = 0;
  for (const s of seqs) { starts.push(t0); t0 += s.numNew; }
  const groups = new Map<number, number[]>(); // numNew -> sequence indices
  seqs.forEach((s, i) => { const g = groups.get(s.numNew); if (g) g.push(i); else groups.set(s.numNew, [i]); });
  const kCache = cache.kvLayer(layer);
  for (const [sQ, idx] of groups) {
    const b = idx.length;
    const rowLen = sQ * heads * R; // one sequence's new-token queries, contiguous in q
    // One group holding every sequence (e.g. a pure decode step): q and the output are already laid
    // out as FlashMLA's [b, sQ, Hd, ·], so no gather or scatter.
    const whole = b === seqs.length;
    const qb = whole ? q : new Float32Array(b * rowLen);
    const maxBlocks = Math.max(...idx.map((i) => blocksOf(seqs[i]!)));
    const blockTable = new Int32Array(b * maxBlocks);
    const cacheSeqlens = new Int32Array(b);
    idx.forEach((i, j) => {
      const s = seqs[i]!;
      if (!whole) qb.set(q.subarray(starts[i]! * heads * R, starts[i]! * heads * R + rowLen), j * rowLen);
      const nb = blocksOf(s);
      blockTable.set(s.blockTable.subarray(0, nb), j * maxBlocks);
      cacheSeqlens[j] = s.numCached + s.numNew;
    });
    const meta = getMlaMetadata(cacheSeqlens, sQ * heads, 1, mla.numParts(b, sQ, heads, 1));
    const r = mla.flashMlaWithKvcache({
      q: qb, batch: b, seqLenQ: sQ, numHeadsQ: heads, kCache, blockTable, cacheSeqlens, dV: dv, meta,
      softmaxScale: scale, causal: true, ...(whole ? { out: o } : {}),
    });
    if (!whole) idx.forEach((i, j) => o.set(r.out.subarray(j * sQ * heads * dv, (j + 1) * sQ * heads * dv), starts[i]! * heads * dv));
  }
  return o;
}

/** Blocks holding a sequence's positions 0 .. numCached + numNew − 1. */
function blocksOf(s: SeqSlice): number {
  return Math.ceil((s.numCached + s.numNew) / CACHE_BLOCK_SIZE);
}

/**
 * Naive attention: decompresses K_nope and V of every cached position of each sequence with
 * kv_b_proj, then attends with q = [q_nope | q_pe] per head.
 * q [T, Hd, nope + rope] (HF/reference layout), returns [T, Hd, v].
 */
export function naiveAttention(
  k: Kernels, q: Float32Array, seqs: readonly SeqSlice[], cache: LatentCache, layer: number, heads: number,
  nope: number, rope: number, vDim: number, kvB: WeightMatrix, scale: number,
): Float32Array {
  const R = cache.rowDim;
  const kvLora = cache.kvLoraRank;
  const kc = cache.layers[layer]!;
  const qk = nope + rope;
  const T = q.length / (heads * qk);
  const out = new Float32Array(T * heads * vDim);
  const kvw = nope + vDim;
  let t0 = 0;
  for (const s of seqs) {
    const total = s.numCached + s.numNew;
    // Latents and rotated k_pe of all positions of the sequence.
    const lat = new Float32Array(total * kvLora);
    const kpe = new Float32Array(total * rope);
    for (let p = 0; p < total; p++) {
      const o = cache.rowOffset(s.blockTable, p);
      lat.set(kc.subarray(o, o + kvLora), p * kvLora);
      kpe.set(kc.subarray(o + kvLora, o + R), p * rope);
    }
    const kv = k.matmul(lat, total, kvB); // [total, Hd, nope + v]
    const scores = new Float64Array(total);
    for (let i = 0; i < s.numNew; i++) {
      const t = t0 + i;
      const n = s.numCached + i + 1;
      for (let h = 0; h < heads; h++) {
        const qo = (t * heads + h) * qk;
        let mx = -Infinity;
        for (let p = 0; p < n; p++) {
          const ko = (p * heads + h) * kvw;
          let acc = 0;
          for (let d = 0; d < nope; d++) acc += q[qo + d]! * kv[ko + d]!;
          for (let d = 0; d < rope; d++) acc += q[qo + nope + d]! * kpe[p * rope + d]!;
          const sc = acc * scale;
          scores[p] = sc;
          if (sc > mx) mx = sc;
        }
        let sum = 0;
        for (let p = 0; p < n; p++) { const e = Math.exp(scores[p]! - mx); scores[p] = e; sum += e; }
        const oo = (t * heads + h) * vDim;
        for (let p = 0; p < n; p++) {
          const wgt = scores[p]! / sum;
          const vo = (p * heads + h) * kvw + nope;
          for (let d = 0; d < vDim; d++) out[oo + d] = out[oo + d]! + wgt * kv[vo + d]!;
        }
      }
    }
    t0 += s.numNew;
  }
  return out;
}

/** Fewest new tokens of a sequence for which decompressedAttention beats the absorbed form (prefill). */
export const DECOMPRESS_MIN_NEW = 64;

/**
 * Whether every sequence of the batch is a long prefill (at least DECOMPRESS_MIN_NEW new tokens, and no
 * more cached than new ones, so decompressing the cached prefix costs at most as much again): then
 * decompressedAttention does a fraction of the absorbed form's work.
 */
export function prefersDecompressed(seqs: readonly SeqSlice[]): boolean {
  return seqs.length > 0 && seqs.every((s) => s.numNew >= DECOMPRESS_MIN_NEW && s.numCached <= s.numNew);
}

/**
 * Naive (decompressed) MLA through the FlashMLA kernel, for long prefills: K_nope and V of every position
 * of each sequence from kv_b_proj (one matmul over the cached latents), laid out as a paged cache, one
 * request per head, whose row for (position, head) is [v | k_nope | k_pe] (dQK = v + nope + rope, dV = v: FlashMLA
 * takes V as the first dV values of each key row), and queries [· | q_nope | q_pe] scored from column v on
 * (qkBegin = v: the query's first v values are never used); then FlashMLA with one request per head (MHA).
 * Per token pair and head this is (nope + rope) + v multiply-adds instead of the
 * absorbed form's (kv_lora + rope) + kv_lora (DeepSeek-V3 shapes: 320 vs 1088), and the per-head
 * absorption products go away; the decompression costs one [positions, kv_lora] x [kv_lora, heads·(nope + v)]
 * GEMM. Same mathematics as naiveAttention (f32 accumulation in the kernel's order instead of float64).
 * q [T, Hd, nope + rope]; writes out [T, Hd, v]. `scratch(name, n)` gives reusable buffers (the model's
 * workspace: backend memory, so kv_b_proj and the layout copies work in place; default fresh arrays).
 */
export function decompressedAttention(
  k: Kernels, q: Float32Array, seqs: readonly SeqSlice[], cache: LatentCache, layer: number, heads: number,
  nope: number, rope: number, vDim: number, kvB: WeightMatrix, scale: number, mla: SyncFlashMlaKernel, out: Float32Array,
  scratch: (name: string, n: number) => Float32Array = (_, n) => new Float32Array(n),
): Float32Array {
  const R = cache.rowDim, kvLora = cache.kvLoraRank;
  const kc = cache.layers[layer]!;
  const qk = nope + rope, D = vDim + nope + rope, kvw = nope + vDim;
  let t0 = 0;
  for (const s of seqs) {
    const total = s.numCached + s.numNew;
    const lat = scratch('decLat', total * kvLora);
    const kpe = scratch('decKpe', total * rope);
    for (let p = 0; p < total; p++) {
      const o = cache.rowOffset(s.blockTable, p);
      lat.set(kc.subarray(o, o + kvLora), p * kvLora);
      kpe.set(kc.subarray(o + kvLora, o + R), p * rope);
    }
    const kv = k.matmul(lat, total, kvB, scratch('decKv', total * heads * kvw)); // [total, Hd, nope + v]
    // One FlashMLA "request" per head (hKv = 1): head h's rows are contiguous (blocks h·nb ..), so a
    // key block is 64 consecutive rows (a 16-head interleave put consecutive keys 20 KB apart, a
    // cache-set conflict per key). The layouts are kernel copies (copyStrided: in backend memory, on
    // its threads); the rows of the last block past `total` are left as they are (FlashMLA reads keys
    // < cache_seqlens only). Keys [h][position][D], queries [h][t][D], outputs [h][t][v].
    const nb = Math.ceil(total / CACHE_BLOCK_SIZE);
    const headRows = nb * CACHE_BLOCK_SIZE * D;
    const kd = scratch('decK', heads * headRows);
    const perHead = { offset: 0, strides: [headRows, D] } as const;
    k.copyStrided(kv, { offset: nope, strides: [kvw, heads * kvw] }, kd, perHead, [heads, total, vDim]);
    k.copyStrided(kv, { offset: 0, strides: [kvw, heads * kvw] }, kd, { ...perHead, offset: vDim }, [heads, total, nope]);
    k.copyStrided(kpe, { offset: 0, strides: [0, rope] }, kd, { ...perHead, offset: vDim + nope }, [heads, total, rope]);
    const n = s.numNew;
    // Each query row's first vDim values are left as they are (stale or 0): qkBegin = vDim keeps them out.
    const qx = scratch('decQ', heads * n * D);
    k.copyStrided(q, { offset: t0 * heads * qk, strides: [qk, heads * qk] }, qx, { offset: vDim, strides: [n * D, D] }, [heads, n, qk]);
    const kl: KvCacheLayer = { dtype: 'f32', numBlocks: heads * nb, numKvHeads: 1, headDim: D, data: kd };
    const cacheSeqlens = new Int32Array(heads).fill(total);
    const blockTable = Int32Array.from({ length: heads * nb }, (_, i) => i);
    const meta = getMlaMetadata(cacheSeqlens, n, 1, mla.numParts(heads, n, 1, 1));
    const ro = mla.flashMlaWithKvcache({
      q: qx, batch: heads, seqLenQ: n, numHeadsQ: 1, kCache: kl, blockTable, cacheSeqlens, dV: vDim, qkBegin: vDim, meta,
      softmaxScale: scale, causal: true, out: scratch('decO', heads * n * vDim),
    }).out;
    k.copyStrided(ro, { offset: 0, strides: [n * vDim, vDim] }, out, { offset: t0 * heads * vDim, strides: [vDim, heads * vDim] }, [heads, n, vDim]);
    t0 += n;
  }
  return out;
}
