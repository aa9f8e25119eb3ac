// The `wasm` backend: KernelOps over SEVERAL wasm memories, so a model's weights are not bounded by
// wasm32's 4 GiB. Each memory is one WasmMemoryOps (its own shared WebAssembly.Memory, kernel instances
// and thread pool); weights are placed first-fit across them, and every op runs in the memory that
// holds its weight (matmul, groupedMatmul) or its main input (row ops). Operands that live elsewhere
// are staged into that memory's scratch block and results copied out, which the per-memory ops already
// do for plain JS arrays: a tensor's "handle" is its typed-array view, whose buffer says which memory
// it lives in (heap.owns), so no separate handle type crosses the kernel API.
//
// Why several memories rather than memory64: the kernels are AssemblyScript, which has no wasm64
// target, and Node 20 has memory64 only behind a flag; several 32-bit memories run the same binaries
// everywhere (Node 20, 24, browsers). The measured cost is the activation copies between memories:
// for decode a few KB per op, for a 512-token prefill a few MB per op (well under 1% of the GEMM).
// A model that fits one memory uses one, exactly as before.
//
// Memories are created ahead of loading (`reserve`, async: each starts its worker threads), because
// allocWeight is synchronous. Threads: each memory has its own pool of `threads` participants; only
// one op runs at a time, so idle pools sleep in Atomics.wait and cost no CPU.
import type { GroupedWeight, GroupSegments, KernelOps, MemoryStats, StridedAt, TopK, WeightDType, WeightMatrix } from '../api.ts';
import { FP8_BLOCK } from '../api.ts';
import { groupedSizes } from '../ref/ops.ts';
import { WasmMemoryOps } from './backend.ts';
import { ALIGN, WasmOutOfMemoryError } from './heap.ts';
import { WasmRuntime } from './runtime.ts';

/** One wasm32 memory: 65536 pages of 64 KiB, less the 64 KiB static area the kernels reserve. */
export const WASM_MEMORY_BYTES = 4 * 2 ** 30 - 65536;
/**
 * Weight bytes placed in one memory when a model needs several: the rest is left for what ops allocate
 * at run time (staged activations and outputs, GEMM panels; a 2048-token MoE prefill stages ~200 MB).
 */
export const DEFAULT_WEIGHT_BYTES_PER_MEMORY = WASM_MEMORY_BYTES - 512 * 2 ** 20;

export interface WasmOpsOptions {
  threads: number;
  /** Weight bytes placed per memory before the next is used (tests lower it to exercise placement). */
  weightBytesPerMemory?: number;
}

type Typed = Float32Array | Uint16Array | Uint8Array | Int32Array;
const al = (bytes: number): number => Math.ceil(bytes / ALIGN) * ALIGN;

/** Bytes allocWeight / allocGroupedWeight take in backend memory for one matrix (FP8: codes + scales). */
export function weightAllocBytes(dtype: WeightDType, rows: number, cols: number, groups = 1): number {
  const n = groups * rows * cols;
  switch (dtype) {
    case 'f32': return al(n * 4);
    case 'bf16': return al(n * 2);
    case 'fp8': return al(n) + al(groups * Math.ceil(rows / FP8_BLOCK) * Math.ceil(cols / FP8_BLOCK) * 4);
  }
}

/**
 * How many memories first-fit placement of `sizes` (in order) needs with `cap` bytes per memory, given
 * what is already placed in each. An allocation larger than `cap` gets a memory of its own (up to the
 * hard 4 GiB); one larger than a whole memory cannot be placed at all.
 */
export function memoriesFor(sizes: readonly number[], cap: number, placed: readonly number[] = []): number {
  const used = [...placed];
  for (const raw of sizes) {
    const s = raw + 2 * ALIGN; // what weightAllocBytes adds at most (codes and scales each aligned)
    if (s > WASM_MEMORY_BYTES) throw new WasmOutOfMemoryError(s, 0, `one tensor of ${s} bytes exceeds a wasm32 memory (${WASM_MEMORY_BYTES} bytes)`);
    const i = used.findIndex((u) => u + s <= cap);
    if (i >= 0) used[i]! += s;
    else used.push(s);
  }
  return Math.max(1, used.length);
}

export class WasmOps implements KernelOps {
  /** One per memory; [0] also runs the ops whose operands live in no wasm memory. */
  readonly memories: WasmMemoryOps[];
  /** Weight bytes placed in each memory by allocWeight/allocGroupedWeight. */
  private readonly placed: number[];
  private readonly cap: number;

  constructor(first: WasmRuntime, private readonly opts: WasmOpsOptions = { threads: first.threads }) {
    this.memories = [new WasmMemoryOps(first)];
    this.placed = [0];
    this.cap = opts.weightBytesPerMemory ?? DEFAULT_WEIGHT_BYTES_PER_MEMORY;
  }

  static async create(threads: number, opts: Omit<WasmOpsOptions, 'threads'> = {}): Promise<WasmOps> {
    return new WasmOps(await WasmRuntime.create({ threads }), { threads, ...opts });
  }

  /** The first memory's runtime (the only one for models that fit 4 GiB); tools that share a memory use it. */
  get runtime(): WasmRuntime {
    return this.memories[0]!.runtime;
  }

  memoryStats(): MemoryStats {
    return { memories: this.memories.length, weightBytes: this.placed.reduce((a, b) => a + b, 0) };
  }

  /**
   * Creates the memories that placing allocations of `sizes` bytes (in load order; see weightAllocBytes)
   * will need, on top of what is placed already. Call before loading: allocWeight cannot start one.
   */
  async reserve(sizes: readonly number[]): Promise<void> {
    const need = memoriesFor(sizes, this.cap, this.placed);
    while (this.memories.length < need) {
      const rt = await WasmRuntime.create({ threads: this.opts.threads, simd: this.runtime.simd });
      this.memories.push(new WasmMemoryOps(rt));
      this.placed.push(0);
    }
  }

  /**
   * The memory a new allocation of `bytes` goes to: the first whose placed weights leave room under the
   * cap; else (activations after loading, or too little reserved) the one with the most room left.
   */
  private place(bytes: number): number {
    const i = this.placed.findIndex((u) => u + bytes <= this.cap);
    if (i >= 0) return i;
    let best = 0;
    for (let j = 1; j < this.memories.length; j++) if (this.placed[j]! < this.placed[best]!) best = j;
    return best;
  }

  /** Allocates in the placed memory, else in any other that still has room; typed error when none has. */
  private alloc<T>(bytes: number, make: (m: WasmMemoryOps) => T): T {
    const first = this.place(bytes);
    const order = [first, ...this.memories.keys()].filter((j, k, a) => a.indexOf(j) === k);
    for (const i of order) {
      try {
        const w = make(this.memories[i]!);
        this.placed[i]! += bytes;
        return w;
      } catch (e) {
        if (!(e instanceof WasmOutOfMemoryError)) throw e;
      }
    }
    const total = this.placed.reduce((a, b) => a + b, 0);
    const n = this.memories.length;
    throw new WasmOutOfMemoryError(bytes, total, `${n} wasm memor${n === 1 ? 'y holds' : 'ies hold'} ${total} bytes of weights; reserve() more before loading`);
  }

  /** The memory `view` lives in (0 when none: its operands are staged there). */
  private home(view: Typed): WasmMemoryOps {
    const ms = this.memories;
    for (let i = 0; i < ms.length; i++) if (ms[i]!.owns(view)) return ms[i]!;
    return ms[0]!;
  }

  allocWeight(dtype: WeightDType, rows: number, cols: number): WeightMatrix {
    if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows <= 0 || cols <= 0) {
      return this.memories[0]!.allocWeight(dtype, rows, cols); // its shape error
    }
    return this.alloc(weightAllocBytes(dtype, rows, cols), (m) => m.allocWeight(dtype, rows, cols));
  }

  allocGroupedWeight(dtype: WeightDType, groups: number, rows: number, cols: number): GroupedWeight {
    groupedSizes('allocGroupedWeight', groups, rows, cols);
    return this.alloc(weightAllocBytes(dtype, rows, cols, groups), (m) => m.allocGroupedWeight(dtype, groups, rows, cols));
  }

  matmul(x: Float32Array, m: number, w: WeightMatrix, out?: Float32Array): Float32Array {
    return this.home(w.data).matmul(x, m, w, out);
  }

  groupedMatmul(x: Float32Array, m: number, w: GroupedWeight, segments: GroupSegments, out?: Float32Array): Float32Array {
    return this.home(w.data).groupedMatmul(x, m, w, segments, out);
  }

  rmsNorm(x: Float32Array, rows: number, weight: Float32Array, eps: number, out?: Float32Array): Float32Array {
    return this.home(x).rmsNorm(x, rows, weight, eps, out);
  }

  rope(x: Float32Array, rows: number, stride: number, offset: number, dim: number, cos: Float32Array, sin: Float32Array): void {
    this.home(x).rope(x, rows, stride, offset, dim, cos, sin);
  }

  softmax(x: Float32Array, rows: number, cols: number): void {
    this.home(x).softmax(x, rows, cols);
  }

  siluMul(gate: Float32Array, up: Float32Array, out?: Float32Array): Float32Array {
    return this.home(gate).siluMul(gate, up, out);
  }

  topk(x: Float32Array, rows: number, cols: number, k: number): TopK {
    return this.home(x).topk(x, rows, cols, k);
  }

  gatherRows(x: Float32Array, cols: number, index: Int32Array, out?: Float32Array): Float32Array {
    return this.home(out ?? x).gatherRows(x, cols, index, out);
  }

  scatterAddRows(y: Float32Array, cols: number, index: Int32Array, weight: Float32Array, out: Float32Array): Float32Array {
    return this.home(out).scatterAddRows(y, cols, index, weight, out);
  }

  copyStrided(src: Float32Array, s: StridedAt, dst: Float32Array, d: StridedAt, shape: readonly [number, number, number]): void {
    this.home(dst).copyStrided(src, s, dst, d, shape);
  }

  async dispose(): Promise<void> {
    await Promise.all(this.memories.map((m) => m.dispose()));
  }
}
