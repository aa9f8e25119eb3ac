// The `wasm` backend: KernelOps on WebAssembly SIMD128 with a thread pool over one shared memory.
// Weights live in the wasm memory (allocWeight returns views into it, filled in place by loaders);
// activations are staged into scratch blocks per call and results copied out. matmul splits output
// features across threads; the cheap row ops run on the calling thread.
import { FP8_BLOCK, type GroupedWeight, type GroupSegments, type KernelOps, type TopK, type WeightDType, type WeightMatrix } from '../api.ts';
import { KernelShapeError, checkGroupedMatmul, dest, groupedSizes, need } from '../ref/ops.ts';
import { KIND_BF16, KIND_F32, KIND_FP8, runGemm } from './matmul.ts';
import { runGroupedGemm } from './grouped.ts';
import { WasmRuntime } from './runtime.ts';

type Typed = Float32Array | Uint16Array | Uint8Array | Int32Array;

/** Temporary blocks of one op, freed together. */
class Stage {
  private readonly blocks: number[] = [];
  constructor(private readonly rt: WasmRuntime) {}
  /** Pointer to `src`'s bytes in wasm memory: the view itself when it lives there, else a copy. */
  input(src: Typed): number {
    if (this.rt.heap.owns(src)) return src.byteOffset;
    const p = this.alloc(src.byteLength);
    new Uint8Array(this.rt.heap.buffer, p, src.byteLength).set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
    return p;
  }
  alloc(bytes: number): number {
    const p = this.rt.heap.alloc(bytes);
    this.blocks.push(p);
    return p;
  }
  release(): void {
    for (const p of this.blocks) this.rt.heap.free(p);
    this.blocks.length = 0;
  }
}

export class WasmOps implements KernelOps {
  private readonly k;
  constructor(readonly runtime: WasmRuntime) {
    this.k = runtime.pool.exports('kernels');
  }

  static async create(threads: number): Promise<WasmOps> {
    return new WasmOps(await WasmRuntime.create({ threads }));
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
    if (w.dtype === 'fp8') need('matmul', 'w.scaleInv', w.scaleInv.length, Math.ceil(N / FP8_BLOCK) * Math.ceil(K / FP8_BLOCK));
    const y = dest('matmul', out, m * N);
    if (m === 0 || N === 0) return y;
    if (K === 0) return y.fill(0);
    const st = new Stage(this.runtime);
    try {
      const yp = st.alloc(m * N * 4);
      runGemm(this.runtime, {
        kind: w.dtype === 'f32' ? KIND_F32 : w.dtype === 'bf16' ? KIND_BF16 : KIND_FP8,
        x: st.input(x), m, k: K, w: st.input(w.data), scales: w.dtype === 'fp8' ? st.input(w.scaleInv) : 0,
        aScales: 0, y: yp, n: N,
      });
      y.set(this.runtime.heap.f32(yp, m * N));
      return y;
    } finally {
      st.release();
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
    const y = dest('groupedMatmul', out, m * N);
    y.fill(0);
    if (runs.length === 0) return y;
    const st = new Stage(this.runtime);
    try {
      const yp = st.alloc(m * N * 4);
      runGroupedGemm(this.runtime, {
        kind: w.dtype === 'f32' ? KIND_F32 : w.dtype === 'bf16' ? KIND_BF16 : KIND_FP8,
        x: st.input(x), m, k: K, w: st.input(w.data), scales: w.dtype === 'fp8' ? st.input(w.scaleInv) : 0,
        aScales: 0, y: yp, n: N, runs,
      });
      const yv = this.runtime.heap.f32(yp, m * N);
      for (const r of runs) y.set(yv.subarray(r.r0 * N, (r.r0 + r.len) * N), r.r0 * N);
      return y;
    } finally {
      st.release();
    }
  }

  rmsNorm(x: Float32Array, rows: number, weight: Float32Array, eps: number, out?: Float32Array): Float32Array {
    const d = weight.length;
    need('rmsNorm', 'x', x.length, rows * d);
    const y = dest('rmsNorm', out, rows * d);
    if (rows === 0 || d === 0) return y;
    const st = new Stage(this.runtime);
    try {
      const yp = st.alloc(rows * d * 4);
      this.k.rmsNorm!(st.input(x), st.input(weight), yp, d, eps, 0, rows);
      y.set(this.runtime.heap.f32(yp, rows * d));
      return y;
    } finally {
      st.release();
    }
  }

  rope(x: Float32Array, rows: number, stride: number, offset: number, dim: number, cos: Float32Array, sin: Float32Array): void {
    if (dim % 2 !== 0 || offset < 0 || offset + dim > stride) throw new KernelShapeError('rope', `bad dim/offset/stride ${dim}/${offset}/${stride}`);
    if (x.length < rows * stride) throw new KernelShapeError('rope', `x has length ${x.length}, expected at least ${rows * stride}`);
    need('rope', 'cos', cos.length, rows * (dim / 2));
    need('rope', 'sin', sin.length, rows * (dim / 2));
    if (rows === 0 || dim === 0) return;
    const st = new Stage(this.runtime);
    try {
      const view = x.subarray(0, rows * stride);
      const xp = st.input(view);
      this.k.rope!(xp, rows, stride, offset, dim, st.input(cos), st.input(sin));
      if (!this.runtime.heap.owns(x)) view.set(this.runtime.heap.f32(xp, rows * stride));
    } finally {
      st.release();
    }
  }

  softmax(x: Float32Array, rows: number, cols: number): void {
    need('softmax', 'x', x.length, rows * cols);
    if (rows === 0 || cols === 0) return;
    const st = new Stage(this.runtime);
    try {
      const xp = st.input(x);
      this.k.softmax!(xp, cols, 0, rows);
      if (!this.runtime.heap.owns(x)) x.set(this.runtime.heap.f32(xp, rows * cols));
    } finally {
      st.release();
    }
  }

  siluMul(gate: Float32Array, up: Float32Array, out?: Float32Array): Float32Array {
    need('siluMul', 'up', up.length, gate.length);
    const n = gate.length;
    const y = dest('siluMul', out, n);
    if (n === 0) return y;
    const st = new Stage(this.runtime);
    try {
      const yp = st.alloc(n * 4);
      this.k.siluMul!(st.input(gate), st.input(up), yp, 0, n);
      y.set(this.runtime.heap.f32(yp, n));
      return y;
    } finally {
      st.release();
    }
  }

  topk(x: Float32Array, rows: number, cols: number, k: number): TopK {
    need('topk', 'x', x.length, rows * cols);
    if (!Number.isInteger(k) || k < 0 || k > cols) throw new KernelShapeError('topk', `k=${k} outside [0, ${cols}]`);
    const indices = new Int32Array(rows * k), values = new Float32Array(rows * k);
    if (rows === 0 || k === 0) return { indices, values };
    const st = new Stage(this.runtime);
    try {
      const ip = st.alloc(rows * k * 4), vp = st.alloc(rows * k * 4);
      this.k.topk!(st.input(x), rows, cols, k, ip, vp);
      indices.set(this.runtime.heap.i32(ip, rows * k));
      values.set(this.runtime.heap.f32(vp, rows * k));
      return { indices, values };
    } finally {
      st.release();
    }
  }

  async dispose(): Promise<void> {
    await this.runtime.dispose();
  }
}
