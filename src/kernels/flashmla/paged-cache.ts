// Paged latent KV cache: per layer one FlashMLA `k_cache[numBlocks, 64, hKv, dQK]` (f32, bf16 or the
// V3.2 FP8 layout), a block pool shared by all layers, and per-sequence block tables and lengths.
// Reference: https://github.com/deepseek-ai/FlashMLA (README "usage": block_table / cache_seqlens;
// tests/test_flash_mla.py builds the same [num_blocks, 64, h_kv, d] cache).
import { allocCacheLayer, poisonRow, readRow, writeRow } from './kv-format.ts';
import { FlashMlaError, MLA_BLOCK_SIZE, type KvCacheDType, type KvCacheLayer } from './types.ts';

export interface PagedLatentCacheOptions {
  numLayers: number;
  /** Blocks of 64 tokens in the pool (per layer). */
  numBlocks: number;
  /** Default 1 (absorbed MLA). */
  numKvHeads?: number;
  /** Values per token row: kv_lora_rank + qk_rope_head_dim (576 for V3). */
  headDim: number;
  /** qk_rope_head_dim, the trailing part the FP8 layout keeps in bf16. Default 64. */
  ropeDim?: number;
  /** Storage format. Default 'f32' (exact). 'bf16' halves memory, 'fp8' roughly quarters it (656 B/token for V3). */
  dtype?: KvCacheDType;
  /** Fill every slot with NaN at creation, so reads of unwritten slots show up (tests, debugging). */
  poison?: boolean;
}

/** No free block left for a sequence that must grow. */
export class KvCacheFullError extends Error {
  override name = 'KvCacheFullError';
  constructor(readonly needed: number, readonly free: number) {
    super(`paged KV cache is full: need ${needed} more block(s), ${free} free`);
  }
}

/** A sequence id the cache does not hold, or a write outside a sequence's reserved capacity. */
export class KvCacheSequenceError extends Error {
  override name = 'KvCacheSequenceError';
  constructor(readonly seq: number, message: string) {
    super(`sequence ${seq}: ${message}`);
  }
}

interface Sequence {
  blocks: number[];
  length: number;
}

export class PagedLatentCache {
  readonly numLayers: number;
  readonly numBlocks: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly ropeDim: number;
  readonly dtype: KvCacheDType;
  /** One FlashMLA k_cache per layer. */
  readonly layers: readonly KvCacheLayer[];
  private readonly freeList: number[];
  private readonly seqs = new Map<number, Sequence>();

  constructor(o: PagedLatentCacheOptions) {
    this.numLayers = o.numLayers;
    this.numBlocks = o.numBlocks;
    this.numKvHeads = o.numKvHeads ?? 1;
    this.headDim = o.headDim;
    this.ropeDim = o.ropeDim ?? 64;
    this.dtype = o.dtype ?? 'f32';
    if (!Number.isInteger(o.numLayers) || o.numLayers < 1) throw new FlashMlaError('bad-cache', `numLayers ${o.numLayers} must be ≥ 1`);
    this.layers = Array.from({ length: o.numLayers }, () => allocCacheLayer(this.dtype, o.numBlocks, this.numKvHeads, o.headDim, this.ropeDim));
    if (o.poison) {
      for (const l of this.layers) {
        for (let blk = 0; blk < o.numBlocks; blk++) {
          for (let s = 0; s < MLA_BLOCK_SIZE; s++) for (let h = 0; h < this.numKvHeads; h++) poisonRow(l, blk, s, h);
        }
      }
    }
    // Pop from the end: blocks are handed out 0, 1, 2, ... on a fresh cache.
    this.freeList = Array.from({ length: o.numBlocks }, (_, i) => o.numBlocks - 1 - i);
  }

  get freeBlocks(): number {
    return this.freeList.length;
  }

  /** Bytes of cache storage per token (all layers and kv heads). */
  get bytesPerToken(): number {
    const l = this.layers[0]!;
    return (l.data.byteLength / (this.numBlocks * MLA_BLOCK_SIZE || 1)) * this.numLayers;
  }

  addSequence(id: number): void {
    if (this.seqs.has(id)) throw new KvCacheSequenceError(id, 'already exists');
    this.seqs.set(id, { blocks: [], length: 0 });
  }

  hasSequence(id: number): boolean {
    return this.seqs.has(id);
  }

  private seq(id: number): Sequence {
    const s = this.seqs.get(id);
    if (!s) throw new KvCacheSequenceError(id, 'not in the cache');
    return s;
  }

  /** Tokens stored for the sequence (its cache_seqlens entry). */
  length(id: number): number {
    return this.seq(id).length;
  }

  /** The sequence's block ids, in order. */
  blocks(id: number): readonly number[] {
    return this.seq(id).blocks;
  }

  /** Ensures capacity for `tokens` tokens, taking blocks from the pool (all or nothing). */
  reserve(id: number, tokens: number): void {
    const s = this.seq(id);
    const need = Math.ceil(tokens / MLA_BLOCK_SIZE) - s.blocks.length;
    if (need <= 0) return;
    if (need > this.freeList.length) throw new KvCacheFullError(need, this.freeList.length);
    for (let i = 0; i < need; i++) s.blocks.push(this.freeList.pop()!);
  }

  /**
   * Writes `count` token rows `rows[count, hKv, headDim]` of `layer` at positions pos .. pos+count−1
   * (converted to the storage format), reserving blocks as needed. Does not change the length.
   */
  write(layer: number, id: number, pos: number, rows: Float32Array, count: number): void {
    const s = this.seq(id);
    const { numKvHeads: hKv, headDim: d } = this;
    if (rows.length < count * hKv * d) throw new FlashMlaError('bad-buffer', `rows has ${rows.length} values, ${count} tokens need ${count * hKv * d}`);
    this.reserve(id, pos + count);
    const l = this.layers[layer];
    if (!l) throw new FlashMlaError('bad-cache', `layer ${layer} outside [0, ${this.numLayers})`);
    for (let t = 0; t < count; t++) {
      const p = pos + t;
      const blk = s.blocks[Math.floor(p / MLA_BLOCK_SIZE)]!;
      for (let h = 0; h < hKv; h++) writeRow(l, blk, p % MLA_BLOCK_SIZE, h, rows, (t * hKv + h) * d);
    }
  }

  /** Sets the number of valid tokens (after all layers of a step are written). */
  setLength(id: number, tokens: number): void {
    const s = this.seq(id);
    if (tokens < 0 || Math.ceil(tokens / MLA_BLOCK_SIZE) > s.blocks.length) {
      throw new KvCacheSequenceError(id, `length ${tokens} exceeds its ${s.blocks.length} reserved block(s)`);
    }
    s.length = tokens;
  }

  /** Reads back (dequantizes) token `pos` of kv head `head` in `layer`. */
  readToken(layer: number, id: number, pos: number, head = 0, dst = new Float32Array(this.headDim)): Float32Array {
    const s = this.seq(id);
    if (pos < 0 || pos >= s.blocks.length * MLA_BLOCK_SIZE) throw new KvCacheSequenceError(id, `position ${pos} is not reserved`);
    readRow(this.layers[layer]!, s.blocks[Math.floor(pos / MLA_BLOCK_SIZE)]!, pos % MLA_BLOCK_SIZE, head, dst);
    return dst;
  }

  /** Frees the sequence's blocks. */
  release(id: number): void {
    const s = this.seq(id);
    for (let i = s.blocks.length - 1; i >= 0; i--) this.freeList.push(s.blocks[i]!);
    this.seqs.delete(id);
  }

  /**
   * FlashMLA inputs for a batch of sequences: blockTable [b, maxBlocks] (unused entries = `pad`) and
   * cacheSeqlens [b] (current lengths, or `lengths` when given, e.g. lengths after a pending append).
   */
  batchTables(ids: readonly number[], lengths?: readonly number[], pad = 0): { blockTable: Int32Array; cacheSeqlens: Int32Array; maxBlocks: number } {
    const seqs = ids.map((id) => this.seq(id));
    const maxBlocks = Math.max(1, ...seqs.map((s) => s.blocks.length));
    const blockTable = new Int32Array(ids.length * maxBlocks).fill(pad);
    const cacheSeqlens = new Int32Array(ids.length);
    seqs.forEach((s, i) => {
      blockTable.set(s.blocks, i * maxBlocks);
      cacheSeqlens[i] = lengths ? lengths[i]! : s.length;
    });
    return { blockTable, cacheSeqlens, maxBlocks };
  }
}
