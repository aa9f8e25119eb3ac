// GPU-resident ops: tensors stay in GPU buffers between ops, and each op RECORDS its dispatches into a
// GpuRecorder instead of uploading its inputs and reading its output back (ops.ts does that, one submit
// per op). A whole forward pass is recorded and submitted as one command encoder; only what the caller
// asks for (the logits) is read back, once, at the end (GpuRecorder.finish).
//
// - GpuTensor: one GPU storage buffer of 32-bit elements (f32, or i32 for ids and plans), bound whole.
//   Ops address column blocks of wider tensors through stride/offset parameters, so the forward needs no
//   host-side gather/scatter. A tensor must fit one binding (maxStorageBufferBindingSize); activations that
//   do not are refused with WebGpuLimitError. Paged cache layers are split into parts of whole blocks
//   (GpuCacheLayer; scatterRows and flashMla handle the parts), weights into parts as below.
// - GpuWeight: a WeightMatrix / GroupedWeight uploaded once in its stored format (FP8 one byte per
//   parameter packed in u32 words with its f32 128x128 scales beside it, BF16 two bytes, f32), split into
//   parts that fit the binding limit (split.ts planWeightSplit: whole groups, else 128-row ranges of one
//   group), each part its own resident buffer (buffers.ts residentPart, the same parts ops.ts matmul uses).
// - Every pipeline comes from the per-device cache (pipelines.ts); uniform parameter blocks and per-call
//   index uploads are temporaries of the recorder, destroyed after the submit.
// Kernels know nothing of models: these are matrices, rows, indices, a gate and a paged cache.
import { FP8_BLOCK, type GroupedWeight, type WeightMatrix } from '../api.ts';
import { getMlaMetadata, numSmParts, validateMetadata } from '../flashmla/metadata.ts';
import { MLA_BLOCK_SIZE } from '../flashmla/types.ts';
import { emptyStorage, paddedSize, residentPart, uploadStorage, type ParamField } from './buffers.ts';
import { checkDevice, getDevice, type GpuContext } from './device.ts';
import { gatherPart, useSplitK } from './deepgemm.ts';
import { mlaCombineWgsl, mlaKey, mlaMainWgsl, mlaRowsPerGroup, MLA_WG, type MlaVariant } from './flashmla-shaders.ts';
import { GEMM_WG, gemmKey, gemmRowBlock, gemmWgsl, type GemmVariant } from './gemm-shaders.ts';
import { ELEM_WG, ropeWgsl, siluMulWgsl } from './op-shaders.ts';
import { getPipeline, runPasses, type Pass } from './pipelines.ts';
import {
  addWgsl, combineExpertsWgsl, copy2dWgsl, embedWgsl, expertPlanWgsl, gateKey, gatherRowsWgsl, moeGateWgsl, rmsNormStridedWgsl,
  scatterRowsWgsl, type GateVariant,
} from './resident-shaders.ts';
import { planWeightSplit, sizeLimits, tooLarge, type Range, type WeightSplit } from './split.ts';
import { grid } from './wgsl.ts';

/** A GPU buffer of `length` 32-bit elements (f32 or i32), resident across ops. */
export interface GpuTensor {
  readonly buffer: GPUBuffer;
  readonly length: number;
  readonly label: string;
}

/** Allocates a zeroed resident tensor of `length` 32-bit elements (refused beyond one binding). */
export function gpuTensor(ctx: GpuContext, length: number, label: string): GpuTensor {
  const lim = sizeLimits(ctx);
  if (paddedSize(length * 4) > lim.storage) throw tooLarge(lim, label, 'a resident activation or cache tensor', length * 4);
  return { buffer: emptyStorage(ctx, length * 4, label), length, label };
}

/** A resident tensor holding a copy of `data` (f32 or i32). */
export function gpuTensorFrom(ctx: GpuContext, data: Float32Array | Int32Array, label: string): GpuTensor {
  return { buffer: uploadStorage(ctx, data, label), length: data.length, label };
}

/**
 * Named resident tensors reused by every forward, grown geometrically (like the CPU forward's Workspace).
 * Contents are valid until the next `get` of the same name in a later recorded op.
 */
export class GpuWorkspace {
  readonly #bufs = new Map<string, GpuTensor>();
  constructor(private readonly ctx: GpuContext) {}

  get(name: string, n: number): GpuTensor {
    const b = this.#bufs.get(name);
    if (b && b.length >= n) return b;
    // Geometric growth, but never past one binding for what fits one (gpuTensor refuses what does not).
    const cap = Math.max(n, Math.min(Math.max(2 * (b?.length ?? 0), 256), Math.floor(sizeLimits(this.ctx).storage / 4)));
    // The old buffer may still be used by recorded, unsubmitted work: destroy it only after that submit.
    if (b) this.#retired.push(b.buffer);
    const t = gpuTensor(this.ctx, cap, `ws:${name}`);
    this.#bufs.set(name, t);
    return t;
  }

  readonly #retired: GPUBuffer[] = [];
  /** Destroys buffers replaced by larger ones (call after a submit). */
  collect(): void {
    for (const b of this.#retired.splice(0)) b.destroy();
  }

  destroy(): void {
    this.collect();
    for (const t of this.#bufs.values()) t.buffer.destroy();
    this.#bufs.clear();
  }
}

/**
 * Records dispatches for one submit. Ops append passes; `finish` submits them in one command encoder
 * (one compute pass per dispatch, so each sees the previous one's writes) and reads back the requested
 * tensors. Temporaries (parameter blocks, per-call uploads) are destroyed after the submit.
 */
export class GpuRecorder {
  readonly passes: Pass[] = [];
  readonly #temps: GPUBuffer[] = [];
  /** Every dispatch's uniform block, placed in ONE buffer made at finish (at the offset alignment). */
  readonly #params: { binding: { buffer: GPUBuffer; offset: number; size: number }; fields: readonly ParamField[] }[] = [];
  #paramBytes = 0;
  constructor(readonly ctx: GpuContext, readonly label: string) {}

  /**
   * A uniform parameter block (scalar fields in declaration order, 4 bytes each, padded to 16): a range of
   * the recorder's shared parameter buffer, so a forward of thousands of dispatches makes one buffer.
   */
  params(fields: readonly ParamField[], _label: string): GPUBufferBinding {
    const align = this.ctx.limits.minUniformBufferOffsetAlignment ?? 256;
    const size = Math.max(16, Math.ceil((fields.length * 4) / 16) * 16);
    const offset = Math.ceil(this.#paramBytes / align) * align;
    this.#paramBytes = offset + size;
    const binding = { buffer: null as unknown as GPUBuffer, offset, size };
    this.#params.push({ binding, fields });
    return binding;
  }

  /** Makes the shared parameter buffer and points every recorded block at it. */
  #writeParams(): void {
    if (this.#params.length === 0) return;
    const buf = this.ctx.device.createBuffer({ label: `${this.label}:params`, size: Math.ceil(this.#paramBytes / 16) * 16, mappedAtCreation: true, usage: GPUBufferUsage.UNIFORM });
    const dv = new DataView(buf.getMappedRange());
    for (const { binding, fields } of this.#params) {
      fields.forEach(([t, v], i) => {
        const o = binding.offset + i * 4;
        if (t === 'u32') dv.setUint32(o, v >>> 0, true);
        else if (t === 'i32') dv.setInt32(o, v | 0, true);
        else dv.setFloat32(o, v, true);
      });
      binding.buffer = buf;
    }
    buf.unmap();
    this.#temps.push(buf);
  }

  /** A per-call input (ids, tables): uploaded with the submit, destroyed after it. */
  upload(data: Float32Array | Int32Array, label: string): GpuTensor {
    const t = gpuTensorFrom(this.ctx, data, label);
    this.#temps.push(t.buffer);
    return t;
  }

  /** A per-call scratch tensor, destroyed after the submit. */
  scratch(length: number, label: string): GpuTensor {
    const t = gpuTensor(this.ctx, Math.max(1, length), label);
    this.#temps.push(t.buffer);
    return t;
  }

  dispatch(pipeline: GPUComputePipeline, buffers: readonly (GPUBuffer | GPUBufferBinding)[], groups: readonly [number, number?, number?]): void {
    this.passes.push({ pipeline, buffers, groups });
  }

  /** Submits everything recorded and returns the bytes of `reads` (first `length` elements of each). */
  async finish(reads: readonly { tensor: GpuTensor; length: number }[] = []): Promise<ArrayBuffer[]> {
    try {
      checkDevice(this.ctx);
      this.#writeParams();
      return await runPasses(this.ctx, this.label, this.passes, reads.map((r) => ({ buffer: r.tensor.buffer, byteLength: r.length * 4 })));
    } finally {
      for (const b of this.#temps.splice(0)) b.destroy();
      this.passes.length = 0;
      this.#params.length = 0;
      this.#paramBytes = 0;
    }
  }
}

/** Opens the process's device and a recorder on it. */
export async function gpuRecorder(label: string): Promise<GpuRecorder> {
  return new GpuRecorder(await getDevice(), label);
}

// ------------------------------------------------------------------ weights

/** A weight uploaded once: its parts (split.ts) as resident buffers. */
export interface GpuWeight {
  readonly dtype: 'f32' | 'bf16' | 'fp8';
  readonly groups: number;
  /** N (output rows) and K of each group. */
  readonly rows: number;
  readonly cols: number;
  readonly split: WeightSplit;
  /** Keyed `${g0}-${g1}:${n0}-${n1}`. */
  readonly parts: ReadonlyMap<string, { b: GPUBuffer; bScales?: GPUBuffer }>;
}

/** GPU bytes a weight's parts hold: its stored elements (FP8 one byte each) and its scales. */
export function gpuWeightBytes(w: GpuWeight): { data: number; scales: number } {
  let data = 0, scales = 0;
  for (const p of w.parts.values()) { data += p.b.size; scales += p.bScales?.size ?? 0; }
  return { data, scales };
}

const ELEM_BYTES = { f32: 4, bf16: 2, fp8: 1 } as const;
const partKey = (gr: Range, nr: Range) => `${gr[0]}-${gr[1]}:${nr[0]}-${nr[1]}`;

/**
 * Uploads a weight (or stacked weights) once, split to the storage limits; the parts are resident,
 * keyed by the data array (so the host array must not change afterwards).
 */
export function uploadWeight(ctx: GpuContext, w: WeightMatrix | GroupedWeight, label: string): GpuWeight {
  const groups = 'groups' in w ? w.groups : 1;
  const n = w.rows, k = w.cols;
  const fp8 = w.dtype === 'fp8';
  const kb = Math.ceil(k / FP8_BLOCK);
  const split = planWeightSplit({ tensor: label, groups, n, k, elemBytes: ELEM_BYTES[w.dtype], blockScaled: fp8 }, sizeLimits(ctx));
  const parts = new Map<string, { b: GPUBuffer; bScales?: GPUBuffer }>();
  for (const gr of split.groups) {
    for (const nr of split.cols) {
      const key = partKey(gr, nr);
      const whole = gr[0] === 0 && gr[1] === groups && nr[0] === 0 && nr[1] === n;
      const suffix = whole ? '' : `[${gr[0]}:${gr[1]}, ${nr[0]}:${nr[1]}]`;
      const b = residentPart(ctx, w.data, key, () => gatherPart(w.data, n, k, gr, nr), `${label}${suffix}`);
      const bScales = fp8
        ? residentPart(ctx, w.scaleInv, key, () => gatherPart(w.scaleInv, Math.ceil(n / FP8_BLOCK), kb, gr, [nr[0] / FP8_BLOCK, Math.ceil(nr[1] / FP8_BLOCK)]), `${label}:scales${suffix}`)
        : undefined;
      parts.set(key, bScales ? { b, bScales } : { b });
    }
  }
  return { dtype: w.dtype, groups, rows: n, cols: k, split, parts };
}

/** A vector (norm weights, router bias) as a resident f32 tensor, keyed by its array. */
export function uploadVector(ctx: GpuContext, v: Float32Array, label: string): GpuTensor {
  return { buffer: residentPart(ctx, v, 'vec', () => v, label), length: v.length, label };
}

// ------------------------------------------------------------------ ops

function elemGroups(n: number): [number, number] {
  return grid(Math.ceil(n / ELEM_WG));
}

function need(op: string, t: GpuTensor, elems: number): void {
  if (t.length < elems) throw new RangeError(`${op}: tensor ${t.label} has ${t.length} elements, needs ${elems}`);
}

export interface GemmArgs {
  /** Activations: row r of A is a[r·lda + a0 .. + K). */
  a: GpuTensor; lda?: number; a0?: number;
  rows: number;
  w: GpuWeight;
  /** Output: row r, column j at out[r·ldo + n0 + j]. */
  out: GpuTensor; ldo?: number; n0?: number;
  /** Grouped weights: per-row group (contiguous layout; -1 rows written 0). */
  groupIndex?: GpuTensor;
}

/** y = x · Wᵀ (f32 accumulation, FP8/BF16 decoded in the kernel, per-128-K promotion as DeepGEMM). */
export async function gemm(rec: GpuRecorder, g: GemmArgs): Promise<void> {
  const { w, rows } = g;
  const n = w.rows, k = w.cols;
  const lda = g.lda ?? k, a0 = g.a0 ?? 0, ldo = g.ldo ?? n, n0 = g.n0 ?? 0;
  if (rows === 0 || n === 0) return;
  need('gemm', g.a, (rows - 1) * lda + a0 + k);
  need('gemm', g.out, (rows - 1) * ldo + n0 + n);
  const grouped = w.groups > 1 || g.groupIndex !== undefined;
  if (grouped && !g.groupIndex) throw new RangeError('gemm: grouped weights need a group index');
  // Split-K (a workgroup per output, coalesced weight reads) for decode-sized rows on GPUs; direct on CPU
  // adapters and for larger row counts (deepgemm.ts useSplitK, the same choice as the per-op GEMMs).
  const split = useSplitK(rec.ctx, rows);
  const v0: GemmVariant = { a: 'f32', b: w.dtype, grouping: grouped ? 'contiguous' : 'none', k4: k % 4 === 0, split };
  const rb = gemmRowBlock(v0, rows);
  const v: GemmVariant = { ...v0, rowBlock: rb };
  const pipeline = await getPipeline(rec.ctx, gemmKey(v), () => gemmWgsl(v));
  const kb = Math.ceil(k / FP8_BLOCK);
  for (const gr of w.split.groups) {
    for (const nr of w.split.cols) {
      const part = w.parts.get(partKey(gr, nr))!;
      const pn = nr[1] - nr[0];
      const params = rec.params([['u32', rows], ['u32', pn], ['u32', k], ['u32', kb], ['u32', Math.ceil(pn / FP8_BLOCK)],
        ['u32', 1], ['u32', ldo], ['u32', n0 + nr[0]], ['u32', lda], ['u32', a0], ['u32', gr[0]], ['u32', gr[1] - gr[0]]], 'gemm:params');
      const buffers = [params, g.a.buffer, part.b, g.out.buffer];
      if (w.dtype === 'fp8') buffers.push(part.bScales!);
      if (grouped) buffers.push(g.groupIndex!.buffer);
      const [gy, gz] = grid(Math.ceil(rows / rb));
      rec.dispatch(pipeline, buffers, split ? [...grid(rows * pn), 1] : [Math.ceil(pn / GEMM_WG), gy, gz]);
    }
  }
}

/** RMSNorm of column block [xo, xo + cols) of rows of x (stride xs) into y (stride ys, offset yo); y may be x. */
export async function rmsNorm(rec: GpuRecorder, x: GpuTensor, rows: number, w: GpuTensor, eps: number,
  y: GpuTensor, s: { xs?: number; xo?: number; ys?: number; yo?: number } = {}): Promise<void> {
  const cols = w.length;
  const xs = s.xs ?? cols, xo = s.xo ?? 0, ys = s.ys ?? cols, yo = s.yo ?? 0;
  if (rows === 0) return;
  need('rmsNorm', x, (rows - 1) * xs + xo + cols);
  need('rmsNorm', y, (rows - 1) * ys + yo + cols);
  const inPlace = x.buffer === y.buffer;
  if (inPlace && (xs !== ys || xo !== yo)) throw new RangeError('rmsNorm: in place needs the same stride and offset');
  const pipeline = await getPipeline(rec.ctx, `resident:rmsNorm:${inPlace ? 'inplace' : 'copy'}`, () => rmsNormStridedWgsl(inPlace));
  const params = rec.params([['u32', rows], ['u32', cols], ['f32', eps], ['u32', xs], ['u32', xo], ['u32', ys], ['u32', yo], ['u32', 0]], 'rmsNorm:params');
  rec.dispatch(pipeline, inPlace ? [params, x.buffer, w.buffer] : [params, x.buffer, w.buffer, y.buffer], grid(rows));
}

/** RoPE in place on interleaved pairs (KernelOps.rope semantics); cos/sin are [rows, dim/2]. */
export async function rope(rec: GpuRecorder, x: GpuTensor, rows: number, stride: number, offset: number, dim: number, cos: GpuTensor, sin: GpuTensor): Promise<void> {
  const half = dim / 2;
  if (rows === 0 || half === 0) return;
  need('rope', x, (rows - 1) * stride + offset + dim);
  need('rope', cos, rows * half);
  const pipeline = await getPipeline(rec.ctx, 'rope', ropeWgsl);
  const params = rec.params([['u32', rows], ['u32', stride], ['u32', offset], ['u32', half]], 'rope:params');
  rec.dispatch(pipeline, [params, x.buffer, cos.buffer, sin.buffer], elemGroups(rows * half));
}

/** y = silu(gate) · up over n elements. */
export async function siluMul(rec: GpuRecorder, gate: GpuTensor, up: GpuTensor, y: GpuTensor, n: number): Promise<void> {
  if (n === 0) return;
  need('siluMul', gate, n); need('siluMul', up, n); need('siluMul', y, n);
  const pipeline = await getPipeline(rec.ctx, 'siluMul', siluMulWgsl);
  rec.dispatch(pipeline, [rec.params([['u32', n], ['u32', 0], ['u32', 0], ['u32', 0]], 'siluMul:params'), gate.buffer, up.buffer, y.buffer], elemGroups(n));
}

/** x += y over n elements. */
export async function addInPlace(rec: GpuRecorder, x: GpuTensor, y: GpuTensor, n: number): Promise<void> {
  if (n === 0) return;
  need('add', x, n); need('add', y, n);
  const pipeline = await getPipeline(rec.ctx, 'resident:add', addWgsl);
  rec.dispatch(pipeline, [rec.params([['u32', n], ['u32', 0], ['u32', 0], ['u32', 0]], 'add:params'), x.buffer, y.buffer], elemGroups(n));
}

/** dst[r·ds + dOff + c] = src[r·ss + sOff + c] for r < rows, c < n (src and dst distinct tensors). */
export async function copy2d(rec: GpuRecorder, src: GpuTensor, ss: number, sOff: number, dst: GpuTensor, ds: number, dOff: number, rows: number, n: number): Promise<void> {
  if (rows === 0 || n === 0) return;
  need('copy2d', src, (rows - 1) * ss + sOff + n);
  need('copy2d', dst, (rows - 1) * ds + dOff + n);
  const pipeline = await getPipeline(rec.ctx, 'resident:copy2d', copy2dWgsl);
  const params = rec.params([['u32', rows], ['u32', n], ['u32', ss], ['u32', sOff], ['u32', ds], ['u32', dOff], ['u32', 0], ['u32', 0]], 'copy2d:params');
  rec.dispatch(pipeline, [params, src.buffer, dst.buffer], elemGroups(rows * n));
}

/** dst[r, :] = src[idx[r], :] for r < rows (rows of `width`). */
export async function gatherRows(rec: GpuRecorder, src: GpuTensor, idx: GpuTensor, rows: number, width: number, dst: GpuTensor): Promise<void> {
  if (rows === 0 || width === 0) return;
  need('gatherRows', idx, rows); need('gatherRows', dst, rows * width);
  const pipeline = await getPipeline(rec.ctx, 'resident:gatherRows', gatherRowsWgsl);
  rec.dispatch(pipeline, [rec.params([['u32', rows], ['u32', width], ['u32', 0], ['u32', 0]], 'gatherRows:params'), src.buffer, idx.buffer, dst.buffer], elemGroups(rows * width));
}

/**
 * dst[idx[r], :] = src[r, :] for r < rows (distinct indices; e.g. latent rows into cache slots). `dst` may
 * be several parts, part j holding rows [j·perPart, (j+1)·perPart) (a paged cache split to the binding
 * limit): one dispatch per part, each writing the rows that fall in it.
 */
export async function scatterRows(rec: GpuRecorder, src: GpuTensor, idx: GpuTensor, rows: number, width: number,
  dst: GpuTensor | { parts: readonly GpuTensor[]; perPart: number }): Promise<void> {
  if (rows === 0 || width === 0) return;
  need('scatterRows', src, rows * width); need('scatterRows', idx, rows);
  const pipeline = await getPipeline(rec.ctx, 'resident:scatterRows', scatterRowsWgsl);
  const parts = 'parts' in dst ? dst.parts : [dst];
  const per = 'parts' in dst ? dst.perPart : Math.floor(dst.length / width);
  parts.forEach((part, j) => {
    const params = rec.params([['u32', rows], ['u32', width], ['u32', j * per], ['u32', (j + 1) * per]], 'scatterRows:params');
    rec.dispatch(pipeline, [params, src.buffer, idx.buffer, part.buffer], elemGroups(rows * width));
  });
}

/**
 * One layer of a paged latent cache on the GPU, [numBlocks, 64, 1, rowDim] f32, in parts of whole blocks
 * that each fit one binding (part j holds blocks [j·blocksPerPart, ...)).
 */
export interface GpuCacheLayer {
  readonly parts: readonly GpuTensor[];
  readonly blocksPerPart: number;
  readonly numBlocks: number;
  readonly rowDim: number;
}

/** Allocates a zeroed cache layer, split into parts of whole 64-token blocks at the storage limit. */
export function gpuCacheLayer(ctx: GpuContext, numBlocks: number, rowDim: number, label: string): GpuCacheLayer {
  const lim = sizeLimits(ctx);
  const blockElems = MLA_BLOCK_SIZE * rowDim;
  if (blockElems * 4 > lim.storage) throw tooLarge(lim, label, 'one 64-token cache block', blockElems * 4);
  const per = Math.min(numBlocks, Math.floor(lim.storage / (blockElems * 4)));
  const parts: GpuTensor[] = [];
  for (let lo = 0; lo < numBlocks; lo += per) parts.push(gpuTensor(ctx, Math.min(per, numBlocks - lo) * blockElems, `${label}[${lo}:${Math.min(numBlocks, lo + per)}]`));
  return { parts, blocksPerPart: per, numBlocks, rowDim };
}

/** out[t, :] = rows ids[t] of an f32/bf16 table (a GpuWeight of one group), widened to f32. */
export async function embedRows(rec: GpuRecorder, table: GpuWeight, ids: GpuTensor, rows: number, out: GpuTensor): Promise<void> {
  if (table.dtype === 'fp8' || table.groups !== 1) throw new RangeError('embedRows: the table must be one f32 or bf16 matrix');
  const width = table.cols;
  if (rows === 0) return;
  need('embedRows', out, rows * width);
  const dt = table.dtype;
  const pipeline = await getPipeline(rec.ctx, `resident:embed:${dt}`, () => embedWgsl(dt));
  for (const nr of table.split.cols) {
    const part = table.parts.get(partKey(table.split.groups[0]!, nr))!;
    const params = rec.params([['u32', rows], ['u32', width], ['u32', nr[0]], ['u32', nr[1]]], 'embed:params');
    rec.dispatch(pipeline, [params, part.b, ids.buffer, out.buffer], elemGroups(rows * width));
  }
}

/** DeepSeek MoE gate parameters beyond the compile-time variant. */
export interface GateArgs {
  variant: GateVariant;
  /** Normalise the chosen weights to sum 1 before `mul`. */
  norm: boolean;
  mul: number;
}

/** Router logits [T, E] -> experts [T, k] (i32) and weights [T, k] (see resident-shaders.ts moeGateWgsl). */
export async function moeGate(rec: GpuRecorder, logits: GpuTensor, rows: number, bias: GpuTensor | null, g: GateArgs, experts: GpuTensor, weights: GpuTensor): Promise<void> {
  const v = g.variant;
  if (rows === 0) return;
  if (v.experts % Math.max(1, v.groups) !== 0) throw new RangeError(`moeGate: ${v.experts} experts do not split into ${v.groups} groups`);
  if (v.bias !== (bias !== null)) throw new RangeError('moeGate: bias tensor and variant disagree');
  need('moeGate', logits, rows * v.experts); need('moeGate', experts, rows * v.k); need('moeGate', weights, rows * v.k);
  const pipeline = await getPipeline(rec.ctx, gateKey(v), () => moeGateWgsl(v));
  const params = rec.params([['u32', rows], ['u32', g.norm ? 1 : 0], ['f32', g.mul], ['u32', 0]], 'moeGate:params');
  const io = bias ? [logits.buffer, bias.buffer] : [logits.buffer];
  rec.dispatch(pipeline, [params, ...io, experts.buffer, weights.buffer], grid(Math.ceil(rows / 64)));
}

/** Counting sort of `assignments` = T·k expert ids by expert (see resident-shaders.ts expertPlanWgsl). */
export async function expertPlan(rec: GpuRecorder, idx: GpuTensor, assignments: number, k: number, experts: number,
  rowToken: GpuTensor, rowExpert: GpuTensor, rowOf: GpuTensor): Promise<void> {
  if (assignments === 0) return;
  need('expertPlan', idx, assignments);
  for (const t of [rowToken, rowExpert, rowOf]) need('expertPlan', t, assignments);
  const pipeline = await getPipeline(rec.ctx, `resident:expertPlan:e${experts}`, () => expertPlanWgsl(experts));
  const params = rec.params([['u32', assignments], ['u32', k], ['u32', 0], ['u32', 0]], 'expertPlan:params');
  rec.dispatch(pipeline, [params, idx.buffer, rowToken.buffer, rowExpert.buffer, rowOf.buffer], [1]);
}

/** out[t, :] = Σ_j w[t, j] · y[rowOf[t·k + j], :] (ascending row order). */
export async function combineExperts(rec: GpuRecorder, y: GpuTensor, w: GpuTensor, rowOf: GpuTensor, rows: number, width: number, k: number, out: GpuTensor): Promise<void> {
  if (rows === 0) return;
  need('combineExperts', out, rows * width); need('combineExperts', w, rows * k);
  const pipeline = await getPipeline(rec.ctx, 'resident:combineExperts', combineExpertsWgsl);
  const params = rec.params([['u32', rows], ['u32', width], ['u32', k], ['u32', 0]], 'combineExperts:params');
  rec.dispatch(pipeline, [params, y.buffer, w.buffer, rowOf.buffer, out.buffer], elemGroups(rows * width));
}

export interface ResidentMlaArgs {
  /** [b, sQ, hQ, dQK] queries (one kv head, absorbed MLA). */
  q: GpuTensor;
  batch: number; seqLenQ: number; numHeadsQ: number;
  /** One cache layer [numBlocks, 64, 1, dQK] f32, possibly in parts (gpuCacheLayer). */
  kCache: GpuCacheLayer; dQK: number;
  /** [b, maxBlocks] block ids and [b] keys per request (host: they plan the split-KV schedule). */
  blockTable: Int32Array; cacheSeqlens: Int32Array;
  dV: number; softmaxScale: number; causal: boolean;
  /** [b, sQ, hQ, dV]. */
  out: GpuTensor;
}

/** Split parts the GPU scheduler uses (as flashmla.ts VIRTUAL_SMS). */
const VIRTUAL_SMS = 16;

/**
 * FlashMLA over a resident cache layer (flashmla.ts's kernels, same schedule: getMlaMetadata work items,
 * split requests merged by the LSE combine), recorded rather than submitted. A layer in several parts is
 * handled as flashmla.ts does: a work item becomes one sub-item per part its blocks touch, one main
 * dispatch per part (blocks of other parts skipped), and a request with several sub-items is merged by
 * the combine (equal to unsplit within f32 rounding). One request chunk: q, out and the partials must each
 * fit one binding (WebGpuLimitError otherwise).
 */
export async function flashMla(rec: GpuRecorder, a: ResidentMlaArgs): Promise<void> {
  const { batch: b, seqLenQ: sQ, numHeadsQ: hQ, dQK, dV } = a;
  if (b === 0) return;
  const hKv = 1, g = hQ, rows = sQ * g;
  const maxBlocks = a.blockTable.length / b;
  if (!Number.isInteger(maxBlocks)) throw new RangeError('flashMla: block table is not [b, maxBlocks]');
  need('flashMla', a.q, b * sQ * hQ * dQK);
  need('flashMla', a.out, b * sQ * hQ * dV);
  const cache = a.kCache;
  if (cache.rowDim !== dQK) throw new RangeError(`flashMla: cache rows of ${cache.rowDim} values, dQK ${dQK}`);
  const ctx = rec.ctx;
  const meta = getMlaMetadata(a.cacheSeqlens, rows, hKv, numSmParts(VIRTUAL_SMS, rows / hKv, hKv));
  const items = validateMetadata(meta, a.cacheSeqlens);
  const per = cache.blocksPerPart;
  // Sub-items: each work item once per cache part its used blocks touch (in part order).
  const subs: { bi: number; part: number; begin: number; end: number }[] = [];
  for (const it of items) {
    const bi = it.batchIdx;
    const used = Math.min(it.blockEnd, Math.ceil(a.cacheSeqlens[bi]! / MLA_BLOCK_SIZE));
    const touched = new Set<number>();
    for (let j = it.blockBegin; j < used; j++) {
      const block = a.blockTable[bi * maxBlocks + j]!;
      if (!(block >= 0 && block < cache.numBlocks)) throw new RangeError(`flashMla: block id ${block} outside [0, ${cache.numBlocks})`);
      touched.add(Math.floor(block / per));
    }
    if (touched.size === 0) touched.add(0); // no keys: still writes the row's empty result
    for (const part of [...touched].sort((x, y) => x - y)) subs.push({ bi, part, begin: it.blockBegin, end: it.blockEnd });
  }
  const perReq = new Int32Array(b);
  for (const s of subs) perReq[s.bi]!++;
  const numSplits = new Int32Array(b + 1);
  for (let i = 0; i < b; i++) numSplits[i + 1] = numSplits[i]! + (perReq[i]! > 1 ? perReq[i]! : 0);
  const seen = new Int32Array(b);
  const byPart = new Map<number, number[]>();
  for (const s of subs) {
    const slot = perReq[s.bi]! > 1 ? numSplits[s.bi]! + seen[s.bi]! : -1;
    seen[s.bi]!++;
    const l = byPart.get(s.part) ?? [];
    l.push(s.bi, s.begin, s.end, slot);
    byPart.set(s.part, l);
  }
  const slots = numSplits[b]!;
  const R = mlaRowsPerGroup(dQK, ctx.limits.maxComputeWorkgroupStorageSize);
  const v: MlaVariant = { dtype: 'f32', dQK, dpt: Math.ceil(dV / MLA_WG), rowsPerGroup: R };
  const main = await getPipeline(ctx, mlaKey(v), () => mlaMainWgsl(v));
  const combine = await getPipeline(ctx, 'flashmla:combine', mlaCombineWgsl);
  const tiles = Math.ceil(rows / R);
  const fields = (numItems: number, blo: number, bhi: number): ParamField[] => [
    ['u32', b], ['u32', sQ], ['u32', hQ], ['u32', hKv],
    ['u32', g], ['u32', rows], ['u32', dQK], ['u32', dV],
    ['u32', maxBlocks], ['u32', a.causal && sQ > 1 ? 1 : 0], ['f32', a.softmaxScale], ['u32', numItems],
    ['u32', tiles], ['u32', 0], ['u32', 0], ['u32', 0],
    ['f32', Infinity], ['f32', -Infinity], ['u32', blo], ['u32', bhi],
  ];
  const lse = rec.scratch(b * hQ * sQ, 'flashmla:lse');
  const oAcc = rec.scratch(slots * hKv * rows * dV, 'flashmla:oAcc');
  const lseAcc = rec.scratch(slots * hKv * rows, 'flashmla:lseAcc');
  const table = rec.upload(a.blockTable, 'flashmla:blockTable');
  const seqlens = rec.upload(a.cacheSeqlens, 'flashmla:seqlens');
  for (const [part, list] of [...byPart].sort(([x], [y]) => x - y)) {
    const n = list.length / 4;
    const itemsT = rec.upload(Int32Array.from(list), 'flashmla:items');
    const blo = part * per, bhi = Math.min(cache.numBlocks, blo + per);
    rec.dispatch(main, [rec.params(fields(n, blo, bhi), 'flashmla:params'), a.q.buffer, cache.parts[part]!.buffer, table.buffer, seqlens.buffer,
      itemsT.buffer, a.out.buffer, lse.buffer, oAcc.buffer, lseAcc.buffer], grid(n * hKv * tiles));
  }
  if (slots > 0) {
    const ns = rec.upload(numSplits, 'flashmla:numSplits');
    rec.dispatch(combine, [rec.params(fields(0, 0, 0), 'flashmla:params'), ns.buffer, oAcc.buffer, lseAcc.buffer, a.out.buffer, lse.buffer], grid(b * hKv * rows));
  }
}

