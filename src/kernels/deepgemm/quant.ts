// DeepGEMM's FP8 quantizers (tests/test_core.py and deep_gemm/utils: per_token_cast_to_fp8,
// per_block_cast_to_fp8, ceil_to_ue8m0). Reference: https://github.com/deepseek-ai/DeepGEMM
//   amax = max(|x_blk|, 1e-4);  s = amax / 448 (f32);  q = e4m3(x / s)  (f32 division, RNE, saturating)
// Per token: blocks of 1x128 along each row; per block: 128x128 tiles (zero-padded at the edges, which
// only matters for the amax). UE8M0 rounds s up to a power of two (SM100 scale format).
import { f32ToFp8e4m3, FP8_E4M3_TABLE, FP8_E4M3_MAX, bf16ToF32 } from '../../tensor/dtypes.ts';
import { BLOCK, ceilDiv, DeepGemmShapeError, type Fp8Matrix, type GroupedFp8Weights } from './types.ts';

export interface QuantOptions {
  /** Round each scale up to a power of two (UE8M0), as DeepGEMM's `use_ue8m0`. */
  ue8m0?: boolean;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** 2^ceil(log2(s)) for a positive f32 s, exponent clamped to [1, 254] like DeepGEMM's ceil_to_ue8m0. */
export function ceilToUe8m0(s: number): number {
  f32[0] = s;
  const bits = u32[0]!;
  let e = ((bits >>> 23) & 0xff) + ((bits & 0x7fffff) !== 0 ? 1 : 0);
  e = Math.min(254, Math.max(1, e));
  return 2 ** (e - 127);
}

function scaleOf(amax: number, ue8m0: boolean): number {
  const s = Math.fround(Math.max(amax, 1e-4) / FP8_E4M3_MAX);
  return ue8m0 ? ceilToUe8m0(s) : s;
}

function checkInput(op: string, x: ArrayLike<number>, rows: number, cols: number): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0 || x.length !== rows * cols) {
    throw new DeepGemmShapeError(op, `input has ${x.length} values, want ${rows}*${cols}`);
  }
}

/** Per-token 1x128 quantization of x[rows, cols] (activations). */
export function quantizePerToken(x: ArrayLike<number>, rows: number, cols: number, opts: QuantOptions = {}): Fp8Matrix {
  checkInput('quantizePerToken', x, rows, cols);
  const kb = ceilDiv(cols, BLOCK);
  const data = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * kb);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < kb; b++) {
      const c0 = b * BLOCK, c1 = Math.min(cols, c0 + BLOCK);
      let amax = 0;
      for (let c = c0; c < c1; c++) amax = Math.max(amax, Math.abs(Math.fround(x[r * cols + c]!)));
      const s = scaleOf(amax, !!opts.ue8m0);
      scales[r * kb + b] = s;
      for (let c = c0; c < c1; c++) data[r * cols + c] = f32ToFp8e4m3(Math.fround(Math.fround(x[r * cols + c]!) / s));
    }
  }
  return { rows, cols, data, scales, scaleBlock: '1x128' };
}

/** Quantizes rows [r0, r0+rows) of a 128x128-blocked matrix into data/scales at the given offsets. */
function blockInto(x: ArrayLike<number>, xOff: number, rows: number, cols: number, data: Uint8Array, dOff: number,
  scales: Float32Array, sOff: number, ue8m0: boolean): void {
  const nb = ceilDiv(rows, BLOCK), kb = ceilDiv(cols, BLOCK);
  for (let bi = 0; bi < nb; bi++) {
    for (let bj = 0; bj < kb; bj++) {
      const r0 = bi * BLOCK, r1 = Math.min(rows, r0 + BLOCK), c0 = bj * BLOCK, c1 = Math.min(cols, c0 + BLOCK);
      let amax = 0;
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) amax = Math.max(amax, Math.abs(Math.fround(x[xOff + r * cols + c]!)));
      const s = scaleOf(amax, ue8m0);
      scales[sOff + bi * kb + bj] = s;
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) data[dOff + r * cols + c] = f32ToFp8e4m3(Math.fround(Math.fround(x[xOff + r * cols + c]!) / s));
      }
    }
  }
}

/** Per-block 128x128 quantization of x[rows, cols] (weights). */
export function quantizePerBlock(x: ArrayLike<number>, rows: number, cols: number, opts: QuantOptions = {}): Fp8Matrix {
  checkInput('quantizePerBlock', x, rows, cols);
  const data = new Uint8Array(rows * cols);
  const scales = new Float32Array(ceilDiv(rows, BLOCK) * ceilDiv(cols, BLOCK));
  blockInto(x, 0, rows, cols, data, 0, scales, 0, !!opts.ue8m0);
  return { rows, cols, data, scales, scaleBlock: '128x128' };
}

/** Per-block quantization of G stacked matrices x[G, n, k]. */
export function quantizeGrouped(x: ArrayLike<number>, groups: number, n: number, k: number, opts: QuantOptions = {}): GroupedFp8Weights {
  checkInput('quantizeGrouped', x, groups * n, k);
  const data = new Uint8Array(groups * n * k);
  const per = ceilDiv(n, BLOCK) * ceilDiv(k, BLOCK);
  const scales = new Float32Array(groups * per);
  for (let g = 0; g < groups; g++) blockInto(x, g * n * k, n, k, data, g * n * k, scales, g * per, !!opts.ue8m0);
  return { groups, n, k, data, scales };
}

/** Dequantized values (exact, f64) of an FP8 matrix: q · s of its block. */
export function dequantize(m: Fp8Matrix): Float64Array {
  const out = new Float64Array(m.rows * m.cols);
  const kb = ceilDiv(m.cols, BLOCK);
  for (let r = 0; r < m.rows; r++) {
    const sr = m.scaleBlock === '1x128' ? r : Math.floor(r / BLOCK);
    for (let c = 0; c < m.cols; c++) out[r * m.cols + c] = FP8_E4M3_TABLE[m.data[r * m.cols + c]!]! * m.scales[sr * kb + Math.floor(c / BLOCK)]!;
  }
  return out;
}

/** Dequantized values (f64) of group g of grouped weights, [n, k]. */
export function dequantizeGroup(b: GroupedFp8Weights, g: number): Float64Array {
  const { n, k } = b;
  return dequantize({
    rows: n, cols: k, scaleBlock: '128x128',
    data: b.data.subarray(g * n * k, (g + 1) * n * k),
    scales: b.scales.subarray(g * ceilDiv(n, BLOCK) * ceilDiv(k, BLOCK), (g + 1) * ceilDiv(n, BLOCK) * ceilDiv(k, BLOCK)),
  });
}

/** bf16 bits -> f64 values. */
export function bf16Values(src: Uint16Array): Float64Array {
  const out = new Float64Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = bf16ToF32(src[i]!);
  return out;
}

/**
 * DeepGEMM's correctness metric: 1 - 2·Σxy / Σ(x² + y²) (0 when equal; tests pass below 0.001).
 * Both all-zero gives 0.
 */
export function calcDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  if (x.length !== y.length) throw new RangeError(`calcDiff: lengths ${x.length} and ${y.length} differ`);
  let xy = 0, xx = 0;
  for (let i = 0; i < x.length; i++) {
    const a = x[i]!, b = y[i]!;
    xy += a * b;
    xx += a * a + b * b;
  }
  return xx === 0 ? 0 : 1 - (2 * xy) / xx;
}
