// Token payloads moved by dispatch/combine: rows of `hidden` channels, [T, H] row-major.
// BF16 travels as its raw Uint16 bits, FP8 as e4m3fn bytes plus per-token 1x128 f32 scales
// [T, ceil(H / 128)] (DeepEP passes FP8 as the tuple (e4m3 [T, H], f32 [T, H / 128])).
import { bf16ToF32, decodeBf16, FP8_E4M3_TABLE } from '../../tensor/dtypes.ts';
import { DeepEPShapeError } from './errors.ts';
import { FP8_GROUP, scaleCols } from './fp8.ts';

export type Tokens =
  | { dtype: 'f32'; hidden: number; data: Float32Array }
  | { dtype: 'bf16'; hidden: number; data: Uint16Array }
  | { dtype: 'fp8'; hidden: number; data: Uint8Array; scales: Float32Array };

export type TokenDType = Tokens['dtype'];

export const DTYPE_CODE: Record<TokenDType, number> = { f32: 0, bf16: 1, fp8: 2 };
export const CODE_DTYPE: readonly TokenDType[] = ['f32', 'bf16', 'fp8'];

/** Bytes of one row's channel data (scales not included). */
export function elementBytes(dtype: TokenDType): number {
  return dtype === 'f32' ? 4 : dtype === 'bf16' ? 2 : 1;
}

/** Scale floats per row (0 unless FP8). */
export function scalesPerRow(dtype: TokenDType, hidden: number): number {
  return dtype === 'fp8' ? scaleCols(hidden) : 0;
}

export function numRows(x: Tokens, op: string): number {
  if (!Number.isInteger(x.hidden) || x.hidden <= 0) throw new DeepEPShapeError(op, 'x.hidden', `must be a positive integer, got ${x.hidden}`);
  if (x.data.length % x.hidden !== 0) throw new DeepEPShapeError(op, 'x.data', `length ${x.data.length} is not a multiple of hidden ${x.hidden}`);
  const t = x.data.length / x.hidden;
  if (x.dtype === 'fp8' && x.scales.length !== t * scaleCols(x.hidden)) {
    throw new DeepEPShapeError(op, 'x.scales', `length ${x.scales.length}, expected ${t} x ${scaleCols(x.hidden)}`);
  }
  return t;
}

/** Raw bytes of rows [r0, r1) of the channel data. */
export function rowBytes(x: Tokens, r0: number, r1: number): Uint8Array {
  const eb = elementBytes(x.dtype);
  const d = x.data;
  return new Uint8Array(d.buffer, d.byteOffset + r0 * x.hidden * eb, (r1 - r0) * x.hidden * eb);
}

export function allocTokens(dtype: TokenDType, hidden: number, rows: number): Tokens {
  const n = rows * hidden;
  switch (dtype) {
    case 'f32': return { dtype, hidden, data: new Float32Array(n) };
    case 'bf16': return { dtype, hidden, data: new Uint16Array(n) };
    case 'fp8': return { dtype, hidden, data: new Uint8Array(n), scales: new Float32Array(rows * scaleCols(hidden)) };
  }
}

/** Typed view of channel data of `dtype` inside a message (byte offset must be aligned). */
export function dataView(dtype: TokenDType, msg: Uint8Array, byteOffset: number, elements: number): Float32Array | Uint16Array | Uint8Array {
  const off = msg.byteOffset + byteOffset;
  if (dtype === 'f32') return new Float32Array(msg.buffer, off, elements);
  if (dtype === 'bf16') return new Uint16Array(msg.buffer, off, elements);
  return new Uint8Array(msg.buffer, off, elements);
}

/** Row t of x as f32 into out[outOff..]. */
export function rowToF32(x: Tokens, t: number, out: Float32Array, outOff = 0): void {
  const h = x.hidden;
  const base = t * h;
  if (x.dtype === 'f32') {
    out.set(x.data.subarray(base, base + h), outOff);
  } else if (x.dtype === 'bf16') {
    for (let c = 0; c < h; c++) out[outOff + c] = bf16ToF32(x.data[base + c]!);
  } else {
    const s = scaleCols(h);
    for (let c = 0; c < h; c++) out[outOff + c] = FP8_E4M3_TABLE[x.data[base + c]!]! * x.scales[t * s + ((c / FP8_GROUP) | 0)]!;
  }
}

/** All of x as f32 [T, H]. */
export function tokensToF32(x: Tokens): Float32Array {
  if (x.dtype === 'f32') return x.data;
  if (x.dtype === 'bf16') return decodeBf16(x.data);
  const t = x.data.length / x.hidden;
  const out = new Float32Array(x.data.length);
  for (let i = 0; i < t; i++) rowToF32(x, i, out, i * x.hidden);
  return out;
}

export function f32ToTokens(x: Float32Array, dtype: 'f32' | 'bf16', hidden: number): Tokens {
  if (dtype === 'f32') return { dtype, hidden, data: x };
  return { dtype, hidden, data: f32ArrayToBf16(x) };
}

/**
 * f32 -> bf16 bits, round-to-nearest-even (NaN stays NaN), as dtypes.f32ToBf16 but over the raw bits of
 * a whole array (no per-element call: this runs over every combined value).
 */
export function f32ArrayToBf16(x: Float32Array, out = new Uint16Array(x.length)): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0; i < u.length; i++) {
    const b = u[i]!;
    out[i] = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}
