// Paged KV block manager with prefix caching, after vLLM's v1 KVCacheManager
// (vllm/v1/core/block_pool.py, kv_cache_utils.py): block ids 0..N-1, reference counts, a free queue
// that doubles as the LRU eviction order, and a map from the hash of each full, computed block
// (chained with its parent's hash, so equal hashes mean equal prefixes) to the block holding it.
//
// A free block keeps its cached contents until it is handed out again; a prefix hit on such a
// block takes it back out of the free queue. Free order: blocks enter the tail of the queue, a
// sequence's blocks in reverse (tail blocks are the least likely to be shared, so go first).
import { createHash } from 'node:crypto';
import { BLOCK_SIZE } from './contracts.ts';

export class OutOfBlocksError extends Error {
  override name = 'OutOfBlocksError';
  constructor(readonly requested: number, readonly free: number) {
    super(`requested ${requested} KV blocks, ${free} free`);
  }
}

/** Hash of one full block: sha256(parent hash | token ids), hex. The root parent is ''. */
export function hashBlock(parent: string, tokens: ArrayLike<number>): string {
  const h = createHash('sha256');
  h.update(parent);
  h.update('|');
  h.update(Int32Array.from(tokens as ArrayLike<number>));
  return h.digest('hex').slice(0, 32);
}

/** Hashes of the full blocks of `tokens` (block i covers tokens i*B .. i*B+B-1), chained. */
export function blockHashes(tokens: ArrayLike<number>, blockSize = BLOCK_SIZE, from: string[] = []): string[] {
  const out = from.slice();
  const full = Math.floor(tokens.length / blockSize);
  for (let i = out.length; i < full; i++) {
    const parent = i === 0 ? '' : out[i - 1]!;
    out.push(hashBlock(parent, Array.prototype.slice.call(tokens, i * blockSize, (i + 1) * blockSize) as number[]));
  }
  return out;
}

const NIL = -1;

export class BlockManager {
  readonly refCount: Int32Array;
  /** Hash registered for each block (null when the block holds no cached full block). */
  readonly blockHash: (string | null)[];
  private readonly cache = new Map<string, number>();
  // Free queue as a doubly linked list over block ids, head = next to evict/hand out.
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private head = NIL;
  private tail = NIL;
  private free = 0;
  /** Prefix-cache counters: blocks looked up and blocks found (for metrics). */
  queries = 0;
  hits = 0;

  constructor(readonly numBlocks: number, readonly blockSize = BLOCK_SIZE, readonly prefixCaching = true) {
    if (!Number.isInteger(numBlocks) || numBlocks < 1) throw new RangeError(`numBlocks must be a positive integer, got ${numBlocks}`);
    this.refCount = new Int32Array(numBlocks);
    this.blockHash = new Array(numBlocks).fill(null);
    this.prev = new Int32Array(numBlocks).fill(NIL);
    this.next = new Int32Array(numBlocks).fill(NIL);
    for (let b = 0; b < numBlocks; b++) this.pushTail(b);
  }

  get numFree(): number {
    return this.free;
  }

  /** Fraction of blocks referenced by some sequence (free cached blocks count as free), 0..1. */
  usage(): number {
    return (this.numBlocks - this.free) / this.numBlocks;
  }

  /** Free block ids in eviction order (head first); for tests and debugging. */
  freeOrder(): number[] {
    const out: number[] = [];
    for (let b = this.head; b !== NIL; b = this.next[b]!) out.push(b);
    return out;
  }

  /** Block currently cached under `hash`, if any. */
  cachedBlock(hash: string): number | undefined {
    return this.cache.get(hash);
  }

  /** The longest prefix of `hashes` that is cached, as block ids. No side effects besides counters. */
  lookup(hashes: readonly string[]): number[] {
    const out: number[] = [];
    if (!this.prefixCaching) return out;
    for (const h of hashes) {
      const b = this.cache.get(h);
      if (b === undefined) break;
      out.push(b);
    }
    this.queries += hashes.length;
    this.hits += out.length;
    return out;
  }

  /** Takes a reference on cached blocks found by lookup (removing free ones from the free queue). */
  acquire(blocks: readonly number[]): void {
    for (const b of blocks) {
      if (this.refCount[b] === 0) this.unlink(b);
      this.refCount[b]!++;
    }
  }

  /** How many free blocks acquiring `blocks` would consume (those with no references now). */
  freeNeededFor(blocks: readonly number[]): number {
    let n = 0;
    for (const b of blocks) if (this.refCount[b] === 0) n++;
    return n;
  }

  /** Hands out `n` blocks from the head of the free queue, evicting their cached contents. */
  allocate(n: number): number[] {
    if (n > this.free) throw new OutOfBlocksError(n, this.free);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const b = this.head;
      this.unlink(b);
      const h = this.blockHash[b];
      if (h !== null && h !== undefined) {
        if (this.cache.get(h) === b) this.cache.delete(h);
        this.blockHash[b] = null;
      }
      this.refCount[b] = 1;
      out.push(b);
    }
    return out;
  }

  /** Drops one reference on each block, last block first; unreferenced blocks join the free queue tail. */
  release(blocks: readonly number[]): void {
    for (let i = blocks.length - 1; i >= 0; i--) {
      const b = blocks[i]!;
      if (this.refCount[b]! <= 0) throw new Error(`block ${b} released with no references`);
      if (--this.refCount[b]! === 0) this.pushTail(b);
    }
  }

  /**
   * Records that `block` now holds the full, computed block with this hash. If another block already
   * holds it (two sequences computed the same prefix at once), the first one stays the cached copy.
   */
  register(block: number, hash: string): void {
    if (!this.prefixCaching || this.blockHash[block] !== null) return;
    if (this.cache.has(hash)) return;
    this.cache.set(hash, block);
    this.blockHash[block] = hash;
  }

  /** Forgets every cached block (e.g. after weights change). Referenced blocks keep their data. */
  resetPrefixCache(): void {
    this.cache.clear();
    this.blockHash.fill(null);
  }

  private pushTail(b: number): void {
    this.prev[b] = this.tail;
    this.next[b] = NIL;
    if (this.tail === NIL) this.head = b;
    else this.next[this.tail] = b;
    this.tail = b;
    this.free++;
  }

  private unlink(b: number): void {
    const p = this.prev[b]!, n = this.next[b]!;
    if (p === NIL) this.head = n;
    else this.next[p] = n;
    if (n === NIL) this.tail = p;
    else this.prev[n] = p;
    this.prev[b] = NIL;
    this.next[b] = NIL;
    this.free--;
  }
}
