// Quantization while loading: a BF16 / F16 / F32 weight W[rows, cols] becomes DeepSeek's FP8 layout,
// e4m3fn codes plus one f32 multiplier per 128x128 block (partial edge blocks allowed), with the rule of
// DeepGEMM's per_block_cast_to_fp8 (src/kernels/deepgemm/quant.ts, the bit-exact oracle of the tests):
//   amax = max(|W_blk|, 1e-4);  s = fround(amax / 448);  q = e4m3fn_RNE_saturating(fround(W / s))
// and `s` is stored as the block's scaleInv (the value that multiplies the codes).
// Streaming: a tensor is read 128 rows (one block row) at a time through one reusable staging buffer
// (128 · cols · element size bytes: 4.5 MiB for DeepSeek-V3's widest BF16 projection) straight into
// the caller's code and scale arrays (backend memory), so no tensor is ever held in its source format.
// Speed: BF16 (what DeepSeek checkpoints hold) goes through a per-block lookup table indexed by the
// bf16 magnitude bits. Inside one block s is fixed, and bf16 magnitudes one binade apart differ by
// exactly 2 (the 128 codes of a binade share an exponent field), so fround(x·2^-k / s) =
// fround(x / s)·2^-k: one exact division per mantissa of amax's binade (128), then every lower binade's
// quotients are the same f32 bits with the exponent lowered by k, encoded with integer arithmetic only.
// The per-element work is then a load, a table lookup and a store. F16 / F32 take the direct path
// (one f32 division and the integer encoder per element).
import { FP8_E4M3_MAX, type DType } from '../tensor/dtypes.ts';
import type { TensorSource } from './safetensors.ts';

/** Edge of DeepSeek's square weight blocks (quantization_config.weight_block_size [128, 128]). */
export const QUANT_BLOCK = 128;
/** Source dtypes the quantizer reads. */
export const QUANTIZABLE_DTYPES: readonly DType[] = ['BF16', 'F16', 'F32'];
/** DeepGEMM's lower clamp of a block's amax (an all-zero block gets scale 1e-4 / 448). */
export const AMAX_FLOOR = 1e-4;

/** Bad input to the quantizer (non-finite weight, wrong shapes or buffer sizes). Exit code 2 in the CLI. */
export class Fp8QuantizeError extends Error {
  override name = 'Fp8QuantizeError';
  readonly exitCode = 2;
  constructor(readonly tensor: string, message: string) {
    super(`${tensor}: ${message}`);
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * e4m3fn code of the NON-NEGATIVE f32 whose bits are `a` (a < 0x7f800000), RNE, saturating at 448:
 * integer arithmetic only. Normal results (a >= 2^-6): rounding the f32 mantissa to 3 bits is adding
 * 0x7FFFF plus the kept lsb and shifting, a carry bumps the exponent; rebias 127 -> 7 is -120 << 3.
 * Subnormal results count units of 2^-9: q = RNE(M · 2^(e - 141)) with M the 24-bit significand.
 */
export function e4m3CodeOfBits(a: number): number {
  if (a >= 0x3c800000) {
    const q = ((a + 0x7ffff + ((a >>> 20) & 1)) >>> 20) - 960;
    return q > 0x7e ? 0x7e : q;
  }
  const e = a >>> 23;
  if (e < 117) return 0; // below 2^-10, half the smallest subnormal (f32 subnormals included)
  const shift = 141 - e; // 21..24
  const mant = (a & 0x7fffff) | 0x800000;
  let q = mant >>> shift;
  const rem = mant & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) === 1)) q++;
  return q; // q == 8 is exactly the smallest normal, code 0x08
}

/** Scale of a block from its amax, as DeepGEMM computes it (f32 division of the clamped amax by 448). */
export function blockScale(amax: number): number {
  return Math.fround(Math.max(amax, AMAX_FLOOR) / FP8_E4M3_MAX);
}

let f16Table: Float32Array | undefined;
/** f16 bits -> f32 value for all 65536 codes (built on first use; 256 KiB). */
function f16Values(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1, e = (h >>> 10) & 0x1f, m = h & 0x3ff;
      f16Table[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
    }
  }
  return f16Table;
}

/**
 * Per-block lookup table for bf16 sources, indexed by the whole bf16 bit pattern: lut[h] = e4m3 code of
 * the bf16 value h for the block's scale s (sign included), valid for every |h| <= the block's amax.
 * Magnitudes below `lo` (about 20 binades under amax: 448 · 2^10 ≈ 2^18.8, so codes are 0 there) hold
 * 0x00 / 0x80, set once and re-cleared only where a previous block wrote codes. 64 KiB, of which a block
 * touches about 2 x 2.6 KiB.
 */
const LUT_BINADES = 24;
const bf16Lut = new Uint8Array(65536).fill(0x80, 0x8000);
/** Magnitude range [lutLo, lutHi) that holds codes of an earlier block (outside it: signed zeros). */
let lutLo = 0, lutHi = 0;
const lut32 = new Uint32Array(bf16Lut.buffer);
/** f32 bits of fround(x / s) for the 128 mantissas of amax's binade, their unclamped codes, and those packed 4 per word. */
const yTop = new Int32Array(128);
const codeTop = new Int32Array(128);
const packedTop = new Int32Array(32);

/** Fills bf16Lut for a block whose largest magnitude is `top` (bf16 bits, < 0x7f80) and scale `s`. */
function buildBf16Lut(top: number, s: number): void {
  const eTop = top >>> 7;
  const hi = (eTop + 1) << 7;
  if (eTop === 0) { // amax below 2^-126: every code is 0 (s >= 1e-4/448, so |x/s| < 2^-104)
    clearLut(0, hi);
    lutLo = Math.max(lutLo, hi);
    return;
  }
  // The binade of amax: one exact f32 division per mantissa.
  for (let j = 0; j < 128; j++) {
    u32[0] = ((eTop << 7) | j) << 16;
    f32[0] = f32[0]! / s;
    const a = u32[0]!;
    yTop[j] = a;
    codeTop[j] = ((a + 0x7ffff + ((a >>> 20) & 1)) >>> 20) - 960; // normal-range code (<= 136), not clamped
  }
  for (let w = 0; w < 32; w++) {
    packedTop[w] = codeTop[4 * w]! | (codeTop[4 * w + 1]! << 8) | (codeTop[4 * w + 2]! << 16) | (codeTop[4 * w + 3]! << 24);
  }
  // Binade eTop - k holds x · 2^-k, so its quotients are yTop's f32 bits minus k << 23 (exact: they
  // stay normal f32s). Where the quotient is a normal e4m3 value (>= 2^-6) the RNE carry logic sees the
  // same low bits, so the code is codeTop - 8k (>= 8, so four codes packed in a word subtract without
  // borrows; only k <= 1 can exceed 0x7E and needs the clamp); below, the subnormal rule
  // q = RNE(M · 2^-(141 - e)). Stops after the first binade that is all 0 (so is everything below), or
  // at bf16's binade 1 (below it, x < 2^-126 gives code 0, as above).
  const lut = bf16Lut;
  for (let k = 0; k < LUT_BINADES; k++) {
    const base = (eTop - k) << 7;
    const shift = k << 23;
    const dk = k << 3;
    if (k >= 2 && yTop[0]! - shift >= 0x3c800000) { // the whole binade is in e4m3's normal range
      const d = Math.imul(dk, 0x01010101); // int32 arithmetic: only the bits matter
      for (let w = 0, o = base >>> 2; w < 32; w++, o++) {
        const p = (packedTop[w]! - d) | 0;
        lut32[o] = p;
        lut32[o + 0x2000] = p | 0x80808080;
      }
    } else {
      for (let j = 0; j < 128; j++) {
        const a = yTop[j]! - shift;
        let c: number;
        if (a >= 0x3c800000) {
          const q = codeTop[j]! - dk;
          c = q > 0x7e ? 0x7e : q;
        } else {
          const e = a >>> 23;
          if (e < 117) c = 0; // below 2^-10, half the smallest subnormal
          else {
            const sh = 141 - e, mant = (a & 0x7fffff) | 0x800000; // sh in 21..24
            c = (mant + (1 << (sh - 1)) - 1 + ((mant >>> sh) & 1)) >>> sh; // round half to even
          }
        }
        lut[base + j] = c;
        lut[0x8000 + base + j] = c | 0x80;
      }
    }
    if (lut[base + 127] === 0 || eTop - k === 1) {
      clearLut(0, base);
      lutLo = base; // codes now in [base, hi), plus stale ones above hi (never read: above amax)
      lutHi = Math.max(lutHi, hi);
      return;
    }
  }
  throw new Error('unreachable: more than 23 binades with nonzero codes');
}

/** Makes magnitudes [from, to) signed zeros again where an earlier block left codes (callers update lutLo/lutHi). */
function clearLut(from: number, to: number): void {
  const a = Math.max(from, lutLo), b = Math.min(to, lutHi);
  if (a < b) {
    bf16Lut.fill(0, a, b);
    bf16Lut.fill(0x80, 0x8000 + a, 0x8000 + b);
  }
}

/**
 * Quantizes one block row (rows <= 128) of a row-major tensor given as raw source elements:
 * `src` holds rows·cols elements (Uint16Array bits for BF16/F16, Float32Array for F32). Writes
 * codes[codeOff + r·cols + c] and scales[scaleOff + b] for the ceil(cols/128) blocks of this row.
 * Throws Fp8QuantizeError on a non-finite value (the tensor name and row are for the message).
 * One loop per source format, so that each stays monomorphic (one element type per call site).
 */
export function quantizeBlockRow(dtype: 'BF16' | 'F16' | 'F32', src: Uint16Array | Float32Array, rows: number, cols: number,
  codes: Uint8Array, codeOff: number, scales: Float32Array, scaleOff: number, tensor = '(tensor)', row0 = 0): void {
  if (src.length !== rows * cols) throw new Fp8QuantizeError(tensor, `block row has ${src.length} values, want ${rows}*${cols}`);
  if (dtype === 'F32') {
    if (!(src instanceof Float32Array)) throw new TypeError('F32 source must be a Float32Array');
    blockRowF32(src, new Uint32Array(src.buffer, src.byteOffset, src.length), rows, cols, codes, codeOff, scales, scaleOff, tensor, row0);
  } else {
    if (!(src instanceof Uint16Array)) throw new TypeError(`${dtype} source must be a Uint16Array of bits`);
    if (dtype === 'BF16') blockRowBf16(src, rows, cols, codes, codeOff, scales, scaleOff, tensor, row0);
    else blockRowF16(src, rows, cols, codes, codeOff, scales, scaleOff, tensor, row0);
  }
}

/** amax of the magnitude bits (bits & mask) of block columns [c0, c1) of src[rows, cols]. */
function amaxBits16(src: Uint16Array, rows: number, cols: number, c0: number, c1: number): number {
  let m = 0;
  for (let r = 0; r < rows; r++) {
    for (let i = r * cols + c0, e = r * cols + c1; i < e; i++) {
      const v = src[i]! & 0x7fff;
      if (v > m) m = v;
    }
  }
  return m;
}

function blockRowBf16(src: Uint16Array, rows: number, cols: number, codes: Uint8Array, codeOff: number,
  scales: Float32Array, scaleOff: number, tensor: string, row0: number): void {
  const kb = Math.ceil(cols / QUANT_BLOCK);
  // Four elements per step (two 32-bit loads, one 32-bit store) where the layout allows: every block
  // column start and row start is then a multiple of 4 elements (DeepSeek's dimensions all are).
  const wide = cols % 4 === 0 && src.byteOffset % 4 === 0 && (codes.byteOffset + codeOff) % 4 === 0;
  const src32 = wide ? new Uint32Array(src.buffer, src.byteOffset, src.length >>> 1) : undefined;
  const codes32 = wide ? new Uint32Array(codes.buffer, codes.byteOffset + codeOff, (rows * cols) >>> 2) : undefined;
  for (let b = 0; b < kb; b++) {
    const c0 = b * QUANT_BLOCK, c1 = Math.min(cols, c0 + QUANT_BLOCK);
    // bf16 magnitude bits order like the magnitudes, so amax is an integer max.
    const m = src32 ? amaxBf16x2(src32, rows, cols, c0, c1) : amaxBits16(src, rows, cols, c0, c1);
    if (m >= 0x7f80) nonFinite(tensor, row0, rows, cols, c0, c1, (i) => (src[i]! & 0x7fff) < 0x7f80, src);
    u32[0] = m << 16;
    const s = blockScale(f32[0]!);
    scales[scaleOff + b] = s;
    buildBf16Lut(m, s);
    if (codes32) encodeBf16x4(src32!, codes32, rows, cols, c0, c1);
    else encodeBf16x1(src, codes, codeOff, rows, cols, c0, c1);
  }
}

/** amax2 over pairs: src32 holds two bf16 per word (little-endian: element 2j in the low half). */
function amaxBf16x2(src32: Uint32Array, rows: number, cols: number, c0: number, c1: number): number {
  let m0 = 0, m1 = 0;
  for (let r = 0; r < rows; r++) {
    for (let i = (r * cols + c0) >>> 1, e = (r * cols + c1) >>> 1; i < e; i++) {
      const w = src32[i]!;
      const a = w & 0x7fff, b = (w >>> 16) & 0x7fff;
      if (a > m0) m0 = a;
      if (b > m1) m1 = b;
    }
  }
  return m0 > m1 ? m0 : m1;
}

/** Codes of block columns [c0, c1) through bf16Lut, one element at a time. */
function encodeBf16x1(src: Uint16Array, codes: Uint8Array, codeOff: number, rows: number, cols: number, c0: number, c1: number): void {
  const lut = bf16Lut;
  for (let r = 0; r < rows; r++) {
    for (let i = r * cols + c0, e = r * cols + c1; i < e; i++) codes[codeOff + i] = lut[src[i]!]!;
  }
}

/** The same, four elements per step: codes32 word j holds the codes of elements 4j..4j+3 (little-endian). */
function encodeBf16x4(src32: Uint32Array, codes32: Uint32Array, rows: number, cols: number, c0: number, c1: number): void {
  const lut = bf16Lut;
  for (let r = 0; r < rows; r++) {
    for (let i = (r * cols + c0) >>> 1, e = (r * cols + c1) >>> 1; i < e; i += 2) {
      const w0 = src32[i]!, w1 = src32[i + 1]!;
      codes32[i >>> 1] = lut[w0 & 0xffff]! | (lut[w0 >>> 16]! << 8) | (lut[w1 & 0xffff]! << 16) | (lut[w1 >>> 16]! << 24);
    }
  }
}

function blockRowF16(src: Uint16Array, rows: number, cols: number, codes: Uint8Array, codeOff: number,
  scales: Float32Array, scaleOff: number, tensor: string, row0: number): void {
  const kb = Math.ceil(cols / QUANT_BLOCK);
  const val = f16Values();
  for (let b = 0; b < kb; b++) {
    const c0 = b * QUANT_BLOCK, c1 = Math.min(cols, c0 + QUANT_BLOCK);
    const m = amaxBits16(src, rows, cols, c0, c1);
    if (m >= 0x7c00) nonFinite(tensor, row0, rows, cols, c0, c1, (i) => (src[i]! & 0x7fff) < 0x7c00, src);
    const s = blockScale(val[m]!);
    scales[scaleOff + b] = s;
    for (let r = 0; r < rows; r++) {
      for (let i = r * cols + c0, e = r * cols + c1; i < e; i++) {
        f32[0] = val[src[i]!]! / s;
        const y = u32[0]!;
        codes[codeOff + i] = ((y >>> 24) & 0x80) | e4m3CodeOfBits(y & 0x7fffffff);
      }
    }
  }
}

function blockRowF32(src: Float32Array, bits: Uint32Array, rows: number, cols: number, codes: Uint8Array, codeOff: number,
  scales: Float32Array, scaleOff: number, tensor: string, row0: number): void {
  const kb = Math.ceil(cols / QUANT_BLOCK);
  for (let b = 0; b < kb; b++) {
    const c0 = b * QUANT_BLOCK, c1 = Math.min(cols, c0 + QUANT_BLOCK);
    let m = 0;
    for (let r = 0; r < rows; r++) {
      for (let i = r * cols + c0, e = r * cols + c1; i < e; i++) {
        const v = bits[i]! & 0x7fffffff;
        if (v > m) m = v;
      }
    }
    if (m >= 0x7f800000) nonFinite(tensor, row0, rows, cols, c0, c1, (i) => Number.isFinite(src[i]!), bits);
    u32[0] = m;
    const s = blockScale(f32[0]!);
    scales[scaleOff + b] = s;
    for (let r = 0; r < rows; r++) {
      for (let i = r * cols + c0, e = r * cols + c1; i < e; i++) {
        f32[0] = src[i]! / s;
        const y = u32[0]!;
        codes[codeOff + i] = ((y >>> 24) & 0x80) | e4m3CodeOfBits(y & 0x7fffffff);
      }
    }
  }
}

function nonFinite(tensor: string, row0: number, rows: number, cols: number, c0: number, c1: number,
  finite: (i: number) => boolean, src: ArrayLike<number>): never {
  for (let r = 0; r < rows; r++) {
    for (let c = c0; c < c1; c++) {
      if (!finite(r * cols + c)) {
        throw new Fp8QuantizeError(tensor, `non-finite value (bits 0x${src[r * cols + c]!.toString(16)}) at [${row0 + r}, ${c}]: cannot quantize to FP8`);
      }
    }
  }
  throw new Error('unreachable: non-finite amax without a non-finite value');
}

/** A tensor source that can read a byte range of one tensor (Checkpoint, SafetensorsFile). */
export type RangedTensorSource = Pick<TensorSource, 'tensors' | 'readRangeInto'>;

/**
 * Streams 2-D tensors of a checkpoint into FP8 codes + block scales through one reusable staging
 * buffer (grown to the largest 128-row slab seen). One instance per load; not for concurrent use.
 */
export class Fp8StreamQuantizer {
  #staging = new ArrayBuffer(0);
  /** Elements quantized so far (for throughput reports). */
  elements = 0;

  /** Bytes currently held for staging. */
  get stagingBytes(): number {
    return this.#staging.byteLength;
  }

  /**
   * Quantizes tensor `name` ([rows, cols], BF16 / F16 / F32) into `codes` [rows·cols] and
   * `scaleInv` [ceil(rows/128)·ceil(cols/128)] (row-major blocks), reading 128 rows at a time.
   */
  quantizeTensor(src: RangedTensorSource, name: string, codes: Uint8Array, scaleInv: Float32Array): void {
    const t = src.tensors.get(name);
    if (!t) throw new Fp8QuantizeError(name, 'no such tensor');
    if (t.dtype !== 'BF16' && t.dtype !== 'F16' && t.dtype !== 'F32') {
      throw new Fp8QuantizeError(name, `dtype ${t.dtype} cannot be quantized to FP8 (expected ${QUANTIZABLE_DTYPES.join(', ')})`);
    }
    if (t.shape.length !== 2) throw new Fp8QuantizeError(name, `FP8 quantization needs a 2-D tensor, shape is ${JSON.stringify(t.shape)}`);
    const [rows, cols] = t.shape as [number, number];
    const kb = Math.ceil(cols / QUANT_BLOCK);
    if (codes.length !== rows * cols) throw new Fp8QuantizeError(name, `code buffer has ${codes.length} bytes, tensor has ${rows * cols} elements`);
    if (scaleInv.length !== Math.ceil(rows / QUANT_BLOCK) * kb) {
      throw new Fp8QuantizeError(name, `scale buffer has ${scaleInv.length} entries, want ${Math.ceil(rows / QUANT_BLOCK)}x${kb}`);
    }
    const eb = t.dtype === 'F32' ? 4 : 2;
    const slab = Math.min(rows, QUANT_BLOCK) * cols * eb;
    if (this.#staging.byteLength < slab) this.#staging = new ArrayBuffer(slab);
    for (let r0 = 0, bi = 0; r0 < rows; r0 += QUANT_BLOCK, bi++) {
      const n = Math.min(QUANT_BLOCK, rows - r0);
      const raw = new Uint8Array(this.#staging, 0, n * cols * eb);
      src.readRangeInto(name, r0 * cols * eb, raw);
      const view = eb === 4 ? new Float32Array(this.#staging, 0, n * cols) : new Uint16Array(this.#staging, 0, n * cols);
      quantizeBlockRow(t.dtype, view, n, cols, codes, r0 * cols, scaleInv, bi * kb, name, r0);
    }
    this.elements += rows * cols;
  }
}

/** Whole-matrix convenience (tests, benchmarks): quantizes x[rows, cols] held in memory. */
export function quantizeMatrixFp8(dtype: 'BF16' | 'F16' | 'F32', x: Uint16Array | Float32Array, rows: number, cols: number,
  codes = new Uint8Array(rows * cols), scaleInv = new Float32Array(Math.ceil(rows / QUANT_BLOCK) * Math.ceil(cols / QUANT_BLOCK))): { codes: Uint8Array; scaleInv: Float32Array } {
  if (x.length !== rows * cols) throw new Fp8QuantizeError('(matrix)', `${x.length} values, want ${rows}*${cols}`);
  const kb = Math.ceil(cols / QUANT_BLOCK);
  for (let r0 = 0, bi = 0; r0 < rows; r0 += QUANT_BLOCK, bi++) {
    const n = Math.min(QUANT_BLOCK, rows - r0);
    quantizeBlockRow(dtype, x.subarray(r0 * cols, (r0 + n) * cols), n, cols, codes, r0 * cols, scaleInv, bi * kb, '(matrix)', r0);
  }
  return { codes, scaleInv };
}
