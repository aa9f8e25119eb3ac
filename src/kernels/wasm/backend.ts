// KernelOps over ONE wasm memory (WebAssembly SIMD128, a thread pool over that shared memory): the
// per-memory half of the `wasm` backend (memories.ts places weights across several of these).
// Weights live in the wasm memory (allocWeight returns views into it, filled in place by loaders);
// activations are staged into one reused scratch block (ScratchArena: no allocator work per op) and
// results copied out (into `out` when given, else one fresh array). matmul splits output
// features across threads; the cheap row ops run on the calling thread.
import { FP8_BLOCK, type GroupedWeight, type GroupSegments, type KernelOps, type StridedAt, type TopK, type WeightDType, type WeightMatrix } from '../api.ts';
import { KernelShapeError, checkCopyStrided, checkGatherRows, checkGroupedMatmul, checkScatterAddRows, groupedSizes, need } from '../ref/ops.ts';
import { ALIGN, ScratchArena, type WasmHeap } from './heap.ts';
import { KIND_BF16, KIND_F32, KIND_FP8, runGemm } from './matmul.ts';
import { copyRunRows, runGroupedGemm } from './grouped.ts';
import { WasmRuntime } from './runtime.ts';

type Typed = Float32Array | Uint16Array | Uint8Array | Int32Array;

const al = (bytes: number): number => Math.ceil(bytes / ALIGN) * ALIGN;

/** Row ops (rmsNorm, siluMul) below this many element-operations run on the calling thread alone. */
export const ROW_OP_PARALLEL_MIN = 1 << 18;

export class WasmMemoryOps implements KernelOps {
  private readonly k;
  private readonly heap: WasmHeap;
  /** Per-op staging (inputs from JS memory, outputs before they are copied out), reused across ops. */
  private readonly scratch: ScratchArena;
  constructor(readonly runtime: WasmRuntime) {
    this.k = runtime.pool.exports('kernels');
    this.heap = runtime.heap;
    this.scratch = new ScratchArena(runtime.heap);
  }

  static async create(threads: number): Promise<WasmMemoryOps> {
    return new WasmMemoryOps(await WasmRuntime.create({ threads }));
  }

  /** Whether `view` lives in this memory (its byteOffset is then a pointer here). */
  owns(view: Typed): boolean {
    return this.heap.owns(view);
  }

  /** Scratch bytes `src` needs: 0 when it already lives in wasm memory. */
  private foreign(src: Typed): number {
    return this.heap.owns(src) ? 0 : al(src.byteLength);
  }

  /** Pointer to `src`'s bytes in wasm memory: the view itself when it lives there, else a copy at `at`. */
  private stage(src: Typed, at: number): number {
    const h = this.heap;
    if (h.owns(src)) return src.byteOffset;
    if (src instanceof Float32Array) h.F32.set(src, at >>> 2);
    else h.U8.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength), at);
    return at;
  }

  /**
   * Whether the kernel may write straight into `out`: it lives in wasm memory and overlaps none of
   * `inputs` (an exactly aliased input is allowed for element/row-wise kernels: `alias`).
   */
  /**
   * Whether two views' byte offsets address one memory: the same buffer, or both in this memory (views of
   * it made before and after it grew have different buffer objects but share addresses).
   */
  private readonly sameMemory = (a: Typed, b: Typed): boolean => a.buffer === b.buffer || (this.heap.owns(a) && this.heap.owns(b));

  private direct(out: Float32Array | undefined, alias: boolean, ...inputs: Typed[]): out is Float32Array {
    if (!out || !this.heap.owns(out)) return false;
    const o0 = out.byteOffset, o1 = o0 + out.byteLength;
    for (const v of inputs) {
      if (!this.sameMemory(v, out)) continue;
      const v0 = v.byteOffset, v1 = v0 + v.byteLength;
      if (v0 < o1 && o0 < v1 && !(alias && v0 === o0 && v1 === o1)) return false;
    }
    return true;
  }

  /** Copies f32 [n] at pointer p out: into `out` when given, else into a new array. */
  private takeOut(p: number, n: number, out: Float32Array | undefined): Float32Array {
    const F = this.heap.F32, i = p >>> 2;
    if (!out) return F.slice(i, i + n);
    out.set(F.subarray(i, i + n));
    return out;
  }

  /**
   * Runs a row-range kernel (args(r0, r1) for rows [r0, r1)) over `rows` rows: on the calling thread
   * when the op is small (`cost`, about element-operations, under ROW_OP_PARALLEL_MIN: a hand-off costs
   * tens of microseconds), else split evenly across the pool. Rows are independent, so the bits do not
   * depend on the split.
   */
  private rowsOnPool(fn: 'rmsNorm' | 'siluMul' | 'gatherRows', rows: number, cost: number, args: (r0: number, r1: number) => number[]): void {
    const parts = cost < ROW_OP_PARALLEL_MIN ? 1 : Math.min(this.runtime.threads, rows);
    if (parts <= 1) { this.k[fn]!(...args(0, rows)); return; }
    const chunk = Math.ceil(rows / parts);
    this.runtime.pool.run('kernels', fn, (t) => {
      const r0 = t * chunk, r1 = Math.min(rows, r0 + chunk);
      return r0 < r1 ? args(r0, r1) : null;
    });
  }

  allocWeight(dtype: WeightDType, rows: number, cols: number): WeightMatrix {
    if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows <= 0 || cols <= 0) {
      throw new KernelShapeError('allocWeight', `bad shape [${rows}, ${cols}]`);
    }
    const h = this.runtime.heap, n = rows * cols;
    switch (dtype) {
      case 'f32': return { dtype, rows, cols, data: h.f32(h.allocZeroed(n * 4), n) };
      case 'bf16': return { dtype, rows, cols, data: h.u16(h.allocZeroed(n * 2), n) };
      case 'fp8': {
        const s = Math.ceil(rows / FP8_BLOCK) * Math.ceil(cols / FP8_BLOCK);
        const data = h.u8(h.allocZeroed(n), n);
        return { dtype, rows, cols, data, scaleInv: h.f32(h.allocZeroed(s * 4), s) };
      }
      default: throw new KernelShapeError('allocWeight', `unknown weight dtype ${String(dtype)}`);
    }
  }

  matmul(x: Float32Array, m: number, w: WeightMatrix, out?: Float32Array): Float32Array {
    const N = w.rows, K = w.cols;
    if (!Number.isInteger(m) || m < 0) throw new KernelShapeError('matmul', `bad row count ${m}`);
    need('matmul', 'x', x.length, m * K);
    need('matmul', 'w.data', w.data.length, N * K);
    const fp8 = w.dtype === 'fp8';
    if (fp8) need('matmul', 'w.scaleInv', w.scaleInv.length, Math.ceil(N / FP8_BLOCK) * Math.ceil(K / FP8_BLOCK));
    if (out) need('matmul', 'out', out.length, m * N);
    if (m === 0 || N === 0) return out ?? new Float32Array(m * N);
    if (K === 0) return out ? out.fill(0) : new Float32Array(m * N);
    const inPlace = this.direct(out, false, x);
    const yb = inPlace ? 0 : al(m * N * 4), xb = this.foreign(x), wb = this.foreign(w.data), sb = fp8 ? this.foreign(w.scaleInv) : 0;
    const base = this.scratch.acquire(yb + xb + wb + sb);
    try {
      const xp = this.stage(x, base + yb);
      const wp = this.stage(w.data, base + yb + xb);
      const sp = fp8 ? this.stage(w.scaleInv, base + yb + xb + wb) : 0;
      const yp = inPlace ? out.byteOffset : base;
      runGemm(this.runtime, { kind: w.dtype === 'f32' ? KIND_F32 : w.dtype === 'bf16' ? KIND_BF16 : KIND_FP8, x: xp, m, k: K, w: wp, scales: sp, aScales: 0, y: yp, n: N });
      return inPlace ? out : this.takeOut(base, m * N, out);
    } finally {
      this.scratch.release(base);
    }
  }

  allocGroupedWeight(dtype: WeightDType, groups: number, rows: number, cols: number): GroupedWeight {
    const n = groupedSizes('allocGroupedWeight', groups, rows, cols);
    const h = this.runtime.heap;
    switch (dtype) {
      case 'f32': return { dtype, groups, rows, cols, data: h.f32(h.allocZeroed(n.data * 4), n.data) };
      case 'bf16': return { dtype, groups, rows, cols, data: h.u16(h.allocZeroed(n.data * 2), n.data) };
      case 'fp8': return { dtype, groups, rows, cols, data: h.u8(h.allocZeroed(n.data), n.data), scaleInv: h.f32(h.allocZeroed(n.scales * 4), n.scales) };
      default: throw new KernelShapeError('allocGroupedWeight', `unknown weight dtype ${String(dtype)}`);
    }
  }

  /** All groups in one pool dispatch (see grouped.ts). */
  groupedMatmul(x: Float32Array, m: number, w: GroupedWeight, seg: GroupSegments, out?: Float32Array): Float32Array {
    const runs = checkGroupedMatmul(x, m, w, seg);
    const N = w.rows, K = w.cols;
    if (out) need('groupedMatmul', 'out', out.length, m * N);
    const y = out ?? new Float32Array(m * N);
    if (runs.length === 0) return y.fill(0);
    const fp8 = w.dtype === 'fp8';
    let covered = 0;
    for (const r of runs) covered += r.len;
    // An `out` in this memory is written in place (rows in no segment zeroed first), else the product
    // goes to scratch and is copied out.
    const inPlace = this.direct(out, false, x);
    if (inPlace && covered < m) out.fill(0);
    const yb = inPlace ? 0 : al(m * N * 4), xb = this.foreign(x), wb = this.foreign(w.data), sb = fp8 ? this.foreign(w.scaleInv) : 0;
    const base = this.scratch.acquire(yb + xb + wb + sb);
    try {
      runGroupedGemm(this.runtime, {
        kind: w.dtype === 'f32' ? KIND_F32 : w.dtype === 'bf16' ? KIND_BF16 : KIND_FP8,
        x: this.stage(x, base + yb), m, k: K, w: this.stage(w.data, base + yb + xb),
        scales: fp8 ? this.stage(w.scaleInv, base + yb + xb + wb) : 0, aScales: 0, y: inPlace ? out.byteOffset : base, n: N, runs,
      });
      if (inPlace) return out;
      const F = this.heap.F32, i = base >>> 2;
      if (covered === m) {
        y.set(F.subarray(i, i + m * N));
      } else {
        y.fill(0);
        copyRunRows(y, F.subarray(i, i + m * N), runs, N);
      }
      return y;
    } finally {
      this.scratch.release(base);
    }
  }

  rmsNorm(x: Float32Array, rows: number, weight: Float32Array, eps: number, out?: Float32Array): Float32Array {
    const d = weight.length;
    need('rmsNorm', 'x', x.length, rows * d);
    if (out) need('rmsNorm', 'out', out.length, rows * d);
    if (rows === 0 || d === 0) return out ?? new Float32Array(rows * d);
    const inPlace = this.direct(out, true, x);
    const yb = inPlace ? 0 : al(rows * d * 4), xb = this.foreign(x);
    const base = this.scratch.acquire(yb + xb + this.foreign(weight));
    try {
      const xp = this.stage(x, base + yb), wp = this.stage(weight, base + yb + xb), yp = inPlace ? out.byteOffset : base;
      this.rowsOnPool('rmsNorm', rows, rows * d, (r0, r1) => [xp, wp, yp, d, eps, r0, r1]);
      return inPlace ? out : this.takeOut(base, rows * d, out);
    } finally {
      this.scratch.release(base);
    }
  }

  rope(x: Float32Array, rows: number, stride: number, offset: number, dim: number, cos: Float32Array, sin: Float32Array): void {
    if (dim % 2 !== 0 || offset < 0 || offset + dim > stride) throw new KernelShapeError('rope', `bad dim/offset/stride ${dim}/${offset}/${stride}`);
    if (x.length < rows * stride) throw new KernelShapeError('rope', `x has length ${x.length}, expected at least ${rows * stride}`);
    need('rope', 'cos', cos.length, rows * (dim / 2));
    need('rope', 'sin', sin.length, rows * (dim / 2));
    if (rows === 0 || dim === 0) return;
    const view = x.length === rows * stride ? x : x.subarray(0, rows * stride);
    const xb = this.foreign(view), cb = this.foreign(cos);
    const base = this.scratch.acquire(xb + cb + this.foreign(sin));
    try {
      const xp = this.stage(view, base);
      this.k.rope!(xp, rows, stride, offset, dim, this.stage(cos, base + xb), this.stage(sin, base + xb + cb));
      if (xb > 0) view.set(this.heap.F32.subarray(xp >>> 2, (xp >>> 2) + rows * stride));
    } finally {
      this.scratch.release(base);
    }
  }

  softmax(x: Float32Array, rows: number, cols: number): void {
    need('softmax', 'x', x.length, rows * cols);
    if (rows === 0 || cols === 0) return;
    const xb = this.foreign(x);
    const base = this.scratch.acquire(xb);
    try {
      const xp = this.stage(x, base);
      this.k.softmax!(xp, cols, 0, rows);
      if (xb > 0) x.set(this.heap.F32.subarray(xp >>> 2, (xp >>> 2) + x.length));
    } finally {
      this.scratch.release(base);
    }
  }

  siluMul(gate: Float32Array, up: Float32Array, out?: Float32Array): Float32Array {
    need('siluMul', 'up', up.length, gate.length);
    const n = gate.length;
    if (out) need('siluMul', 'out', out.length, n);
    if (n === 0) return out ?? new Float32Array(0);
    const inPlace = this.direct(out, true, gate, up);
    const yb = inPlace ? 0 : al(n * 4), gb = this.foreign(gate);
    const base = this.scratch.acquire(yb + gb + this.foreign(up));
    try {
      const gp = this.stage(gate, base + yb), upp = this.stage(up, base + yb + gb), op = inPlace ? out.byteOffset : base;
      this.rowsOnPool('siluMul', n, n * 16, (i0, i1) => [gp, upp, op, i0, i1]);
      return inPlace ? out : this.takeOut(base, n, out);
    } finally {
      this.scratch.release(base);
    }
  }

  topk(x: Float32Array, rows: number, cols: number, k: number): TopK {
    need('topk', 'x', x.length, rows * cols);
    if (!Number.isInteger(k) || k < 0 || k > cols) throw new KernelShapeError('topk', `k=${k} outside [0, ${cols}]`);
    if (rows === 0 || k === 0) return { indices: new Int32Array(rows * k), values: new Float32Array(rows * k) };
    const ob = al(rows * k * 4);
    const base = this.scratch.acquire(2 * ob + this.foreign(x));
    try {
      this.k.topk!(this.stage(x, base + 2 * ob), rows, cols, k, base, base + ob);
      return { indices: this.heap.i32(base, rows * k).slice(), values: this.heap.F32.slice((base + ob) >>> 2, ((base + ob) >>> 2) + rows * k) };
    } finally {
      this.scratch.release(base);
    }
  }

  /** Rows split across the pool when large (a plain copy per row: the bits do not depend on the split). */
  gatherRows(x: Float32Array, cols: number, index: Int32Array, out?: Float32Array): Float32Array {
    checkGatherRows(x, cols, index, out);
    const rows = index.length, n = rows * cols;
    if (n === 0) return out ?? new Float32Array(0);
    // The kernel reads index while it writes out: an index inside out goes through scratch.
    const inPlace = this.direct(out, false, x, index);
    const yb = inPlace ? 0 : al(n * 4), xb = this.foreign(x);
    const base = this.scratch.acquire(yb + xb + this.foreign(index));
    try {
      const xp = this.stage(x, base + yb), ip = this.stage(index, base + yb + xb), yp = inPlace ? out.byteOffset : base;
      this.rowsOnPool('gatherRows', rows, n, (r0, r1) => [xp, cols, ip, yp, r0, r1]);
      return inPlace ? out : this.takeOut(base, n, out);
    } finally {
      this.scratch.release(base);
    }
  }

  /**
   * Columns split across the pool when large (multiples of 4 floats): every thread adds all rows of
   * its columns in order, so the bits are the reference's whatever the split.
   */
  scatterAddRows(y: Float32Array, cols: number, index: Int32Array, weight: Float32Array, out: Float32Array): Float32Array {
    checkScatterAddRows(y, cols, index, weight, out);
    const rows = index.length;
    if (rows === 0 || cols === 0) return out;
    // The kernel reads y, index and weight while it writes out: any of them inside out goes through scratch.
    const inPlace = this.direct(out as Float32Array | undefined, false, y, index, weight); // (out is never undefined here)
    const ob = inPlace ? 0 : al(out.byteLength), yb = this.foreign(y), ib = this.foreign(index);
    const base = this.scratch.acquire(ob + yb + ib + this.foreign(weight));
    try {
      const op = inPlace ? out.byteOffset : base;
      if (!inPlace) this.heap.F32.set(out, base >>> 2);
      const yp = this.stage(y, base + ob), ip = this.stage(index, base + ob + yb), wp = this.stage(weight, base + ob + yb + ib);
      const parts = rows * cols < ROW_OP_PARALLEL_MIN ? 1 : Math.min(this.runtime.threads, Math.ceil(cols / 4));
      if (parts <= 1) this.k.scatterAddRows!(yp, cols, ip, wp, op, rows, 0, cols);
      else {
        const chunk = Math.ceil(cols / parts / 4) * 4;
        this.runtime.pool.run('kernels', 'scatterAddRows', (t) => {
          const c0 = t * chunk, c1 = Math.min(cols, c0 + chunk);
          return c0 < c1 ? [yp, cols, ip, wp, op, rows, c0, c1] : null;
        });
      }
      if (!inPlace) out.set(this.heap.F32.subarray(base >>> 2, (base >>> 2) + out.length));
      return out;
    } finally {
      this.scratch.release(base);
    }
  }

  /**
   * In place when both spans live in this memory; a foreign src span is staged, a foreign dst span is
   * staged in and copied back (so its untouched elements keep their values). Rows of the grid are
   * split across the pool when large.
   */
  copyStrided(src: Float32Array, s: StridedAt, dst: Float32Array, d: StridedAt, shape: readonly [number, number, number]): void {
    const span = checkCopyStrided(src, s, dst, d, shape, this.sameMemory);
    const [n0, n1, len] = shape;
    if (n0 === 0 || n1 === 0 || len === 0) return;
    const h = this.heap;
    const srcIn = h.owns(src), dstIn = h.owns(dst);
    const sView = src.subarray(span.src[0], span.src[1]), dView = dst.subarray(span.dst[0], span.dst[1]);
    const sb = srcIn ? 0 : al(sView.byteLength);
    const base = this.scratch.acquire(sb + (dstIn ? 0 : al(dView.byteLength)));
    try {
      const sp = srcIn ? sView.byteOffset : base;
      if (!srcIn) h.F32.set(sView, sp >>> 2);
      const dp = dstIn ? dView.byteOffset : base + sb;
      if (!dstIn) h.F32.set(dView, dp >>> 2);
      const rows = n0 * n1;
      const args = (r0: number, r1: number) => [sp, s.strides[0], s.strides[1], dp, d.strides[0], d.strides[1], n1, len, r0, r1];
      const parts = rows * len < ROW_OP_PARALLEL_MIN ? 1 : Math.min(this.runtime.threads, rows);
      if (parts <= 1) this.k.copyStrided!(...args(0, rows));
      else {
        const chunk = Math.ceil(rows / parts);
        this.runtime.pool.run('kernels', 'copyStrided', (t) => {
          const r0 = t * chunk, r1 = Math.min(rows, r0 + chunk);
          return r0 < r1 ? args(r0, r1) : null;
        });
      }
      if (!dstIn) dView.set(h.F32.subarray(dp >>> 2, (dp >>> 2) + dView.length));
    } finally {
      this.scratch.release(base);
    }
  }

  async dispose(): Promise<void> {
    await this.runtime.dispose();
  }
}
