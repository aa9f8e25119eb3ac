// Argument checks shared by every FlashMLA backend, so bad input fails the same way everywhere and no
// kernel ever dereferences a block id it was not meant to read.
// Reference: https://github.com/deepseek-ai/FlashMLA/blob/main/csrc/flash_api.cpp (mha_fwd_kvcache_mla checks).
import { validateMetadata, type MlaWorkItem } from './metadata.ts';
import { validateCacheLayer } from './kv-format.ts';
import { FlashMlaError, MLA_BLOCK_SIZE, type FlashMlaArgs } from './types.ts';

export interface FlashMlaPlan {
  readonly b: number;
  readonly sQ: number;
  readonly hQ: number;
  readonly hKv: number;
  /** q heads per kv head. */
  readonly g: number;
  /** Folded rows per (request, kv head): sQ·g. */
  readonly rows: number;
  readonly dQK: number;
  readonly dV: number;
  /** First column of the QK dot product (FlashMlaArgs.qkBegin, default 0). */
  readonly qkBegin: number;
  readonly maxBlocks: number;
  /** Elements (bytes for fp8) per token per kv head in the cache. */
  readonly rowStride: number;
  /** Causal masking really applies (causal and sQ > 1). */
  readonly causal: boolean;
  readonly items: MlaWorkItem[];
  /** Total partial slots: numSplits[b]. */
  readonly numSlots: number;
}

const isInt = (v: number, min: number): boolean => Number.isInteger(v) && v >= min;

/** Validates `args` completely; returns the derived sizes and the work items of the schedule. */
export function planFlashMla(a: FlashMlaArgs): FlashMlaPlan {
  const { batch: b, seqLenQ: sQ, numHeadsQ: hQ, kCache, dV } = a;
  if (!isInt(b, 0) || !isInt(sQ, 1) || !isInt(hQ, 1)) throw new FlashMlaError('bad-shape', `batch ${b}, seqLenQ ${sQ}, numHeadsQ ${hQ} must be integers (b ≥ 0, others ≥ 1)`);
  const rowStride = validateCacheLayer(kCache);
  const hKv = kCache.numKvHeads;
  const dQK = kCache.headDim;
  if (hQ % hKv !== 0) throw new FlashMlaError('bad-head-grouping', `numHeadsQ ${hQ} is not a multiple of numKvHeads ${hKv}`);
  if (!isInt(dV, 1) || dV > dQK) throw new FlashMlaError('bad-shape', `dV ${dV} must be in [1, ${dQK}]`);
  const qkBegin = a.qkBegin ?? 0;
  if (!isInt(qkBegin, 0) || qkBegin >= dQK) throw new FlashMlaError('bad-shape', `qkBegin ${qkBegin} must be an integer in [0, ${dQK})`);
  if (a.q.length !== b * sQ * hQ * dQK) throw new FlashMlaError('bad-shape', `q has ${a.q.length} values, [${b}, ${sQ}, ${hQ}, ${dQK}] needs ${b * sQ * hQ * dQK}`);
  if (a.cacheSeqlens.length !== b) throw new FlashMlaError('bad-seqlen', `cacheSeqlens has ${a.cacheSeqlens.length} entries, batch is ${b}`);
  if (!Number.isFinite(a.softmaxScale)) throw new FlashMlaError('bad-scale', `softmaxScale ${a.softmaxScale} is not finite`);
  const maxBlocks = b === 0 ? 0 : a.blockTable.length / b;
  if (b > 0 && !Number.isInteger(maxBlocks)) throw new FlashMlaError('bad-block-table', `blockTable length ${a.blockTable.length} is not a multiple of batch ${b}`);
  for (let i = 0; i < b; i++) {
    const len = a.cacheSeqlens[i]!;
    if (len < 0) throw new FlashMlaError('bad-seqlen', `cacheSeqlens[${i}] = ${len} is negative`);
    const nb = Math.ceil(len / MLA_BLOCK_SIZE);
    if (nb > maxBlocks) throw new FlashMlaError('bad-block-table', `request ${i} needs ${nb} blocks, blockTable has ${maxBlocks} per request`);
    for (let j = 0; j < nb; j++) {
      const id = a.blockTable[i * maxBlocks + j]!;
      if (id < 0 || id >= kCache.numBlocks) throw new FlashMlaError('bad-block-id', `blockTable[${i}, ${j}] = ${id} is outside [0, ${kCache.numBlocks})`);
    }
  }
  if (a.out && a.out.length !== b * sQ * hQ * dV) throw new FlashMlaError('bad-buffer', `out has ${a.out.length} values, needs ${b * sQ * hQ * dV}`);
  if (a.lse && a.lse.length !== b * hQ * sQ) throw new FlashMlaError('bad-buffer', `lse has ${a.lse.length} values, needs ${b * hQ * sQ}`);
  const items = validateMetadata(a.meta, a.cacheSeqlens);
  const g = hQ / hKv;
  return {
    b, sQ, hQ, hKv, g, rows: sQ * g, dQK, dV, qkBegin, maxBlocks, rowStride, causal: a.causal && sQ > 1, items,
    numSlots: a.meta.numSplits[b]!,
  };
}

/**
 * Exclusive upper bound on the key index row `r` (folded) may attend to: FlashMLA's
 * col ≤ sK−1−(sQ−1−⌊r/g⌋), i.e. sK − sQ + 1 + ⌊r/g⌋; sK when not causal. May be ≤ 0 (no keys).
 */
export function keyLimit(plan: FlashMlaPlan, seqlen: number, r: number): number {
  return plan.causal ? Math.min(seqlen, seqlen - plan.sQ + 1 + Math.floor(r / plan.g)) : seqlen;
}
