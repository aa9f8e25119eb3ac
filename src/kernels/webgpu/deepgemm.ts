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
import { emptyStorage, residentPart, uploadParams, uploadStorage, withTemps } from './buffers.ts';
import { getDevice, type GpuContext } from './device.ts';
import { GEMM_WG, gemmExtraBindings, gemmKey, gemmRowBlock, gemmWgsl, type GemmVariant } from './gemm-shaders.ts';
import { getPipeline, runPasses, type Pass } from './pipelines.ts';
import { planBands, planRowChunks, planWeightSplit, sizeLimits, type Range } from './split.ts';
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

/** The split-K kernel for this many rows on this device, under the strategy set (setGemmStrategy). */
export function useSplitK(ctx: GpuContext, rows: number): boolean {
  return strategy === 'split' || (strategy === 'auto' && rows <= 8 && !CPU_ADAPTER.test(ctx.adapterDescription));
}

interface GemmCall {
  op: string;
  variant: Omit<GemmVariant, 'k4' | 'split'>;
  rows: number; n: number; k: number; mMax: number;
  /** Stacked weight matrices in b (1 unless grouped). */
  groups: number;
  a: Float32Array | Uint8Array;
  aScales?: Float32Array;
  b: Uint8Array | Uint16Array | Float32Array;
  bScales?: Float32Array;
  groupIndex?: Int32Array;
  /** Output rows the kernel writes (masked: only the valid ones are copied into `out`). */
  rowsWritten: (r: number) => boolean;
  out: Float32Array;
}

const ELEM_BYTES = { f32: 4, bf16: 2, fp8: 1 } as const;

/** Rows [n0, n1) of groups [g0, g1) of a [G, n, rowLen] array, as one contiguous [g1-g0, n1-n0, rowLen] array. */
export function gatherPart<T extends Uint8Array | Uint16Array | Float32Array>(src: T, n: number, rowLen: number, [g0, g1]: Range, [n0, n1]: Range): T {
  if (n0 === 0 && n1 === n) return src.subarray(g0 * n * rowLen, g1 * n * rowLen) as T;
  const per = (n1 - n0) * rowLen;
  const dst = new (src.constructor as new (len: number) => T)((g1 - g0) * per);
  for (let g = g0; g < g1; g++) dst.set(src.subarray((g * n + n0) * rowLen, (g * n + n1) * rowLen), (g - g0) * per);
  return dst;
}

/**
 * The masked layout as per-row groups for the contiguous kernel: row g·mMax + i uses group g when
 * i < maskedM[g], else -2 (not written). Used when the call is tiled: the masked kernel derives g from the
 * row index, which a row chunk or a group range would shift.
 */
function maskedRowGroups(maskedM: Int32Array, mMax: number, rows: number): Int32Array {
  const gi = new Int32Array(rows);
  for (let r = 0; r < rows; r++) { const g = Math.floor(r / mMax); gi[r] = r % mMax < maskedM[g]! ? g : -2; }
  return gi;
}

/**
 * One GEMM call, tiled to the storage limits (split.ts): the weight in parts (group ranges x N ranges,
 * each part its own resident buffer), the activations in row chunks, the output in column bands (one
 * buffer per chunk and band, each part's dispatch writing its columns at an offset). All dispatches go
 * in one submit. Every output element is still one invocation's full K loop, in the same order, so a
 * split product equals the unsplit one bit for bit. An untiled call is one dispatch as before.
 */
async function runGemm(c: GemmCall): Promise<Float32Array> {
  const { rows, n, k, out } = c;
  if (rows === 0 || n === 0) return out;
  const ctx = await getDevice();
  const lim = sizeLimits(ctx);
  const fp8B = c.variant.b === 'fp8';
  const kb = ceilDiv(k, BLOCK);
  const wsplit = planWeightSplit({ tensor: `${c.op}:b`, groups: c.groups, n, k, elemBytes: ELEM_BYTES[c.variant.b], blockScaled: fp8B }, lim);
  const bands = planBands(wsplit.cols, lim, `${c.op}:out`);
  const maxBand = Math.max(...bands.map(([b0, b1]) => b1 - b0));
  const aRow = c.variant.a === 'fp8' ? k : k * 4;
  const chunks = planRowChunks(rows, [[`${c.op}:a`, aRow], [`${c.op}:out`, maxBand * 4], [`${c.op}:aScales`, c.variant.a === 'fp8' ? kb * 4 : 0]], lim);
  const tiled = wsplit.groups.length > 1 || wsplit.cols.length > 1 || chunks.length > 1;
  let grouping = c.variant.grouping;
  let groupIndex = c.groupIndex;
  if (tiled && grouping === 'masked') {
    groupIndex = maskedRowGroups(c.groupIndex!, c.mMax, rows);
    grouping = 'contiguous';
  }
  const split = useSplitK(ctx, rows);
  const v0: GemmVariant = { ...c.variant, grouping, k4: k % 4 === 0, split };
  // Row blocks of the largest chunk (every chunk compiles to the same kernel; a short chunk writes fewer rows).
  const rb = gemmRowBlock(v0, Math.max(...chunks.map(([r0, r1]) => r1 - r0)));
  const v: GemmVariant = { ...v0, rowBlock: rb };
  const pipeline = await getPipeline(ctx, gemmKey(v), () => gemmWgsl(v));
  const extras = gemmExtraBindings(v);
  return withTemps(async (t) => {
    const temp = (buf: GPUBuffer) => { t.push(buf); return buf; };
    // Weight parts, resident (built and uploaded on first use of this split).
    const part = (gr: Range, nr: Range) => {
      const key = `${gr[0]}-${gr[1]}:${nr[0]}-${nr[1]}`;
      const whole = gr[0] === 0 && gr[1] === c.groups && nr[0] === 0 && nr[1] === n;
      const suffix = whole ? '' : `[${gr[0]}:${gr[1]}, ${nr[0]}:${nr[1]}]`;
      const b = residentPart(ctx, c.b, key, () => gatherPart(c.b, n, k, gr, nr), `${c.op}:b${suffix}`);
      const bScales = fp8B
        ? residentPart(ctx, c.bScales!, key, () => gatherPart(c.bScales!, ceilDiv(n, BLOCK), kb, gr, [nr[0] / BLOCK, ceilDiv(nr[1], BLOCK)]), `${c.op}:bScales${suffix}`)
        : undefined;
      return { b, bScales };
    };
    const passes: Pass[] = [];
    const readbacks: { buffer: GPUBuffer; byteLength: number; r0: number; r1: number; c0: number; c1: number }[] = [];
    for (const [r0, r1] of chunks) {
      const cr = r1 - r0;
      const a = temp(uploadStorage(ctx, c.a.subarray(r0 * k, r1 * k), `${c.op}:a`));
      const aScales = c.variant.a === 'fp8' ? temp(uploadStorage(ctx, c.aScales!.subarray(r0 * kb, r1 * kb), `${c.op}:aScales`)) : undefined;
      // Per group range: the chunk's group indices relative to the range's first group (-2: another
      // range's row), or the raw indices / maskedM when the call is not tiled; null: no row to compute.
      const groupBufs = wsplit.groups.map(([g0, g1]) => {
        if (grouping === 'none') return undefined;
        if (!tiled) return temp(uploadStorage(ctx, groupIndex!, `${c.op}:groupIndex`));
        const local = new Int32Array(cr);
        let any = false;
        for (let r = 0; r < cr; r++) {
          const g = groupIndex![r0 + r]!;
          local[r] = g >= g0 && g < g1 ? g - g0 : g === -1 ? -1 : -2;
          any ||= local[r]! >= 0;
        }
        return any ? temp(uploadStorage(ctx, local, `${c.op}:groupIndex`)) : null;
      });
      for (const [b0, b1] of bands) {
        const y = temp(emptyStorage(ctx, cr * (b1 - b0) * 4, `${c.op}:out`));
        readbacks.push({ buffer: y, byteLength: cr * (b1 - b0) * 4, r0, r1, c0: b0, c1: b1 });
        for (const [gi, gr] of wsplit.groups.entries()) {
          const gbuf = groupBufs[gi];
          if (gbuf === null) continue;
          for (const nr of wsplit.cols) {
            if (nr[0] < b0 || nr[1] > b1) continue;
            const pn = nr[1] - nr[0];
            const params = temp(uploadParams(ctx, [['u32', cr], ['u32', pn], ['u32', k], ['u32', kb], ['u32', ceilDiv(pn, BLOCK)],
              ['u32', Math.max(1, c.mMax)], ['u32', b1 - b0], ['u32', nr[0] - b0], ['u32', k], ['u32', 0], ['u32', 0], ['u32', gr[1] - gr[0]]], `${c.op}:params`));
            const { b, bScales } = part(gr, nr);
            const buffers = [params, a, b, y];
            for (const e of extras) buffers.push(e === 'aScales' ? aScales! : e === 'bScales' ? bScales! : gbuf!);
            const [gy, gz] = grid(Math.ceil(cr / rb));
            passes.push({ pipeline, buffers, groups: split ? [...grid(cr * pn), 1] : [Math.ceil(pn / GEMM_WG), gy, gz] });
          }
        }
      }
    }
    const got = await runPasses(ctx, c.op, passes, readbacks);
    readbacks.forEach(({ r0, r1, c0, c1 }, i) => {
      const y = new Float32Array(got[i]!);
      const w = c1 - c0;
      for (let r = r0; r < r1; r++) if (c.rowsWritten(r)) out.set(y.subarray((r - r0) * w, (r - r0 + 1) * w), r * n + c0);
    });
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
    op, variant: { a: 'fp8', b: 'fp8', grouping: 'none' }, rows: a.rows, n: b.rows, k: a.cols, mMax: 0, groups: 1,
    a: a.data, aScales: a.scales, b: b.data, bScales: b.scales, rowsWritten: all, out: outBuffer(op, out, a.rows * b.rows),
  });
}

/** Weight-only FP8 (not grouped): y[m, n] = x[m, k] f32 · dequant(B)ᵀ, B with 128x128 scales. */
export async function fp8WeightGemmNt(x: Float32Array, m: number, b: Fp8Matrix, out?: Float32Array): Promise<Float32Array> {
  const op = 'fp8WeightGemmNt';
  checkFp8Matrix(op, 'b', b, '128x128');
  checkX(op, x, m, b.cols);
  return runGemm({
    op, variant: { a: 'f32', b: 'fp8', grouping: 'none' }, rows: m, n: b.rows, k: b.cols, mMax: 0, groups: 1,
    a: x, b: b.data, bScales: b.scales, rowsWritten: all, out: outBuffer(op, out, m * b.rows),
  });
}

export async function mGroupedFp8GemmNtContiguous(a: Fp8Matrix, b: GroupedFp8Weights, mIndices: Int32Array, out?: Float32Array): Promise<Float32Array> {
  const op = 'mGroupedFp8GemmNtContiguous';
  checkFp8Matrix(op, 'a', a, '1x128');
  checkGrouped(op, b, a.cols);
  checkMIndices(op, mIndices, a.rows, b.groups);
  return runGemm({
    op, variant: { a: 'fp8', b: 'fp8', grouping: 'contiguous' }, rows: a.rows, n: b.n, k: b.k, mMax: 0, groups: b.groups,
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
    op, variant: { a: 'fp8', b: 'fp8', grouping: 'masked' }, rows: a.rows, n: b.n, k: b.k, mMax, groups: b.groups,
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
    op, variant: { a: 'f32', b: 'fp8', grouping: 'contiguous' }, rows: m, n: b.n, k: b.k, mMax: 0, groups: b.groups,
    a: x, b: b.data, bScales: b.scales, groupIndex: mIndices, rowsWritten: all, out: outBuffer(op, out, m * b.n),
  });
}

export async function mGroupedFp8WeightGemmNtMasked(x: Float32Array, b: GroupedFp8Weights, maskedM: Int32Array, mMax: number, out?: Float32Array): Promise<Float32Array> {
  const op = 'mGroupedFp8WeightGemmNtMasked';
  checkGrouped(op, b, b.k);
  checkX(op, x, b.groups * mMax, b.k);
  checkMasked(op, maskedM, mMax, b.groups, b.groups * mMax);
  return runGemm({
    op, variant: { a: 'f32', b: 'fp8', grouping: 'masked' }, rows: b.groups * mMax, n: b.n, k: b.k, mMax, groups: b.groups,
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
    op, variant: { a: 'f32', b: 'bf16', grouping: 'contiguous' }, rows: m, n: b.n, k: b.k, mMax: 0, groups: b.groups,
    a: x, b: b.data, groupIndex: mIndices, rowsWritten: all, out: outBuffer(op, out, m * b.n),
  });
}

export async function mGroupedBf16GemmNtMasked(x: Float32Array, b: GroupedBf16Weights, maskedM: Int32Array, mMax: number, out?: Float32Array): Promise<Float32Array> {
  const op = 'mGroupedBf16GemmNtMasked';
  checkGrouped(op, b, b.k);
  checkX(op, x, b.groups * mMax, b.k);
  checkMasked(op, maskedM, mMax, b.groups, b.groups * mMax);
  return runGemm({
    op, variant: { a: 'f32', b: 'bf16', grouping: 'masked' }, rows: b.groups * mMax, n: b.n, k: b.k, mMax, groups: b.groups,
    a: x, b: b.data, groupIndex: maskedM, rowsWritten: maskedRows(maskedM, mMax), out: outBuffer(op, out, b.groups * mMax * b.n),
  });
}

/**
 * y[m, n] = x[m, k] · Wᵀ for a forward-op WeightMatrix (f32 / bf16 / fp8 with 128x128 scaleInv): the
 * kernel behind ops.ts matmul. Shapes are checked by the caller.
 */
export async function weightMatrixGemmNt(x: Float32Array, m: number, w: WeightMatrix, out: Float32Array): Promise<Float32Array> {
  return runGemm({
    op: `matmul:${w.dtype}`, variant: { a: 'f32', b: w.dtype, grouping: 'none' }, rows: m, n: w.rows, k: w.cols, mMax: 0, groups: 1,
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
    op: `groupedMatmul:${w.dtype}`, variant: { a: 'f32', b: w.dtype, grouping: 'contiguous' }, rows: m, n: w.rows, k: w.cols, mMax: 0, groups: w.groups,
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
