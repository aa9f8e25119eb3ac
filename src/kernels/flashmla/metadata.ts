// FlashMLA's split-KV tile scheduler, ported as-is (integer only), and the expansion of its parts into
// (request, block-range) work items that every backend's main kernel walks.
// Reference: https://github.com/deepseek-ai/FlashMLA/blob/main/csrc/kernels/get_mla_metadata.cu
// (`get_mla_metadata_kernel`) and csrc/kernels/splitkv_mla.cu (`flash_fwd_splitkv_mla_kernel` loop).
import {
  FIXED_OVERHEAD_NUM_BLOCKS, FlashMlaError, MLA_BLOCK_SIZE, TILE_SCHEDULER_METADATA_SIZE, type MlaMetadata,
} from './types.ts';

const ceilDiv = (a: number, b: number): number => Math.floor((a + b - 1) / b);

/**
 * FlashMLA's `num_sm_parts = max(numSms / hKv / ceil(sQ·hQ/hKv / 64), 1)`: how many scheduler parts a
 * device with `numSms` independent workers gets (132 SMs, hQ 128, sQ 1 → 66 on an H800).
 */
export function numSmParts(numSms: number, numHeadsPerKvGroupTimesSq: number, numKvHeads: number): number {
  return Math.max(Math.floor(Math.floor(numSms / numKvHeads) / ceilDiv(numHeadsPerKvGroupTimesSq, 64)), 1);
}

/**
 * Splits the batch's KV blocks over `numParts` parts. Each request costs ceil(len/64) blocks plus a
 * fixed overhead of 5; a part gets payload = ceil(total/numParts) + 5 and walks the requests greedily:
 * it finishes a request if the rest fits (rest + 5 ≤ remaining), otherwise takes `remaining − 5` more
 * blocks of it (a new split) and stops. The two head arguments are those of FlashMLA's
 * `get_mla_metadata` (they only choose the part count there); they are validated, not used.
 */
export function getMlaMetadata(
  cacheSeqlens: Int32Array, numHeadsPerKvGroupTimesSq: number, numKvHeads: number, numParts: number,
): MlaMetadata {
  if (!Number.isInteger(numParts) || numParts < 1) throw new FlashMlaError('bad-metadata', `numParts must be a positive integer, got ${numParts}`);
  if (!Number.isInteger(numKvHeads) || numKvHeads < 1) throw new FlashMlaError('bad-head-grouping', `numKvHeads must be a positive integer, got ${numKvHeads}`);
  if (!Number.isInteger(numHeadsPerKvGroupTimesSq) || numHeadsPerKvGroupTimesSq < 1) {
    throw new FlashMlaError('bad-head-grouping', `sQ·hQ/hKv must be a positive integer, got ${numHeadsPerKvGroupTimesSq}`);
  }
  const b = cacheSeqlens.length;
  const numBlocks = new Int32Array(b);
  let total = 0;
  for (let i = 0; i < b; i++) {
    const len = cacheSeqlens[i]!;
    if (len < 0) throw new FlashMlaError('bad-seqlen', `cacheSeqlens[${i}] = ${len} is negative`);
    numBlocks[i] = ceilDiv(len, MLA_BLOCK_SIZE);
    total += numBlocks[i]! + FIXED_OVERHEAD_NUM_BLOCKS;
  }
  const sched = new Int32Array(numParts * TILE_SCHEDULER_METADATA_SIZE);
  const numSplits = new Int32Array(b + 1);
  const payload = ceilDiv(total, numParts) + FIXED_OVERHEAD_NUM_BLOCKS;
  let nowIdx = 0;
  let nowBlock = 0;
  let nowSplit = 0;
  let cum = 0;
  for (let p = 0; p < numParts; p++) {
    const o = p * TILE_SCHEDULER_METADATA_SIZE;
    sched[o] = nowIdx;
    sched[o + 1] = nowBlock * MLA_BLOCK_SIZE;
    sched[o + 4] = nowSplit;
    let remain = payload;
    while (nowIdx < b) {
      const rest = numBlocks[nowIdx]! - nowBlock;
      if (remain >= rest + FIXED_OVERHEAD_NUM_BLOCKS) {
        cum += nowSplit + 1;
        numSplits[nowIdx + 1] = cum;
        remain -= rest + FIXED_OVERHEAD_NUM_BLOCKS;
        nowIdx++;
        nowBlock = 0;
        nowSplit = 0;
      } else {
        if (remain - FIXED_OVERHEAD_NUM_BLOCKS > 0) {
          nowBlock += remain - FIXED_OVERHEAD_NUM_BLOCKS;
          nowSplit++;
          remain = 0;
        }
        break;
      }
    }
    sched[o + 2] = nowBlock > 0 ? nowIdx : nowIdx - 1;
    // A part that ends on a request boundary ends at that request's full length. (With b = 0 the
    // only part is empty: beginIdx 0 ≥ b, and every consumer skips it before reading this field.)
    sched[o + 3] = nowBlock > 0 ? nowBlock * MLA_BLOCK_SIZE : nowIdx > 0 ? cacheSeqlens[nowIdx - 1]! : 0;
  }
  if (nowIdx !== b || nowBlock !== 0 || nowSplit !== 0) {
    // Cannot happen: payload·numParts ≥ total, and each part consumes its payload fully or finishes the batch.
    throw new FlashMlaError('bad-metadata', 'scheduler did not cover the batch');
  }
  return { tileSchedulerMetadata: sched, numSplits };
}

/** One unit of main-kernel work: blocks [blockBegin, blockEnd) of request `batchIdx`. */
export interface MlaWorkItem {
  readonly part: number;
  readonly batchIdx: number;
  /** Index of this partial among the request's splits (its slot is numSplits[batchIdx] + splitIdx). */
  readonly splitIdx: number;
  readonly blockBegin: number;
  readonly blockEnd: number;
  /** The request is handled by this item alone: the result goes straight to out/lse, no combine. */
  readonly noSplit: boolean;
}

/** Number of scheduler parts in a metadata object. */
export function metadataParts(meta: MlaMetadata): number {
  return meta.tileSchedulerMetadata.length / TILE_SCHEDULER_METADATA_SIZE;
}

/**
 * The work items of one part, as FlashMLA's main kernel iterates them: requests beginIdx..endIdx,
 * the first starting at block beginSeqlen/64, the last ending at block ceil(endSeqlen/64).
 */
export function partWorkItems(meta: MlaMetadata, cacheSeqlens: Int32Array, part: number): MlaWorkItem[] {
  const s = meta.tileSchedulerMetadata;
  const o = part * TILE_SCHEDULER_METADATA_SIZE;
  const b = cacheSeqlens.length;
  const beginIdx = s[o]!;
  const beginSeqlen = s[o + 1]!;
  const endIdx = s[o + 2]!;
  const endSeqlen = s[o + 3]!;
  const beginSplit = s[o + 4]!;
  const items: MlaWorkItem[] = [];
  if (beginIdx >= b) return items;
  for (let i = beginIdx; i <= endIdx; i++) {
    const nb = ceilDiv(cacheSeqlens[i]!, MLA_BLOCK_SIZE);
    const blockBegin = i === beginIdx ? Math.floor(beginSeqlen / MLA_BLOCK_SIZE) : 0;
    const blockEnd = i === endIdx ? ceilDiv(endSeqlen, MLA_BLOCK_SIZE) : nb;
    items.push({
      part, batchIdx: i, splitIdx: i === beginIdx ? beginSplit : 0, blockBegin, blockEnd,
      noSplit: blockBegin === 0 && blockEnd === nb,
    });
  }
  return items;
}

/** All work items, part by part. */
export function allWorkItems(meta: MlaMetadata, cacheSeqlens: Int32Array): MlaWorkItem[] {
  const out: MlaWorkItem[] = [];
  for (let p = 0; p < metadataParts(meta); p++) out.push(...partWorkItems(meta, cacheSeqlens, p));
  return out;
}

/**
 * Checks that `meta` fits these seqlens: sizes, and that the items cover every block of every request
 * exactly once with split indices 0..n−1 matching numSplits. Kernels call it before touching memory, so
 * a stale schedule (seqlens changed since getMlaMetadata) is an error, not a wrong answer.
 */
export function validateMetadata(meta: MlaMetadata, cacheSeqlens: Int32Array): MlaWorkItem[] {
  const b = cacheSeqlens.length;
  const { tileSchedulerMetadata: s, numSplits } = meta;
  if (s.length === 0 || s.length % TILE_SCHEDULER_METADATA_SIZE !== 0) {
    throw new FlashMlaError('bad-metadata', `tileSchedulerMetadata length ${s.length} is not a positive multiple of 8`);
  }
  if (numSplits.length !== b + 1 || numSplits[0] !== 0) throw new FlashMlaError('bad-metadata', `numSplits must be [b+1] = ${b + 1} starting at 0`);
  const items = allWorkItems(meta, cacheSeqlens);
  const next = new Int32Array(b); // next expected block per request
  const splitsSeen = new Int32Array(b);
  for (const it of items) {
    const i = it.batchIdx;
    if (i < 0 || i >= b) throw new FlashMlaError('bad-metadata', `work item names request ${i} outside [0, ${b})`);
    if (it.blockBegin !== next[i] || it.blockEnd < it.blockBegin || it.splitIdx !== splitsSeen[i]) {
      throw new FlashMlaError('bad-metadata', `schedule does not match cacheSeqlens at request ${i} (stale metadata?)`);
    }
    next[i] = it.blockEnd;
    splitsSeen[i]++;
  }
  for (let i = 0; i < b; i++) {
    const nb = ceilDiv(cacheSeqlens[i]!, MLA_BLOCK_SIZE);
    if (next[i] !== nb || splitsSeen[i] !== numSplits[i + 1]! - numSplits[i]!) {
      throw new FlashMlaError('bad-metadata', `schedule does not match cacheSeqlens at request ${i} (stale metadata?)`);
    }
  }
  return items;
}
