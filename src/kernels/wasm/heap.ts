// A simple allocator over the shared WebAssembly.Memory: bump pointer plus a first-fit free list with
// coalescing, every block 64-byte aligned (cache lines; SIMD loads never straddle a block start).
// Weights live here permanently (allocWeight); activations are staged in scratch blocks.
// The memory only grows (never moves or shrinks), and views of a shared memory's buffer stay valid
// after growth: a view made before `grow` keeps addressing the same bytes.
export const ALIGN = 64;
const PAGE = 65536;

export class WasmOutOfMemoryError extends Error {
  override name = 'WasmOutOfMemoryError';
  constructor(readonly requested: number, readonly inUse: number, detail = 'one wasm32 memory holds at most 4 GiB') {
    super(`wasm heap: cannot allocate ${requested} bytes (${inUse} in use; ${detail})`);
  }
}

interface Span { off: number; size: number }

const align = (n: number): number => Math.ceil(n / ALIGN) * ALIGN;

export class WasmHeap {
  private top: number;
  private readonly freeList: Span[] = [];
  private readonly sizes = new Map<number, number>();
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  private used = 0;
  /** Whole-memory views, rebuilt after each growth (ops copy activations in and out through them). */
  private f32All: Float32Array;
  private u8All: Uint8Array;

  constructor(readonly memory: WebAssembly.Memory, base: number, private readonly maxPages = 65536) {
    this.top = align(Math.max(base, ALIGN));
    this.buffers.add(memory.buffer);
    this.f32All = new Float32Array(memory.buffer);
    this.u8All = new Uint8Array(memory.buffer);
  }

  /** A Float32Array over the whole memory (index = byte offset / 4); valid until the next growth. */
  get F32(): Float32Array {
    return this.f32All;
  }

  /** A Uint8Array over the whole memory; valid until the next growth. */
  get U8(): Uint8Array {
    return this.u8All;
  }

  /** Bytes currently allocated (aligned sizes). */
  get inUse(): number {
    return this.used;
  }

  /** Allocates `bytes` (rounded up to 64) and returns the 64-aligned offset. Contents are not cleared. */
  alloc(bytes: number): number {
    const size = align(Math.max(1, bytes));
    for (let i = 0; i < this.freeList.length; i++) {
      const s = this.freeList[i]!;
      if (s.size >= size) {
        const off = s.off;
        if (s.size === size) this.freeList.splice(i, 1);
        else { s.off += size; s.size -= size; }
        return this.take(off, size);
      }
    }
    const off = this.top;
    const end = off + size;
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      const pages = Math.ceil((end - have) / PAGE);
      if (have / PAGE + pages > this.maxPages) throw new WasmOutOfMemoryError(bytes, this.used);
      try {
        this.memory.grow(pages);
      } catch {
        throw new WasmOutOfMemoryError(bytes, this.used);
      }
      const b = this.memory.buffer;
      this.buffers.add(b);
      this.f32All = new Float32Array(b);
      this.u8All = new Uint8Array(b);
    }
    this.top = end;
    return this.take(off, size);
  }

  /** Allocates and zero-fills. */
  allocZeroed(bytes: number): number {
    const off = this.alloc(bytes);
    new Uint8Array(this.memory.buffer, off, align(Math.max(1, bytes))).fill(0);
    return off;
  }

  private take(off: number, size: number): number {
    this.sizes.set(off, size);
    this.used += size;
    return off;
  }

  /** Returns a block to the free list (merging neighbours; a block at the top lowers the bump pointer). */
  free(off: number): void {
    const size = this.sizes.get(off);
    if (size === undefined) throw new RangeError(`wasm heap: ${off} is not an allocated block`);
    this.sizes.delete(off);
    this.used -= size;
    let i = 0;
    while (i < this.freeList.length && this.freeList[i]!.off < off) i++;
    this.freeList.splice(i, 0, { off, size });
    // Coalesce with the next and previous spans.
    const cur = this.freeList[i]!;
    const next = this.freeList[i + 1];
    if (next && cur.off + cur.size === next.off) { cur.size += next.size; this.freeList.splice(i + 1, 1); }
    const prev = this.freeList[i - 1];
    if (prev && prev.off + prev.size === cur.off) { prev.size += cur.size; this.freeList.splice(i, 1); i--; }
    const last = this.freeList[this.freeList.length - 1];
    if (last && last.off + last.size === this.top) { this.top = last.off; this.freeList.pop(); }
  }

  /** The current buffer (a new object after each growth). */
  get buffer(): SharedArrayBuffer {
    const b = this.memory.buffer as unknown as SharedArrayBuffer;
    this.buffers.add(b);
    return b;
  }

  /** True when the view addresses this memory; its byteOffset is then the wasm pointer. */
  owns(view: ArrayBufferView): boolean {
    const b = view.buffer;
    // Most views are of the buffer since the last growth: one identity check before the WeakSet.
    return b === this.f32All.buffer || this.buffers.has(b);
  }

  f32(off: number, len: number): Float32Array { return new Float32Array(this.buffer, off, len); }
  u16(off: number, len: number): Uint16Array { return new Uint16Array(this.buffer, off, len); }
  u8(off: number, len: number): Uint8Array { return new Uint8Array(this.buffer, off, len); }
  i32(off: number, len: number): Int32Array { return new Int32Array(this.buffer, off, len); }
}

/**
 * One reusable scratch block for synchronous ops (staged activations and outputs): acquire() returns
 * a 64-aligned block of at least `bytes` that stays valid until release(). The block is kept between
 * ops and only grows, so an op costs no allocator work; a nested acquire (an op calling another op)
 * gets a fresh heap block instead, freed by its release().
 */
export class ScratchArena {
  private base = 0;
  private cap = 0;
  private busy = false;

  constructor(private readonly heap: WasmHeap) {}

  acquire(bytes: number): number {
    if (this.busy) return this.heap.alloc(bytes);
    if (bytes > this.cap) {
      const want = align(Math.max(bytes, this.cap * 2, 64 << 10));
      if (this.cap > 0) this.heap.free(this.base);
      this.cap = 0;
      this.base = this.heap.alloc(want);
      this.cap = want;
    }
    this.busy = true;
    return this.base;
  }

  release(p: number): void {
    if (this.busy && p === this.base) this.busy = false;
    else this.heap.free(p);
  }
}
