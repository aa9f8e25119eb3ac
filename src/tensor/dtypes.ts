// Number formats of DeepSeek checkpoints: f32, bf16, f16 and FP8 e4m3fn (OCP), with exact codecs.
// Reference: OCP 8-bit Floating Point Specification (OFP8) rev 1.0; torch.float8_e4m3fn; ml_dtypes;
// IEEE 754 binary16; dtype names and sizes: huggingface/safetensors safetensors/src/tensor.rs `Dtype`.
// Encoders take the value as an f32 first (a float64 argument is rounded to f32, then to the target),
// which is exact for every f32 input: the path weights take. Byte order is little-endian throughout.
// This module imports nothing and is shared by every layer.

/**
 * Element types as spelled in safetensors headers: every whole-byte dtype of the reference parser.
 * (Its sub-byte F4/F6 types are not supported and are rejected by the reader with a typed error.)
 */
export type DType =
  | 'F64' | 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'F8_E5M2' | 'F8_E8M0' | 'C64'
  | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, F8_E8M0: 1, C64: 8,
  I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

export function isDType(s: string): s is DType {
  return Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

// ---------------------------------------------------------------- bf16: the top half of an f32

/** bf16 bits -> value (exact). */
export function bf16ToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

/** value -> bf16 bits, round-to-nearest-even; NaN stays a (quiet) NaN with its sign. */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Decodes `src` bf16 bits into f32 values (`out` may be passed to avoid allocating). */
export function decodeBf16(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) o[i] = src[i]! << 16;
  return out;
}

export function encodeBf16(src: ArrayLike<number>, out = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) out[i] = f32ToBf16(src[i]!);
  return out;
}

/** x rounded to the nearest bf16 value (via f32, ties to even); NaN and ±Inf pass through. */
export function roundBf16(x: number): number {
  return bf16ToF32(f32ToBf16(x));
}

/** Rounds every element of `x` to the nearest bf16 value, in place. */
export function roundToBf16(x: Float32Array): Float32Array {
  for (let i = 0; i < x.length; i++) x[i] = roundBf16(x[i]!);
  return x;
}

// ---------------------------------------------------------------- f16 (IEEE binary16)

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** value -> f16 bits, round-to-nearest-even from the f32 value; overflow gives +-Inf. */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const e = (u >>> 23) & 0xff;
  const m = u & 0x7fffff;
  if (e === 0xff) return sign | 0x7c00 | (m ? 0x200 : 0);
  const ue = e - 127 + 15;
  if (ue >= 31) return sign | 0x7c00;
  if (ue <= 0) {
    // Subnormal or zero in f16: value = q * 2^-24 with q < 1024.
    if (ue < -10) return sign;
    const mant = m | 0x800000; // 24-bit significand of the f32
    const shift = 14 - ue; // bits to drop so that the result counts units of 2^-24
    let q = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1))) q++;
    return sign | q; // q == 1024 correctly becomes the smallest normal
  }
  let q = m >>> 13;
  const rem = m & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (q & 1))) q++;
  // A mantissa carry bumps the exponent; from ue = 30 it lands exactly on 0x7C00 (Inf), as RNE wants.
  return sign | ((ue << 10) + q);
}

export function decodeF16(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  for (let i = 0; i < src.length; i++) out[i] = f16ToF32(src[i]!);
  return out;
}

export function encodeF16(src: ArrayLike<number>, out = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16(src[i]!);
  return out;
}

// ---------------------------------------------------------------- FP8 e4m3fn (OCP): no infinities

/** Largest finite e4m3fn value (code 0x7E). */
export const FP8_E4M3_MAX = 448;

function decodeE4m3(code: number): number {
  const s = code & 0x80 ? -1 : 1;
  const e = (code >>> 3) & 0xf;
  const m = code & 7;
  if (e === 15 && m === 7) return NaN; // 0x7F and 0xFF are the only NaNs
  if (e === 0) return s * m * 2 ** -9;
  return s * (1 + m / 8) * 2 ** (e - 7);
}

/** All 256 codes decoded; index with the byte. */
export const FP8_E4M3_TABLE: Float32Array = (() => {
  const t = new Float32Array(256);
  for (let c = 0; c < 256; c++) t[c] = decodeE4m3(c);
  return t;
})();

export function fp8e4m3ToF32(code: number): number {
  return FP8_E4M3_TABLE[code & 0xff]!;
}

/**
 * value -> e4m3fn code with round-to-nearest-even on the f32 value, saturating at +-448 (as
 * torch's and DeepSeek's quantizers do after clamping). NaN maps to 0x7F (sign kept).
 */
export function f32ToFp8e4m3(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  const sign = (u >>> 24) & 0x80;
  if ((u & 0x7fffffff) > 0x7f800000) return sign | 0x7f;
  const a = Math.abs(f32[0]!);
  if (a >= FP8_E4M3_MAX) return sign | 0x7e;
  if (a < 2 ** -6) {
    // Subnormal range: units of 2^-9. a * 512 is exact in f64.
    const t = a * 512;
    let q = Math.floor(t);
    const r = t - q;
    if (r > 0.5 || (r === 0.5 && (q & 1))) q++;
    return sign | q; // q == 8 is exactly the smallest normal, code 0x08
  }
  const e = ((u >>> 23) & 0xff) - 127; // -6 .. 8
  const m = u & 0x7fffff;
  let q = m >>> 20;
  const rem = m & 0xfffff;
  if (rem > 0x80000 || (rem === 0x80000 && (q & 1))) q++;
  let code = ((e + 7) << 3) + q; // a carry out of the mantissa bumps the exponent
  if (code > 0x7e) code = 0x7e;
  return sign | code;
}

export function decodeFp8e4m3(src: Uint8Array, out = new Float32Array(src.length)): Float32Array {
  for (let i = 0; i < src.length; i++) out[i] = FP8_E4M3_TABLE[src[i]!]!;
  return out;
}

export function encodeFp8e4m3(src: ArrayLike<number>, out = new Uint8Array(src.length)): Uint8Array {
  for (let i = 0; i < src.length; i++) out[i] = f32ToFp8e4m3(src[i]!);
  return out;
}

// ---------------------------------------------------------------- other 8-bit formats (decode only)

/** FP8 e5m2 (IEEE-like, with infinities and NaNs): exactly the top byte of an f16. */
export function fp8e5m2ToF32(code: number): number {
  return f16ToF32((code & 0xff) << 8);
}

/** E8M0 (OCP MX scale): 2^(code-127), code 0xFF is NaN; no sign, no zero. */
export function e8m0ToF32(code: number): number {
  const c = code & 0xff;
  return c === 0xff ? NaN : 2 ** (c - 127);
}

// ---------------------------------------------------------------- whole tensors

/** True for the dtypes `toF32` can widen. */
export function isFloatDType(d: DType): boolean {
  return d === 'F64' || d === 'F32' || d === 'F16' || d === 'BF16' || d === 'F8_E4M3' || d === 'F8_E5M2' || d === 'F8_E8M0';
}

/**
 * Converts raw little-endian bytes of a floating-point dtype to f32 values (a new array; F64 is rounded
 * to f32). Throws a RangeError when the byte count is not a whole number of elements.
 */
export function toF32(bytes: Uint8Array, dtype: DType): Float32Array {
  const size = DTYPE_BYTES[dtype];
  if (!isFloatDType(dtype)) throw new TypeError(`toF32: ${dtype} is not a floating-point dtype`);
  if (bytes.byteLength % size !== 0) throw new RangeError(`toF32: ${bytes.byteLength} bytes is not a whole number of ${dtype}`);
  const n = bytes.byteLength / size;
  // Typed views need aligned offsets; an unaligned input is copied once.
  const src = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  switch (dtype) {
    case 'F32': return new Float32Array(src.buffer, src.byteOffset, n).slice();
    case 'F64': return Float32Array.from(new Float64Array(src.buffer, src.byteOffset, n));
    case 'BF16': return decodeBf16(new Uint16Array(src.buffer, src.byteOffset, n));
    case 'F16': return decodeF16(new Uint16Array(src.buffer, src.byteOffset, n));
    case 'F8_E4M3': return decodeFp8e4m3(src);
    case 'F8_E5M2': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = fp8e5m2ToF32(src[i]!);
      return out;
    }
    default: { // F8_E8M0
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = e8m0ToF32(src[i]!);
      return out;
    }
  }
}

/** Encodes f32 values as little-endian bytes of F32, BF16, F16 or F8_E4M3 (RNE; FP8 saturates). */
export function fromF32(values: ArrayLike<number>, dtype: 'F32' | 'BF16' | 'F16' | 'F8_E4M3'): Uint8Array {
  switch (dtype) {
    case 'F32': {
      const out = Float32Array.from(values);
      return new Uint8Array(out.buffer);
    }
    case 'BF16': return new Uint8Array(encodeBf16(values).buffer);
    case 'F16': return new Uint8Array(encodeF16(values).buffer);
    case 'F8_E4M3': return encodeFp8e4m3(values);
  }
}
