// Shared contract of the FlashMLA port: paged latent KV cache layout, split-KV scheduler metadata,
// kernel arguments and results. Every backend (ref, wasm, webgpu) implements `FlashMlaKernel`.
// Reference: https://github.com/deepseek-ai/FlashMLA (flash_mla/flash_mla_interface.py,
// csrc/flash_api.cpp, csrc/kernels/get_mla_metadata.cu, csrc/kernels/mla_combine.cu).
//
// Shape conventions (row-major, as FlashMLA's tensors):
//   q            [b, sQ, hQ, dQK]      f32
//   k cache      [numBlocks, 64, hKv, dQK]  (f32 / bf16 bits), or [numBlocks, 64, hKv, 656 B] FP8
//   block table  [b, maxBlocksPerSeq]  int32 block ids; entries past ceil(seqlen/64) are never read
//   out          [b, sQ, hQ, dV]       f32; V is the first dV values of each K row
//   scores       q[..., qkBegin:] · K[..., qkBegin:] (qkBegin 0 unless given: FlashMLA's full row)
//   lse          [b, hQ, sQ]           f32, natural log of Σ exp(scale·q·k); +inf for a query with no keys
// Head folding: with g = hQ/hKv, kv head h serves q heads h·g .. h·g+g−1 and its rows are
// r = sIdx·g + j (j = q head within the group); causal: row r sees col ≤ sK−1−(sQ−1−⌊r/g⌋).

/** Tokens per cache block (FlashMLA's page_block_size; the only size the kernel accepts). */
export const MLA_BLOCK_SIZE = 64;
/** int32 words per scheduler part: [beginIdx, beginSeqlen, endIdx, endSeqlen, beginSplit, 0, 0, 0]. */
export const TILE_SCHEDULER_METADATA_SIZE = 8;
/** Scheduler cost of starting a request, in blocks (`fixed_overhead_num_blocks`). */
export const FIXED_OVERHEAD_NUM_BLOCKS = 5;
/** The id FlashMLA's tests put in unused block-table entries; a kernel must never dereference it. */
export const INVALID_BLOCK_ID = 2147480000;

/** DeepSeek-V3 absorbed-MLA dimensions: kv_lora_rank + qk_rope_head_dim, and kv_lora_rank. */
export const V3_D_QK = 576;
export const V3_D_V = 512;
export const V3_ROPE_DIM = 64;

/** FP8 (DeepSeek-V3.2) token layout: e4m3 no-RoPE part, f32 scales per 128 values, bf16 RoPE part. */
export const FP8_TILE = 128;
/** Bytes one token of one kv head takes in the FP8 layout: nope + 4·nope/128 + 2·rope (656 for V3). */
export function fp8BytesPerToken(headDim: number, ropeDim: number): number {
  const nope = headDim - ropeDim;
  return nope + 4 * (nope / FP8_TILE) + 2 * ropeDim;
}

export type KvCacheDType = 'f32' | 'bf16' | 'fp8';

interface KvCacheShape {
  /** Number of 64-token blocks. */
  readonly numBlocks: number;
  /** KV heads (1 for DeepSeek's absorbed MLA). */
  readonly numKvHeads: number;
  /** Values per token row (dQK: 576 for V3). */
  readonly headDim: number;
}

/**
 * One layer's paged K cache, exactly FlashMLA's `k_cache[numBlocks, 64, hKv, headDim]`:
 * - `f32`: data[numBlocks·64·hKv·headDim] values (exact mode).
 * - `bf16`: the same element order, bf16 bits.
 * - `fp8`: bytes [numBlocks, 64, hKv, fp8BytesPerToken]; per token: (headDim−ropeDim) e4m3 codes, then
 *   (headDim−ropeDim)/128 little-endian f32 scales (powers of two), then ropeDim bf16 values.
 *   Dequantized value = e4m3(code)·scale of its 128-value tile.
 */
export type KvCacheLayer =
  | (KvCacheShape & { readonly dtype: 'f32'; readonly data: Float32Array })
  | (KvCacheShape & { readonly dtype: 'bf16'; readonly data: Uint16Array })
  | (KvCacheShape & { readonly dtype: 'fp8'; readonly data: Uint8Array; readonly ropeDim: number });

/** Split-KV schedule from `getMlaMetadata`. */
export interface MlaMetadata {
  /** [numParts, 8]: [beginIdx, beginSeqlen, endIdx, endSeqlen, beginSplitIdx, 0, 0, 0] per part. */
  readonly tileSchedulerMetadata: Int32Array;
  /** [b + 1] prefix sums of splits per request: request i owns partials numSplits[i] .. numSplits[i+1]−1. */
  readonly numSplits: Int32Array;
}

export interface FlashMlaArgs {
  /** [b, sQ, hQ, dQK] f32. */
  readonly q: Float32Array;
  readonly batch: number;
  readonly seqLenQ: number;
  readonly numHeadsQ: number;
  readonly kCache: KvCacheLayer;
  /** [b, maxBlocksPerSeq] int32. */
  readonly blockTable: Int32Array;
  /** [b] int32 keys per request (≥ 0). */
  readonly cacheSeqlens: Int32Array;
  /** Value width: V = K[..., :dV]. */
  readonly dV: number;
  /**
   * First column of the QK dot product (default 0): scores are q[..., qkBegin:] · K[..., qkBegin:], and
   * q's first qkBegin values take no part (NaN there is harmless). An extension of this port: it lets
   * rows [v | k] serve multi-head attention whose V is not part of its keys (the decompressed MLA
   * prefill) without a zero-padded query part and its multiply-adds.
   */
  readonly qkBegin?: number;
  /** From getMlaMetadata(cacheSeqlens, sQ·hQ/hKv, hKv, numParts) for these seqlens. */
  readonly meta: MlaMetadata;
  /** Always passed explicitly (DeepSeek-V3: 192^-0.5·mscale², not dQK^-0.5). */
  readonly softmaxScale: number;
  /** Causal mask with FlashMLA's folded-head rule; ignored when sQ = 1. */
  readonly causal: boolean;
  /** Optional destinations: [b, sQ, hQ, dV] and [b, hQ, sQ]. */
  readonly out?: Float32Array;
  readonly lse?: Float32Array;
}

export interface FlashMlaResult {
  /** [b, sQ, hQ, dV] f32. */
  readonly out: Float32Array;
  /** [b, hQ, sQ] f32, natural log. */
  readonly lse: Float32Array;
}

/** A FlashMLA backend. CPU backends answer synchronously (see SyncFlashMlaKernel). */
export interface FlashMlaKernel {
  readonly backend: string;
  readonly threads: number;
  /** Scheduler parts this backend wants (FlashMLA: num_sm_parts); pass to getMlaMetadata. */
  numParts(batch: number, seqLenQ: number, numHeadsQ: number, numKvHeads: number): number;
  flashMlaWithKvcache(args: FlashMlaArgs): FlashMlaResult | Promise<FlashMlaResult>;
  /**
   * A zeroed cache layer in memory this backend reads without staging (wasm: its linear memory).
   * Caches made elsewhere (allocCacheLayer) work too, at the cost of a copy of the used blocks per call.
   */
  allocCache?(dtype: KvCacheDType, numBlocks: number, numKvHeads: number, headDim: number, ropeDim?: number): KvCacheLayer;
  dispose(): Promise<void>;
}

export interface SyncFlashMlaKernel extends FlashMlaKernel {
  flashMlaWithKvcache(args: FlashMlaArgs): FlashMlaResult;
}

export type FlashMlaRule =
  | 'bad-shape' | 'bad-head-grouping' | 'bad-seqlen' | 'bad-block-table' | 'bad-block-id'
  | 'bad-metadata' | 'bad-cache' | 'bad-scale' | 'bad-buffer';

/** Invalid arguments to a FlashMLA function; `rule` says which check failed. */
export class FlashMlaError extends Error {
  override name = 'FlashMlaError';
  constructor(readonly rule: FlashMlaRule, message: string) {
    super(`flashmla: ${message} (${rule})`);
  }
}
