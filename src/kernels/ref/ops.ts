// The `ref` backend: plain TypeScript implementations of every op in KernelOps (src/kernels/api.ts).
// It is the oracle every other backend is tested against, so clarity beats speed here — but the hot
// loop (matmul) still decodes each weight row once per call and reuses it for all M activation rows,
// so BF16/FP8 weights are never widened as a whole matrix.
// Reference for FP8 block dequantisation: deepseek-ai/DeepSeek-V3 inference/kernel.py `weight_dequant`
// (weight[i, j] = e4m3fn(q[i, j]) * scale_inv[i // 128, j // 128]).
import { FP8_E4M3_TABLE } from '../../tensor/dtypes.ts';
import {
  FP8_BLOCK, groupSlice, type GroupedWeight, type GroupSegments, type KernelOps, type StridedAt, type TopK, type WeightDType, type WeightMatrix,
} from '../api.ts';

export class KernelShapeError extends Error {
  override name = 'KernelShapeError';
  constructor(readonly op: string, message: string) {
    super(`${op}: ${message}`);
  }
}

/** Throws a KernelShapeError unless an argument has the expected length (shared by every CPU backend). */
export function need(op: string, what: string, got: number, want: number): void {
  if (got !== want) throw new KernelShapeError(op, `${what} has length ${got}, expected ${want}`);
}

/** The output buffer: `out` checked for length, or a fresh one. */
export function dest(op: string, out: Float32Array | undefined, n: number): Float32Array {
  if (!out) return new Float32Array(n);
  need(op, 'out', out.length, n);
  return out;
}

export function allocWeight(dtype: WeightDType, rows: number, cols: number): WeightMatrix {
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows <= 0 || cols <= 0) {
    throw new KernelShapeError('allocWeight', `bad shape [${rows}, ${cols}]`);
  }
  const n = rows * cols;
  switch (dtype) {
    case 'f32': return { dtype, rows, cols, data: new Float32Array(n) };
    case 'bf16': return { dtype, rows, cols, data: new Uint16Array(n) };
    case 'fp8': {
      const sr = Math.ceil(rows / FP8_BLOCK);
      const sc = Math.ceil(cols / FP8_BLOCK);
      return { dtype, rows, cols, data: new Uint8Array(n), scaleInv: new Float32Array(sr * sc) };
    }
    default: throw new KernelShapeError('allocWeight', `unknown weight dtype ${String(dtype)}`);
  }
}

/**
 * Writes row `n` of W, dequantised to f32, into `row` (length K). f32 rows are returned as views.
 * FP8: each value is the f32 product table[q] * scale, exactly as the reference's weight_dequant.
 */
export function decodeWeightRow(w: WeightMatrix, n: number, row: Float32Array): Float32Array {
  const K = w.cols;
  const off = n * K;
  switch (w.dtype) {
    case 'f32': return w.data.subarray(off, off + K);
    case 'bf16': {
      const bits = new Uint32Array(row.buffer, row.byteOffset, K);
      const d = w.data;
      for (let k = 0; k < K; k++) bits[k] = d[off + k]! << 16;
      return row;
    }
    case 'fp8': {
      const d = w.data;
      const scaleCols = Math.ceil(K / FP8_BLOCK);
      const srow = Math.floor(n / FP8_BLOCK) * scaleCols;
      for (let b = 0; b < scaleCols; b++) {
        const s = w.scaleInv[srow + b]!;
        const end = Math.min(K, (b + 1) * FP8_BLOCK);
        for (let k = b * FP8_BLOCK; k < end; k++) row[k] = FP8_E4M3_TABLE[d[off + k]!]! * s;
      }
      return row;
    }
  }
}

// Reusable scratch row for decoding weights (grown on demand; ops are synchronous).
let scratch = new Float32Array(1024);
function scratchRow(k: number): Float32Array {
  if (scratch.length < k) scratch = new Float32Array(k);
  return scratch.subarray(0, k);
}

export function matmul(x: Float32Array, m: number, w: WeightMatrix, out?: Float32Array): Float32Array {
  const N = w.rows;
  const K = w.cols;
  need('matmul', 'x', x.length, m * K);
  need('matmul', 'w.data', w.data.length, N * K);
  const y = dest('matmul', out, m * N);
  const buf = scratchRow(K);
  const K4 = K - (K % 4);
  for (let n = 0; n < N; n++) {
    const r = decodeWeightRow(w, n, buf);
    for (let i = 0; i < m; i++) {
      const xo = i * K;
      // Four partial sums in f64 (JS numbers): at least as accurate as an f32 accumulator.
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      let k = 0;
      for (; k < K4; k += 4) {
        a0 += x[xo + k]! * r[k]!;
        a1 += x[xo + k + 1]! * r[k + 1]!;
        a2 += x[xo + k + 2]! * r[k + 2]!;
        a3 += x[xo + k + 3]! * r[k + 3]!;
      }
      for (; k < K; k++) a0 += x[xo + k]! * r[k]!;
      y[i * N + n] = a0 + a1 + a2 + a3;
    }
  }
  return y;
}

/** Element counts of a grouped weight's data and FP8 scales; throws on a bad shape. */
export function groupedSizes(op: string, groups: number, rows: number, cols: number): { data: number; scales: number } {
  if (![groups, rows, cols].every((v) => Number.isSafeInteger(v) && v > 0)) {
    throw new KernelShapeError(op, `bad grouped shape [${groups}, ${rows}, ${cols}]`);
  }
  return { data: groups * rows * cols, scales: groups * Math.ceil(rows / FP8_BLOCK) * Math.ceil(cols / FP8_BLOCK) };
}

export function allocGroupedWeight(dtype: WeightDType, groups: number, rows: number, cols: number): GroupedWeight {
  const n = groupedSizes('allocGroupedWeight', groups, rows, cols);
  switch (dtype) {
    case 'f32': return { dtype, groups, rows, cols, data: new Float32Array(n.data) };
    case 'bf16': return { dtype, groups, rows, cols, data: new Uint16Array(n.data) };
    case 'fp8': return { dtype, groups, rows, cols, data: new Uint8Array(n.data), scaleInv: new Float32Array(n.scales) };
    default: throw new KernelShapeError('allocGroupedWeight', `unknown weight dtype ${String(dtype)}`);
  }
}

/** One used segment of a grouped product: rows [r0, r0 + len) use group g. */
export interface GroupRun { g: number; r0: number; len: number }

/**
 * Checks a groupedMatmul call (shared by every backend, so all reject bad input alike) and returns its
 * non-empty segments in group order.
 */
export function checkGroupedMatmul(x: Float32Array, m: number, w: GroupedWeight, seg: GroupSegments): GroupRun[] {
  const op = 'groupedMatmul';
  if (!Number.isSafeInteger(m) || m < 0) throw new KernelShapeError(op, `bad row count ${m}`);
  const sizes = groupedSizes(op, w.groups, w.rows, w.cols);
  need(op, 'x', x.length, m * w.cols);
  need(op, 'w.data', w.data.length, sizes.data);
  if (w.dtype === 'fp8') need(op, 'w.scaleInv', w.scaleInv.length, sizes.scales);
  need(op, 'segments.start', seg.start.length, w.groups);
  need(op, 'segments.count', seg.count.length, w.groups);
  const runs: GroupRun[] = [];
  for (let g = 0; g < w.groups; g++) {
    const r0 = seg.start[g]!, len = seg.count[g]!;
    if (!(len >= 0 && r0 >= 0 && r0 + len <= m)) throw new KernelShapeError(op, `segment ${g} = rows [${r0}, ${r0 + len}) outside [0, ${m})`);
    if (len > 0) runs.push({ g, r0, len });
  }
  const byRow = [...runs].sort((a, b) => a.r0 - b.r0);
  for (let i = 1; i < byRow.length; i++) {
    const p = byRow[i - 1]!, c = byRow[i]!;
    if (c.r0 < p.r0 + p.len) throw new KernelShapeError(op, `segments of groups ${p.g} and ${c.g} overlap`);
  }
  return runs;
}

/** The oracle: one matmul per used group over its rows; rows in no segment are 0. */
export function groupedMatmul(x: Float32Array, m: number, w: GroupedWeight, seg: GroupSegments, out?: Float32Array): Float32Array {
  const runs = checkGroupedMatmul(x, m, w, seg);
  const N = w.rows, K = w.cols;
  const y = dest('groupedMatmul', out, m * N);
  y.fill(0);
  for (const { g, r0, len } of runs) {
    matmul(x.subarray(r0 * K, (r0 + len) * K), len, groupSlice(w, g), y.subarray(r0 * N, (r0 + len) * N));
  }
  return y;
}

export function rmsNorm(x: Float32Array, rows: number, weight: Float32Array, eps: number, out?: Float32Array): Float32Array {
  const D = weight.length;
  need('rmsNorm', 'x', x.length, rows * D);
  const y = dest('rmsNorm', out, rows * D);
  for (let r = 0; r < rows; r++) {
    const o = r * D;
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[o + i]! * x[o + i]!;
    const inv = 1 / Math.sqrt(ss / D + eps);
    for (let i = 0; i < D; i++) y[o + i] = x[o + i]! * inv * weight[i]!;
  }
  return y;
}

export function rope(x: Float32Array, rows: number, stride: number, offset: number, dim: number, cos: Float32Array, sin: Float32Array): void {
  if (dim % 2 !== 0) throw new KernelShapeError('rope', `dim ${dim} is odd`);
  const half = dim / 2;
  need('rope', 'cos', cos.length, rows * half);
  need('rope', 'sin', sin.length, rows * half);
  if (rows > 0 && (rows - 1) * stride + offset + dim > x.length) {
    throw new KernelShapeError('rope', `rows ${rows} x stride ${stride} + offset ${offset} + dim ${dim} runs past x (${x.length})`);
  }
  for (let r = 0; r < rows; r++) {
    const base = r * stride + offset;
    const cb = r * half;
    for (let i = 0; i < half; i++) {
      const a = x[base + 2 * i]!;
      const b = x[base + 2 * i + 1]!;
      const c = cos[cb + i]!;
      const s = sin[cb + i]!;
      x[base + 2 * i] = a * c - b * s;
      x[base + 2 * i + 1] = a * s + b * c;
    }
  }
}

export function softmax(x: Float32Array, rows: number, cols: number): void {
  need('softmax', 'x', x.length, rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let mx = -Infinity;
    for (let i = 0; i < cols; i++) if (x[o + i]! > mx) mx = x[o + i]!;
    let sum = 0;
    for (let i = 0; i < cols; i++) {
      const e = Math.exp(x[o + i]! - mx);
      x[o + i] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let i = 0; i < cols; i++) x[o + i] = x[o + i]! * inv;
  }
}

export function siluMul(gate: Float32Array, up: Float32Array, out?: Float32Array): Float32Array {
  need('siluMul', 'up', up.length, gate.length);
  const y = dest('siluMul', out, gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i]!;
    y[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
  return y;
}

export function topk(x: Float32Array, rows: number, cols: number, k: number): TopK {
  need('topk', 'x', x.length, rows * cols);
  if (!Number.isInteger(k) || k < 1 || k > cols) throw new KernelShapeError('topk', `k=${k} must be in 1..${cols}`);
  const indices = new Int32Array(rows * k);
  const values = new Float32Array(rows * k);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const base = r * k;
    let filled = 0;
    for (let c = 0; c < cols; c++) {
      const v = x[o + c]!;
      // Strictly greater moves ahead, so equal values keep the lower index first.
      if (filled === k && !(v > values[base + k - 1]!)) continue;
      let p = filled < k ? filled++ : k - 1;
      while (p > 0 && v > values[base + p - 1]!) {
        values[base + p] = values[base + p - 1]!;
        indices[base + p] = indices[base + p - 1]!;
        p--;
      }
      values[base + p] = v;
      indices[base + p] = c;
    }
  }
  return { indices, values };
}

/** Checks gatherRows' operands (shared by every CPU backend); returns the source row count. */
export function checkGatherRows(x: Float32Array, cols: number, index: Int32Array, out: Float32Array | undefined): number {
  if (!Number.isSafeInteger(cols) || cols < 0) throw new KernelShapeError('gatherRows', `bad column count ${cols}`);
  if (cols === 0 ? x.length !== 0 : x.length % cols !== 0) throw new KernelShapeError('gatherRows', `x has length ${x.length}, not a multiple of ${cols} columns`);
  const rows = cols === 0 ? 0 : x.length / cols;
  if (out) need('gatherRows', 'out', out.length, index.length * cols);
  checkRowIndex('gatherRows', index, rows, cols);
  return rows;
}

/** Checks scatterAddRows' operands (shared by every CPU backend). */
export function checkScatterAddRows(y: Float32Array, cols: number, index: Int32Array, weight: Float32Array, out: Float32Array): void {
  if (!Number.isSafeInteger(cols) || cols < 0) throw new KernelShapeError('scatterAddRows', `bad column count ${cols}`);
  need('scatterAddRows', 'y', y.length, index.length * cols);
  need('scatterAddRows', 'weight', weight.length, index.length);
  if (cols === 0 ? out.length !== 0 : out.length % cols !== 0) throw new KernelShapeError('scatterAddRows', `out has length ${out.length}, not a multiple of ${cols} columns`);
  checkRowIndex('scatterAddRows', index, cols === 0 ? 0 : out.length / cols, cols);
}

function checkRowIndex(op: string, index: Int32Array, rows: number, cols: number): void {
  if (cols === 0) return;
  for (let r = 0; r < index.length; r++) {
    const i = index[r]!;
    if (!(i >= 0 && i < rows)) throw new KernelShapeError(op, `index[${r}] = ${i} outside [0, ${rows})`);
  }
}

export function gatherRows(x: Float32Array, cols: number, index: Int32Array, out?: Float32Array): Float32Array {
  checkGatherRows(x, cols, index, out);
  const y = dest('gatherRows', out, index.length * cols);
  for (let r = 0; r < index.length; r++) y.set(x.subarray(index[r]! * cols, (index[r]! + 1) * cols), r * cols);
  return y;
}

export function scatterAddRows(y: Float32Array, cols: number, index: Int32Array, weight: Float32Array, out: Float32Array): Float32Array {
  checkScatterAddRows(y, cols, index, weight, out);
  for (let r = 0; r < index.length; r++) {
    const o = index[r]! * cols, w = weight[r]!;
    // JS arithmetic is float64: w·y is exact, the sum rounds once there and once more on the f32 store.
    for (let j = 0; j < cols; j++) out[o + j] = out[o + j]! + w * y[r * cols + j]!;
  }
  return out;
}

/**
 * Checks copyStrided's operands (shared by every CPU backend); returns the element spans [first, end)
 * of src and dst it touches (empty when the shape has no element). `sameMemory` says whether two views'
 * byte offsets address one memory (by default: the same buffer; the wasm backend also counts views of its
 * memory made before and after it grew, which have different buffer objects).
 */
export function checkCopyStrided(src: Float32Array, s: StridedAt, dst: Float32Array, d: StridedAt, shape: readonly [number, number, number],
  sameMemory: (a: Float32Array, b: Float32Array) => boolean = (a, b) => a.buffer === b.buffer): { src: [number, number]; dst: [number, number] } {
  const bad = (v: number) => !Number.isSafeInteger(v) || v < 0;
  if (shape.length !== 3 || shape.some(bad)) throw new KernelShapeError('copyStrided', `bad shape [${shape.join(', ')}]`);
  for (const [name, at] of [['src', s], ['dst', d]] as const) {
    if (bad(at.offset) || at.strides.length !== 2 || at.strides.some(bad)) {
      throw new KernelShapeError('copyStrided', `bad ${name} offset/strides ${at.offset}/[${at.strides.join(', ')}]`);
    }
  }
  const [n0, n1, len] = shape;
  if (n0 === 0 || n1 === 0 || len === 0) return { src: [0, 0], dst: [0, 0] };
  const span = (at: StridedAt, n: number, name: string): [number, number] => {
    const end = at.offset + (n0 - 1) * at.strides[0] + (n1 - 1) * at.strides[1] + len;
    if (end > n) throw new KernelShapeError('copyStrided', `${name} span ends at ${end}, past its length ${n}`);
    return [at.offset, end];
  };
  const sp = span(s, src.length, 'src'), dp = span(d, dst.length, 'dst');
  if (!nestedRows(shape, d.strides)) {
    throw new KernelShapeError('copyStrided', `dst rows overlap (strides [${d.strides.join(', ')}] for shape [${shape.join(', ')}])`);
  }
  if (sameMemory(src, dst)) {
    const a0 = src.byteOffset + sp[0] * 4, a1 = src.byteOffset + sp[1] * 4;
    const b0 = dst.byteOffset + dp[0] * 4, b1 = dst.byteOffset + dp[1] * 4;
    if (a0 < b1 && b0 < a1) throw new KernelShapeError('copyStrided', 'src and dst spans overlap');
  }
  return { src: sp, dst: dp };
}

/**
 * Whether the destination rows of a [n0, n1, len] grid are disjoint by nesting: ordered by stride (axes
 * of extent 1 ignored), each stride is at least the span of what it steps over. Overlapping destination
 * rows would make the result depend on the order threads write them.
 */
function nestedRows(shape: readonly [number, number, number], strides: readonly [number, number]): boolean {
  const axes = [[shape[0], strides[0]], [shape[1], strides[1]]].filter(([n]) => n! > 1).sort((a, b) => a[1]! - b[1]!);
  let extent = shape[2];
  for (const [n, st] of axes) {
    if (st! < extent) return false;
    extent = (n! - 1) * st! + extent;
  }
  return true;
}

export function copyStrided(src: Float32Array, s: StridedAt, dst: Float32Array, d: StridedAt, shape: readonly [number, number, number]): void {
  checkCopyStrided(src, s, dst, d, shape);
  const [n0, n1, len] = shape;
  for (let i = 0; i < n0; i++) {
    for (let j = 0; j < n1; j++) {
      const so = s.offset + i * s.strides[0] + j * s.strides[1], doff = d.offset + i * d.strides[0] + j * d.strides[1];
      for (let c = 0; c < len; c++) dst[doff + c] = src[so + c]!;
    }
  }
}

export const refOps: KernelOps = { allocWeight, matmul, allocGroupedWeight, groupedMatmul, rmsNorm, rope, softmax, siluMul, topk, gatherRows, scatterAddRows, copyStrided };
