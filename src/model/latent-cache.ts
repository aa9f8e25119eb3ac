// The paged latent KV cache of MLA, in FlashMLA's k_cache layout so the engine, the model and the
// FlashMLA port share one memory layout:
//   per layer: k[numBlocks, blockSize = 64, 1 (kv head), rowDim = kv_lora_rank + qk_rope_head_dim]
//   row = [ c_kv (after kv_a_layernorm) | k_pe (after RoPE, interleaved pairs) ]
// A sequence owns a block table (Int32Array of block ids): position p lives in block
// blockTable[p / 64], row p % 64. Reference: deepseek-ai/FlashMLA `flash_mla_with_kvcache`
// (k_cache [num_blocks, page_block_size = 64, h_k = 1, d = 576], head_dim_v = 512).
// The layer arrays ARE the FlashMLA port's cache layers (src/kernels/flashmla/types.ts KvCacheLayer,
// f32 storage): `kvLayer(l)` hands them to flashMlaWithKvcache without a copy.
import { MLA_BLOCK_SIZE, type KvCacheLayer } from '../kernels/flashmla/types.ts';

export const CACHE_BLOCK_SIZE = MLA_BLOCK_SIZE;

export class CacheError extends Error {
  override name = 'CacheError';
  constructor(message: string) {
    super(message);
  }
}

export class LatentCache {
  readonly blockSize = CACHE_BLOCK_SIZE;
  /** kv_lora_rank + qk_rope_head_dim. */
  readonly rowDim: number;
  /** One Float32Array [numBlocks, 64, 1, rowDim] per decoder layer. */
  readonly layers: Float32Array[];

  constructor(
    readonly numLayers: number,
    readonly numBlocks: number,
    readonly kvLoraRank: number,
    readonly ropeDim: number,
    /** Allocates one zeroed layer of numBlocks·64·rowDim floats (default: a JS Float32Array). */
    alloc?: () => Float32Array,
  ) {
    if (!Number.isSafeInteger(numBlocks) || numBlocks < 1) throw new CacheError(`numBlocks must be a positive integer, got ${numBlocks}`);
    this.rowDim = kvLoraRank + ropeDim;
    const n = numBlocks * CACHE_BLOCK_SIZE * this.rowDim;
    this.layers = Array.from({ length: numLayers }, () => {
      const a = alloc ? alloc() : new Float32Array(n);
      if (a.length !== n) throw new CacheError(`cache layer allocator returned ${a.length} floats, expected ${n}`);
      return a;
    });
  }

  /** Layer `l` as a FlashMLA k_cache [numBlocks, 64, 1, rowDim] (f32, shares the array). */
  kvLayer(l: number): KvCacheLayer {
    const data = this.layers[l];
    if (!data) throw new CacheError(`layer ${l} outside [0, ${this.numLayers})`);
    return { dtype: 'f32', numBlocks: this.numBlocks, numKvHeads: 1, headDim: this.rowDim, data };
  }

  /** Bytes held by the cache. */
  get byteLength(): number {
    return this.layers.reduce((a, l) => a + l.byteLength, 0);
  }

  /** Element offset of position `pos` of a sequence in a layer array; checks the block table. */
  rowOffset(blockTable: Int32Array, pos: number): number {
    const bi = Math.floor(pos / CACHE_BLOCK_SIZE);
    if (bi >= blockTable.length) throw new CacheError(`position ${pos} needs block ${bi} but the block table has ${blockTable.length} entries`);
    const block = blockTable[bi]!;
    if (block < 0 || block >= this.numBlocks) throw new CacheError(`block id ${block} out of range [0, ${this.numBlocks})`);
    return (block * CACHE_BLOCK_SIZE + (pos % CACHE_BLOCK_SIZE)) * this.rowDim;
  }

  /** Blocks needed for `tokens` positions. */
  static blocksFor(tokens: number): number {
    return Math.ceil(tokens / CACHE_BLOCK_SIZE);
  }
}
