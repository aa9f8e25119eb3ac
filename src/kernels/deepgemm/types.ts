// DeepGEMM port: shared types and shape checks.
// Reference: https://github.com/deepseek-ai/DeepGEMM (deep_gemm/, tests/test_core.py). DeepGEMM computes
// D = A·Bᵀ ("NT") with FP8 e4m3 inputs and fine-grained scales: 1x128 per-token scales on the LHS,
// 128x128 block scales on the RHS, and promotes the FP8 partial sums to f32 every 128 K ("1D2D" recipe).
// Here outputs are f32 (DeepGEMM writes bf16; rounding the f32 result to bf16 is the caller's choice).

/** FP8 e4m3 matrix with fine-grained scales: activations use 1x128 scales [rows, ceil(cols/128)],
 *  weights 128x128 scales [ceil(rows/128), ceil(cols/128)]. */
export interface Fp8Matrix { rows: number; cols: number; data: Uint8Array; scales: Float32Array; scaleBlock: '1x128' | '128x128' }
/** G stacked weight matrices [G, n, k] with scales [G, ceil(n/128), ceil(k/128)]. */
export interface GroupedFp8Weights { groups: number; n: number; k: number; data: Uint8Array; scales: Float32Array }
/** G stacked bf16 weight matrices [G, n, k] (bf16 bits), for BF16 checkpoints' experts. */
export interface GroupedBf16Weights { groups: number; n: number; k: number; data: Uint16Array }

/** Block edge of the fine-grained scales. */
export const BLOCK = 128;
/** Row alignment of each expert segment in the contiguous grouped layout (get_m_alignment_for_contiguous_layout). */
export const M_ALIGNMENT_CONTIGUOUS = 128;

export const ceilDiv = (a: number, b: number): number => Math.floor((a + b - 1) / b);

/** A DeepGEMM call got arguments of inconsistent shape, layout or length. */
export class DeepGemmShapeError extends Error {
  override name = 'DeepGemmShapeError';
  constructor(readonly op: string, readonly detail: string) {
    super(`${op}: ${detail}`);
  }
}

/**
 * The DeepGEMM API every backend implements (ref: plain TS; wasm: SIMD + threads; webgpu: WGSL).
 * All outputs are f32 row-major; `out`, when given, must have the exact length and is returned.
 * Weight-only variants take f32 activations and FP8 (or bf16) weights: DeepSeek's default for FP8
 * checkpoints (weights dequantized on the fly, activations not quantized).
 */
export interface DeepGemmOps {
  /** D[m, n] = A[m, k] · B[n, k]ᵀ; A has 1x128 scales, B 128x128. */
  fp8GemmNt(a: Fp8Matrix, b: Fp8Matrix, out?: Float32Array): Float32Array;
  /** A[M, k] holds expert segments (each padded to 128 rows); row r uses B[mIndices[r]]; -1 rows are skipped and written as 0. */
  mGroupedFp8GemmNtContiguous(a: Fp8Matrix, b: GroupedFp8Weights, mIndices: Int32Array, out?: Float32Array): Float32Array;
  /** A[G*mMax, k]; rows g*mMax + [0, maskedM[g]) use B[g]; other rows of `out` are left untouched (0 when allocated here). */
  mGroupedFp8GemmNtMasked(a: Fp8Matrix, b: GroupedFp8Weights, maskedM: Int32Array, mMax: number, out?: Float32Array): Float32Array;
  /** Weight-only FP8: x[m, k] f32 · dequant(B[g])ᵀ, grouped contiguous (mIndices as above). */
  mGroupedFp8WeightGemmNtContiguous(x: Float32Array, m: number, b: GroupedFp8Weights, mIndices: Int32Array, out?: Float32Array): Float32Array;
  /** Weight-only FP8, masked layout: x[G*mMax, k]. */
  mGroupedFp8WeightGemmNtMasked(x: Float32Array, b: GroupedFp8Weights, maskedM: Int32Array, mMax: number, out?: Float32Array): Float32Array;
  /** BF16 weights, grouped contiguous: x[m, k] f32 · B[g]ᵀ. */
  mGroupedBf16GemmNtContiguous(x: Float32Array, m: number, b: GroupedBf16Weights, mIndices: Int32Array, out?: Float32Array): Float32Array;
  /** BF16 weights, masked layout. */
  mGroupedBf16GemmNtMasked(x: Float32Array, b: GroupedBf16Weights, maskedM: Int32Array, mMax: number, out?: Float32Array): Float32Array;
}

/**
 * The "1D1D" recipe of DeepGEMM's weight-gradient kernels (and of DeepSeek-V3's Wgrad, §3.3.2): both
 * operands quantized in 1x128 tiles along K (the reduction dim, tokens for dW = dyᵀ·x), f32 promotion
 * every 128 K as in fp8GemmNt. Kept apart from DeepGemmOps so backends without it still satisfy that.
 */
export interface DeepGemm1d1dOps {
  /** D[m, n] = A[m, k] · B[n, k]ᵀ; A and B both have 1x128 scales ([m, ceil(k/128)], [n, ceil(k/128)]). */
  fp8GemmNt1d1d(a: Fp8Matrix, b: Fp8Matrix, out?: Float32Array): Float32Array;
}

// ------------------------------------------------------------------------------------------ checks

function need(ok: boolean, op: string, detail: string): void {
  if (!ok) throw new DeepGemmShapeError(op, detail);
}

export function checkFp8Matrix(op: string, name: string, x: Fp8Matrix, block: '1x128' | '128x128'): void {
  need(Number.isInteger(x.rows) && x.rows >= 0 && Number.isInteger(x.cols) && x.cols >= 0, op, `${name}: bad shape [${x.rows}, ${x.cols}]`);
  need(x.scaleBlock === block, op, `${name}: expected ${block} scales, got ${x.scaleBlock}`);
  need(x.data.length === x.rows * x.cols, op, `${name}: data has ${x.data.length} bytes, want ${x.rows}*${x.cols}`);
  const sr = block === '1x128' ? x.rows : ceilDiv(x.rows, BLOCK);
  const want = sr * ceilDiv(x.cols, BLOCK);
  need(x.scales.length === want, op, `${name}: scales have ${x.scales.length} values, want ${want} (${block})`);
}

export function checkGrouped(op: string, b: GroupedFp8Weights | GroupedBf16Weights, k: number): void {
  need(b.groups >= 1 && b.n >= 0 && b.k >= 0, op, `weights: bad shape [${b.groups}, ${b.n}, ${b.k}]`);
  need(b.k === k, op, `weights have k=${b.k}, activations k=${k}`);
  need(b.data.length === b.groups * b.n * b.k, op, `weights: data has ${b.data.length} elements, want ${b.groups}*${b.n}*${b.k}`);
  if ('scales' in b) {
    const want = b.groups * ceilDiv(b.n, BLOCK) * ceilDiv(b.k, BLOCK);
    need(b.scales.length === want, op, `weights: scales have ${b.scales.length} values, want ${want}`);
  }
}

export function checkMIndices(op: string, mIndices: Int32Array, m: number, groups: number): void {
  need(mIndices.length === m, op, `mIndices has ${mIndices.length} entries, want ${m}`);
  for (let i = 0; i < m; i++) {
    const g = mIndices[i]!;
    need(g >= -1 && g < groups && Number.isInteger(g), op, `mIndices[${i}] = ${g} is not a group in [-1, ${groups})`);
  }
}

export function checkMasked(op: string, maskedM: Int32Array, mMax: number, groups: number, rows: number): void {
  need(Number.isInteger(mMax) && mMax >= 0, op, `mMax ${mMax} is not a non-negative integer`);
  need(maskedM.length === groups, op, `maskedM has ${maskedM.length} entries, want ${groups}`);
  need(rows === groups * mMax, op, `activations have ${rows} rows, want groups*mMax = ${groups * mMax}`);
  for (let g = 0; g < groups; g++) {
    const c = maskedM[g]!;
    need(c >= 0 && c <= mMax, op, `maskedM[${g}] = ${c} is outside [0, ${mMax}]`);
  }
}

export function outBuffer(op: string, out: Float32Array | undefined, len: number): Float32Array {
  if (!out) return new Float32Array(len);
  need(out.length === len, op, `out has ${out.length} elements, want ${len}`);
  return out;
}
