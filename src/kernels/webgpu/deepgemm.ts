// DeepGEMM on WebGPU: the DeepGemmOps contract (src/kernels/deepgemm/types.ts) in WGSL, asynchronous.
// Reference: https://github.com/deepseek-ai/DeepGEMM (deep_gemm/include/deep_gemm/fp8_gemm.cuh: per-128-K
// promotion `final_accum += scale_a * scale_b * accum`; m_grouped contiguous / masked layouts).
// WGSL has no fp8: e4m3 codes travel as bytes packed in u32 words and are decoded with bit math in the
// shader (wgsl.ts); bf16 is the top half of an f32. Accumulation is f32, as on the GPU.
// Weights (B) are uploaded once and stay resident, keyed by their data array (buffers.ts residentStorage).
import {
  BLOCK, ceilDiv, checkFp8Matrix, checkGrouped, checkMasked, checkMIndices, DeepGemmShapeError, outBuffer,
  type DeepGemmOps, type Fp8Matrix, type GroupedBf16Weights, type GroupedFp8Weights,
} from '../deepgemm/types.ts';
import type { GroupedWeight, WeightMatrix } from '../api.ts';
import { emptyStorage, residentStorage, uploadParams, uploadStorage, withTemps } from './buffers.ts';
import { getDevice } from './device.ts';
import { GEMM_WG, gemmExtraBindings, gemmKey, gemmWgsl, type GemmVariant } from './gemm-shaders.ts';
import { getPipeline, runPasses } from './pipelines.ts';
import { grid } from './wgsl.ts';

/** DeepGemmOps with every method returning a Promise. */
export type AsyncDeepGemmOps = {
  [K in keyof DeepGemmOps]: (...args: Parameters<DeepGemmOps[K]>) => Promise<ReturnType<DeepGemmOps[K]>>;
};

export type GemmStrategy = 'auto' | 'direct' | 'split';
let strategy: GemmStrategy = 'auto';

/**
 * Chooses the GEMM kernel shape: 'direct' (one invocation per output), 'split' (split-K workgroup per
 * output, for small M on GPUs) or 'auto' (split when M ≤ 8 on a GPU adapter, direct on CPU adapters such
 * as llvmpipe / SwiftShader / lavapipe). Tests force each one; returns the previous setting.
 */
export function setGemmStrategy(s: GemmStrategy): GemmStrategy {
  const old = strategy;
  strategy = s;
  return old;
}

const CPU_ADAPTER = /llvmpipe|swiftshader|lavapipe|softpipe/i;

interface GemmCall {
  op: string;
  variant: Omit<GemmVariant, 'k4' | 'split'>;
  rows: number; n: number; k: number; mMax: number;
  a: Float32Array | Uint8Array;
  aScales?: Float32Array;
  b: Uint8Array | Uint16Array | Float32Array;
  bScales?: Float32Array;
  groupIndex?: Int32Array;
  /** Output rows the kernel writes (masked: only the valid ones are copied into `out`). */
  rowsWritten: (r: number) => boolean;
  out: Float32Array;
}

async function runGemm(c: GemmCall): Promise<Float32Array> {
  const { rows, n, k, out } = c;
  if (rows === 0 || n === 0) return out;
  const ctx = await getDevice();
  const split = strategy === 'split' || (strategy === 'auto' && rows <= 8 && !CPU_ADAPTER.test(ctx.adapterDescription));
  const v: GemmVariant = { ...c.variant, k4: k % 4 === 0, split };
  const pipeline = await getPipeline(ctx, gemmKey(v), () => gemmWgsl(v));
  return withTemps(async (t) => {
    const kb = ceilDiv(k, BLOCK);
    const params = uploadParams(ctx, [['u32', rows], ['u32', n], ['u32', k], ['u32', kb], ['u32', ceilDiv(n, BLOCK)],
      ['u32', Math.max(1, c.mMax)], ['u32', 0], ['u32', 0]], `${c.op}:params`);
    const a = uploadStorage(ctx, c.a, `${c.op}:a`);
    const y = emptyStorage(ctx, rows * n * 4, `${c.op}:out`);
    t.push(params, a, y);
    const buffers = [params, a, residentStorage(ctx, c.b, `${c.op}:b`), y];
    for (const e of gemmExtraBindings(v)) {
      if (e === 'aScales') { const s = uploadStorage(ctx, c.aScales!, `${c.op}:aScales`); t.push(s); buffers.push(s); }
      if (e === 'bScales') buffers.push(residentStorage(ctx, c.bScales!, `${c.op}:bScales`));
      if (e === 'groupIndex') { const s = uploadStorage(ctx, c.groupIndex!, `${c.op}:groupIndex`); t.push(s); buffers.push(s); }
    }
    const [gy, gz] = grid(rows);
    const groups: readonly [number, number, number] = split ? [...grid(rows * n), 1] : [Math.ceil(n / GEMM_WG), gy, gz];
    const [bytes] = await runPasses(ctx, c.op, [{ pipeline, buffers, groups }], [{ buffer: y, byteLength: rows * n * 4 }]);
    const got = new Float32Array(bytes!);
    for (let r = 0; r < rows; r++) if (c.rowsWritten(r)) out.set(got.subarray(r * n, (r + 1) * n), r * n);
    return out;
  });
}

const all = () => true;

function checkX(op: string, x: Float32Array, m: number, k: number): void {
  if (!Number.isInteger(m) || m < 0 || x.length !== m * k) throw new DeepGemmShapeError(op, `x has ${x.length} values, want ${m}*${k}`);
}

function maskedRows(maskedM: Int32Array, mMax: number): (r: number) => boolean {
  return (r) => r % mMax < maskedM[Math.floor(r / mMax)]!;
}

export async function fp8GemmNt(a: Fp8Matrix, b: Fp8Matrix, out?: Float32Array): Promise<Float32Array> {
  const op = 'fp8GemmNt';
  checkFp8Matrix(op, 'a', a, '1x128');
  checkFp8Matrix(op, 'b', b, '128x128');
  if (a.cols !== b.cols) throw new DeepGemmShapeError(op, `a has k=${a.cols}, b has k=${b.cols}`);
  return runGemm({
    op, variant: { a: 'fp8', b: 'fp8', grouping: 'none' }, rows: a.rows, n: b.rows, k: a.cols, mMax: 0,
    a: a.data, aScales: a.scales, b: b.data, bScales: b.scales, rowsWritten: all, out: outBuffer(op, out, a.rows * b.rows),
  });
}

/** Weight-only FP8 (not grouped): y[m, n] = x[m, k] f32 · dequant(B)ᵀ, B with 128x128 scales. */
export async function fp8WeightGemmNt(x: Float32Array, m: number, b: Fp8Matrix, out?: Float32Array): Promise<Float32Array> {
  const op = 'fp8WeightGemmNt';
  checkFp8Matrix(op, 'b', b, '128x128');
  checkX(op, x, m, b.cols);
  return runGemm({
    op, variant: { a: 'f32', b: 'fp8', grouping: 'none' }, rows: m, n: b.rows, k: b.cols, mMax: 0,
    a: x, b: b.data, bScales: b.scales, rowsWritten: all, out: outBuffer(op, out, m * b.rows),
  });
}

export async function mGroupedFp8GemmNtContiguous(a: Fp8Matrix, b: GroupedFp8Weights, mIndices: Int32Array, out?: Float32Array): Promise<Float32Array> {
  const op = 'mGroupedFp8GemmNtContiguous';
  checkFp8Matrix(op, 'a', a, '1x128');
  checkGrouped(op, b, a.cols);
  checkMIndices(op, mIndices, a.rows, b.groups);
  return runGemm({
    op, variant: { a: 'fp8', b: 'fp8', grouping: 'contiguous' }, rows: a.rows, n: b.n, k: b.k, mMax: 0,
    a: a.data, aScales: a.scales, b: b.data, bScales: b.scales, groupIndex: mIndices, rowsWritten: all,
    out: outBuffer(op, out, a.rows * b.n),
  });
}

export async function mGroupedFp8GemmNtMasked(a: Fp8Matrix, b: GroupedFp8Weights, maskedM: Int32Array, mMax: number, out?: Float32Array): Promise<Float32Array> {
  const op = 'mGroupedFp8GemmNtMasked';
  checkFp8Matrix(op, 'a', a, '1x128');
  checkGrouped(op, b, a.cols);
  checkMasked(op, maskedM, mMax, b.groups, a.rows);
  return runGemm({
    op, variant: { a: 'fp8', b: 'fp8', grouping: 'masked' }, rows: a.rows, n: b.n, k: b.k, mMax,
    a: a.data, aScales: a.scales, b: b.data, bScales: b.scales, groupIndex: maskedM, rowsWritten: maskedRows(maskedM, mMax),
    out: outBuffer(op, out, a.rows * b.n),
  });
}

export async function mGroupedFp8WeightGemmNtContiguous(x: Float32Array, m: number, b: GroupedFp8Weights, mIndices: Int32Array, out?: Float32Array): Promise<Float32Array> {
  const op = 'mGroupedFp8WeightGemmNtContiguous';
  checkGrouped(op, b, b.k);
  checkX(op, x, m, b.k);
  checkMIndices(op, mIndices, m, b.groups);
  return runGemm({
    op, variant: { a: 'f32', b: 'fp8', grouping: 'contiguous' }, rows: m, n: b.n, k: b.k, mMax: 0,
    a: x, b: b.data, bScales: b.scales, groupIndex: mIndices, rowsWritten: all, out: outBuffer(op, out, m * b.n),
  });
}

export async function mGroupedFp8WeightGemmNtMasked(x: Float32Array, b: GroupedFp8Weights, maskedM: Int32Array, mMax: number, out?: Float32Array): Promise<Float32Array> {
  const op = 'mGroupedFp8WeightGemmNtMasked';
  checkGrouped(op, b, b.k);
  checkX(op, x, b.groups * mMax, b.k);
  checkMasked(op, maskedM, mMax, b.groups, b.groups * mMax);
  return runGemm({
    op, variant: { a: 'f32', b: 'fp8', grouping: 'masked' }, rows: b.groups * mMax, n: b.n, k: b.k, mMax,
    a: x, b: b.data, bScales: b.scales, groupIndex: maskedM, rowsWritten: maskedRows(maskedM, mMax),
    out: outBuffer(op, out, b.groups * mMax * b.n),
  });
}

export async function mGroupedBf16GemmNtContiguous(x: Float32Array, m: number, b: GroupedBf16Weights, mIndices: Int32Array, out?: Float32Array): Promise<Float32Array> {
  const op = 'mGroupedBf16GemmNtContiguous';
  checkGrouped(op, b, b.k);
  checkX(op, x, m, b.k);
  checkMIndices(op, mIndices, m, b.groups);
  return runGemm({
    op, variant: { a: 'f32', b: 'bf16', grouping: 'contiguous' }, rows: m, n: b.n, k: b.k, mMax: 0,
    a: x, b: b.data, groupIndex: mIndices, rowsWritten: all, out: outBuffer(op, out, m * b.n),
  });
}

export async function mGroupedBf16GemmNtMasked(x: Float32Array, b: GroupedBf16Weights, maskedM: Int32Array, mMax: number, out?: Float32Array): Promise<Float32Array> {
  const op = 'mGroupedBf16GemmNtMasked';
  checkGrouped(op, b, b.k);
  checkX(op, x, b.groups * mMax, b.k);
  checkMasked(op, maskedM, mMax, b.groups, b.groups * mMax);
  return runGemm({
    op, variant: { a: 'f32', b: 'bf16', grouping: 'masked' }, rows: b.groups * mMax, n: b.n, k: b.k, mMax,
    a: x, b: b.data, groupIndex: maskedM, rowsWritten: maskedRows(maskedM, mMax), out: outBuffer(op, out, b.groups * mMax * b.n),
  });
}

/**
 * y[m, n] = x[m, k] · Wᵀ for a forward-op WeightMatrix (f32 / bf16 / fp8 with 128x128 scaleInv): the
 * kernel behind ops.ts matmul. Shapes are checked by the caller.
 */
export async function weightMatrixGemmNt(x: Float32Array, m: number, w: WeightMatrix, out: Float32Array): Promise<Float32Array> {
  return runGemm({
    op: `matmul:${w.dtype}`, variant: { a: 'f32', b: w.dtype, grouping: 'none' }, rows: m, n: w.rows, k: w.cols, mMax: 0,
    a: x, b: w.data, ...(w.dtype === 'fp8' ? { bScales: w.scaleInv } : {}), rowsWritten: all, out,
  });
}

/**
 * Grouped product for a forward-op GroupedWeight [G, n, k] (f32 / bf16 / fp8): row r uses group
 * groupIndex[r] (-1: written 0), i.e. the contiguous layout; the kernel behind ops.ts groupedMatmul.
 * Shapes are checked by the caller.
 */
export async function groupedWeightGemmNt(x: Float32Array, m: number, w: GroupedWeight, groupIndex: Int32Array, out: Float32Array): Promise<Float32Array> {
  return runGemm({
    op: `groupedMatmul:${w.dtype}`, variant: { a: 'f32', b: w.dtype, grouping: 'contiguous' }, rows: m, n: w.rows, k: w.cols, mMax: 0,
    a: x, b: w.data, ...(w.dtype === 'fp8' ? { bScales: w.scaleInv } : {}), groupIndex, rowsWritten: all, out,
  });
}

/** The WebGPU DeepGEMM op set (same contract as refDeepGemm, asynchronous). */
export const webgpuDeepGemm: AsyncDeepGemmOps = {
  fp8GemmNt,
  mGroupedFp8GemmNtContiguous,
  mGroupedFp8GemmNtMasked,
  mGroupedFp8WeightGemmNtContiguous,
  mGroupedFp8WeightGemmNtMasked,
  mGroupedBf16GemmNtContiguous,
  mGroupedBf16GemmNtMasked,
};
