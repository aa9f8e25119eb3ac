// The WebGPU forward ops: KernelOps semantics (src/kernels/api.ts), but asynchronous, because a GPU result
// only comes back through mapAsync, one submit and readback per op. The kernel registry's `loadBackend`
// hands out synchronous ops, so these are not the registry's `webgpu` ops (registry.ts: ref's host
// fallbacks); the model's GPU forward uses the recorded, resident ops of resident.ts instead. This op set
// (`loadWebGpuBackend()`) stays for callers with host arrays, tested against the same semantics.
//
// Weights: each WeightMatrix is uploaded on first use and kept on the GPU, keyed by its data array
// (buffers.ts residentStorage), so a weight must not be modified after its first matmul (call
// releaseWeight() first if it must).
import {
  FP8_BLOCK, OP_NAMES, type GroupedWeight, type GroupSegments, type KernelOps, type OpName, type TopK, type WeightMatrix,
} from '../api.ts';
import { closeDevice, getDevice } from './device.ts';
import { emptyStorage, releaseResident, uploadParams, uploadStorage, withTemps } from './buffers.ts';
import { groupedWeightGemmNt, weightMatrixGemmNt } from './deepgemm.ts';
// Shape errors and weight allocation are the ref backend's, so every backend rejects bad input alike.
import { allocGroupedWeight, allocWeight, checkGroupedMatmul, copyStrided, gatherRows, KernelShapeError, scatterAddRows } from '../ref/ops.ts';
import { getPipeline, runPasses } from './pipelines.ts';
import { ELEM_WG, rmsNormWgsl, ropeWgsl, siluMulWgsl, softmaxWgsl, topkWgsl } from './op-shaders.ts';
import { grid } from './wgsl.ts';
import { planRowChunks, sizeLimits } from './split.ts';

/** KernelOps with every method returning a Promise of what the synchronous op returns. */
export type AsyncKernelOps = {
  [K in keyof KernelOps]: (...args: Parameters<KernelOps[K]>) => Promise<Awaited<ReturnType<KernelOps[K]>>>;
};

export interface WebGpuBackend extends AsyncKernelOps {
  readonly backend: 'webgpu';
  /** Every op is this backend's own (no fallback). */
  readonly native: ReadonlySet<OpName>;
  /** Drops a weight's GPU copy (after changing its data, or to free memory). */
  releaseWeight(w: WeightMatrix | GroupedWeight): Promise<void>;
  /** Destroys the process's device (all cached weights and pipelines with it). */
  dispose(): Promise<void>;
}

function check(op: string, ok: boolean, detail: string): void {
  if (!ok) throw new KernelShapeError(op, detail);
}

function checkOut(op: string, out: Float32Array | undefined, len: number): Float32Array {
  if (out && out.length !== len) throw new KernelShapeError(op, `out has length ${out.length}, expected ${len}`);
  return out ?? new Float32Array(len);
}

function elemGroups(n: number): [number, number] {
  return grid(Math.ceil(n / ELEM_WG));
}

export async function matmul(x: Float32Array, m: number, w: WeightMatrix, out?: Float32Array): Promise<Float32Array> {
  const { rows: n, cols: k } = w;
  check('matmul', Number.isInteger(m) && m >= 0 && x.length === m * k, `x has ${x.length} values, need ${m}x${k}`);
  check('matmul', w.data.length === n * k, `weight data has ${w.data.length} values, need ${n}x${k}`);
  const kb = Math.ceil(k / FP8_BLOCK);
  if (w.dtype === 'fp8') check('matmul', w.scaleInv.length === Math.ceil(n / FP8_BLOCK) * kb, `scaleInv has ${w.scaleInv.length} values`);
  const y = checkOut('matmul', out, m * n);
  if (m === 0 || n === 0) return y;
  if (k === 0) { y.fill(0); return y; }
  // One GEMM generator serves the forward op and DeepGEMM (deepgemm.ts / gemm-shaders.ts).
  return weightMatrixGemmNt(x, m, w, y);
}

/** All groups in one dispatch: the segments become a per-row group index (DeepGEMM's contiguous layout). */
export async function groupedMatmul(x: Float32Array, m: number, w: GroupedWeight, seg: GroupSegments, out?: Float32Array): Promise<Float32Array> {
  const runs = checkGroupedMatmul(x, m, w, seg);
  const y = checkOut('groupedMatmul', out, m * w.rows);
  if (m === 0) return y;
  const groupIndex = new Int32Array(m).fill(-1);
  for (const r of runs) groupIndex.fill(r.g, r.r0, r.r0 + r.len);
  return groupedWeightGemmNt(x, m, w, groupIndex, y);
}

// The row-wise ops below run in row chunks whose tensors fit the storage limits (split.ts), one submit
// per chunk; rows are independent, so a chunked result equals the unchunked one bit for bit.

export async function rmsNorm(x: Float32Array, rows: number, weight: Float32Array, eps: number, out?: Float32Array): Promise<Float32Array> {
  const cols = weight.length;
  check('rmsNorm', x.length === rows * cols, `x has ${x.length} values, need ${rows}x${cols}`);
  const y = checkOut('rmsNorm', out, rows * cols);
  if (rows === 0 || cols === 0) return y;
  const ctx = await getDevice();
  const pipeline = await getPipeline(ctx, 'rmsNorm', rmsNormWgsl);
  // The weight is one buffer whatever the chunk: listed as a per-row tensor so a too-wide one is refused.
  for (const [r0, r1] of planRowChunks(rows, [['rmsNorm:x', cols * 4], ['rmsNorm:w', cols * 4]], sizeLimits(ctx))) {
    const cr = r1 - r0;
    await withTemps(async (t) => {
      const params = uploadParams(ctx, [['u32', cr], ['u32', cols], ['f32', eps], ['u32', 0]], 'rmsNorm:params');
      const xb = uploadStorage(ctx, x.subarray(r0 * cols, r1 * cols), 'rmsNorm:x');
      const wb = uploadStorage(ctx, weight, 'rmsNorm:w');
      const yb = emptyStorage(ctx, cr * cols * 4, 'rmsNorm:y');
      t.push(params, xb, wb, yb);
      const [bytes] = await runPasses(ctx, 'rmsNorm', [{ pipeline, buffers: [params, xb, wb, yb], groups: grid(cr) }], [{ buffer: yb, byteLength: cr * cols * 4 }]);
      y.set(new Float32Array(bytes!), r0 * cols);
    });
  }
  return y;
}

export async function rope(x: Float32Array, rows: number, stride: number, offset: number, dim: number, cos: Float32Array, sin: Float32Array): Promise<void> {
  check('rope', dim % 2 === 0, `dim ${dim} must be even`);
  const half = dim / 2;
  check('rope', cos.length === rows * half && sin.length === rows * half, `cos/sin need ${rows}x${half} values`);
  check('rope', rows === 0 || x.length >= (rows - 1) * stride + offset + dim,
    `x of ${x.length} values cannot hold ${rows} rows of stride ${stride} with ${dim} values at offset ${offset}`);
  if (rows === 0 || half === 0) return;
  const ctx = await getDevice();
  const pipeline = await getPipeline(ctx, 'rope', ropeWgsl);
  // A chunk of c rows spans (c-1)·stride + offset + dim ≤ c·max(stride, offset + dim) values of x.
  const rowBytes = Math.max(stride, offset + dim) * 4;
  for (const [r0, r1] of planRowChunks(rows, [['rope:x', rowBytes], ['rope:cos', half * 4]], sizeLimits(ctx))) {
    const cr = r1 - r0;
    const span = (cr - 1) * stride + offset + dim;
    const xs = x.subarray(r0 * stride, r0 * stride + span);
    await withTemps(async (t) => {
      const params = uploadParams(ctx, [['u32', cr], ['u32', stride], ['u32', offset], ['u32', half]], 'rope:params');
      const xb = uploadStorage(ctx, xs, 'rope:x');
      const cb = uploadStorage(ctx, cos.subarray(r0 * half, r1 * half), 'rope:cos');
      const sb = uploadStorage(ctx, sin.subarray(r0 * half, r1 * half), 'rope:sin');
      t.push(params, xb, cb, sb);
      const [bytes] = await runPasses(ctx, 'rope', [{ pipeline, buffers: [params, xb, cb, sb], groups: elemGroups(cr * half) }], [{ buffer: xb, byteLength: span * 4 }]);
      xs.set(new Float32Array(bytes!));
    });
  }
}

export async function softmax(x: Float32Array, rows: number, cols: number): Promise<void> {
  check('softmax', x.length === rows * cols, `x has ${x.length} values, need ${rows}x${cols}`);
  if (rows === 0 || cols === 0) return;
  const ctx = await getDevice();
  const pipeline = await getPipeline(ctx, 'softmax', softmaxWgsl);
  for (const [r0, r1] of planRowChunks(rows, [['softmax:x', cols * 4]], sizeLimits(ctx))) {
    const cr = r1 - r0;
    await withTemps(async (t) => {
      const params = uploadParams(ctx, [['u32', cr], ['u32', cols], ['u32', 0], ['u32', 0]], 'softmax:params');
      const xb = uploadStorage(ctx, x.subarray(r0 * cols, r1 * cols), 'softmax:x');
      t.push(params, xb);
      const [bytes] = await runPasses(ctx, 'softmax', [{ pipeline, buffers: [params, xb], groups: grid(cr) }], [{ buffer: xb, byteLength: cr * cols * 4 }]);
      x.set(new Float32Array(bytes!), r0 * cols);
    });
  }
}

export async function siluMul(gate: Float32Array, up: Float32Array, out?: Float32Array): Promise<Float32Array> {
  check('siluMul', gate.length === up.length, `gate has ${gate.length} values, up ${up.length}`);
  const n = gate.length;
  const y = checkOut('siluMul', out, n);
  if (n === 0) return y;
  const ctx = await getDevice();
  const pipeline = await getPipeline(ctx, 'siluMul', siluMulWgsl);
  // Elementwise: chunks of elements.
  for (const [e0, e1] of planRowChunks(n, [['siluMul:gate', 4]], sizeLimits(ctx))) {
    const cn = e1 - e0;
    await withTemps(async (t) => {
      const params = uploadParams(ctx, [['u32', cn], ['u32', 0], ['u32', 0], ['u32', 0]], 'siluMul:params');
      const gb = uploadStorage(ctx, gate.subarray(e0, e1), 'siluMul:gate');
      const ub = uploadStorage(ctx, up.subarray(e0, e1), 'siluMul:up');
      const yb = emptyStorage(ctx, cn * 4, 'siluMul:y');
      t.push(params, gb, ub, yb);
      const [bytes] = await runPasses(ctx, 'siluMul', [{ pipeline, buffers: [params, gb, ub, yb], groups: elemGroups(cn) }], [{ buffer: yb, byteLength: cn * 4 }]);
      y.set(new Float32Array(bytes!), e0);
    });
  }
  return y;
}

export async function topk(x: Float32Array, rows: number, cols: number, k: number): Promise<TopK> {
  check('topk', x.length === rows * cols, `x has ${x.length} values, need ${rows}x${cols}`);
  check('topk', Number.isInteger(k) && k >= 1 && k <= cols, `k = ${k} must be in [1, cols = ${cols}]`);
  const indices = new Int32Array(rows * k);
  const values = new Float32Array(rows * k);
  if (rows === 0) return { indices, values };
  const ctx = await getDevice();
  const pipeline = await getPipeline(ctx, 'topk', topkWgsl);
  for (const [r0, r1] of planRowChunks(rows, [['topk:x', cols * 4], ['topk:indices', k * 4]], sizeLimits(ctx))) {
    const cr = r1 - r0;
    await withTemps(async (t) => {
      const params = uploadParams(ctx, [['u32', cr], ['u32', cols], ['u32', k], ['u32', 0]], 'topk:params');
      const xb = uploadStorage(ctx, x.subarray(r0 * cols, r1 * cols), 'topk:x');
      const ib = emptyStorage(ctx, cr * k * 4, 'topk:indices');
      const vb = emptyStorage(ctx, cr * k * 4, 'topk:values');
      t.push(params, xb, ib, vb);
      const [ibytes, vbytes] = await runPasses(ctx, 'topk', [{ pipeline, buffers: [params, xb, ib, vb], groups: grid(cr) }],
        [{ buffer: ib, byteLength: cr * k * 4 }, { buffer: vb, byteLength: cr * k * 4 }]);
      indices.set(new Int32Array(ibytes!), r0 * k);
      values.set(new Float32Array(vbytes!), r0 * k);
    });
  }
  return { indices, values };
}

/** The WebGPU op set. Opens the device now (so a missing GPU fails here, not in the first op). */
export async function loadWebGpuBackend(): Promise<WebGpuBackend> {
  await getDevice();
  return {
    backend: 'webgpu',
    native: new Set(OP_NAMES),
    allocWeight: async (dtype, rows, cols) => allocWeight(dtype, rows, cols),
    allocGroupedWeight: async (dtype, groups, rows, cols) => allocGroupedWeight(dtype, groups, rows, cols),
    matmul, groupedMatmul, rmsNorm, rope, softmax, siluMul, topk,
    // Row moves between host arrays: an upload and a download would cost more than the move itself, so
    // these run on the CPU (ref's code). The GPU forward keeps its rows on the GPU and uses resident.ts's
    // gatherRows / combineExperts instead.
    gatherRows: async (x, cols, index, out) => gatherRows(x, cols, index, out),
    scatterAddRows: async (y, cols, index, weight, out) => scatterAddRows(y, cols, index, weight, out),
    copyStrided: async (src, s, dst, d, shape) => copyStrided(src, s, dst, d, shape),
    async releaseWeight(w) {
      const ctx = await getDevice();
      releaseResident(ctx, w.data);
      if (w.dtype === 'fp8') releaseResident(ctx, w.scaleInv);
    },
    dispose: closeDevice,
  };
}
