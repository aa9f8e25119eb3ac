// Per-token 1x128 FP8 (e4m3fn) payloads as DeepEP's kernels and tests make them
// (https://github.com/deepseek-ai/DeepEP/blob/main/tests/utils.py `per_token_cast_to_fp8`,
// csrc/kernels/internode_ll.cu): per 128-channel block amax = max(|x|, 1e-4), scale = amax / 448,
// q = e4m3(x / scale); x ~= q * scale. Shapes: x [T, H], q [T, H] bytes, scales [T, ceil(H / 128)] f32.
// The cast itself is DeepGEMM's quantizer (the same recipe), shared rather than duplicated.
import { FP8_E4M3_MAX, FP8_E4M3_TABLE } from '../../tensor/dtypes.ts';
import { quantizePerToken } from '../../kernels/deepgemm/quant.ts';

export const FP8_GROUP = 128;

export const scaleCols = (hidden: number): number => Math.ceil(hidden / FP8_GROUP);

/**
 * The same bytes and scales as DeepGEMM's quantizePerToken (tested bit for bit against it), as one
 * monomorphic pass per 128-block: the scaled block is stored into an f32 scratch (the store is the
 * Math.fround of x / s) and encoded from its bits inline (f32ToFp8e4m3's rules: NaN -> 0x7f, |v| >= 448
 * saturates to 0x7e, subnormals in units of 2^-9, round to nearest even).
 */
export function castToFp8(x: Float32Array, numTokens: number, hidden: number): { data: Uint8Array; scales: Float32Array } {
  if (x.length !== numTokens * hidden) {
    const q = quantizePerToken(x, numTokens, hidden); // throws its shape error
    return { data: q.data, scales: q.scales };
  }
  const kb = scaleCols(hidden);
  const data = new Uint8Array(numTokens * hidden);
  const scales = new Float32Array(numTokens * kb);
  const blk = new Float32Array(FP8_GROUP);
  const bits = new Uint32Array(blk.buffer);
  for (let r = 0; r < numTokens; r++) {
    for (let b = 0; b < kb; b++) {
      const o = r * hidden + b * FP8_GROUP;
      const n = Math.min(FP8_GROUP, hidden - b * FP8_GROUP);
      let amax = 0;
      for (let c = 0; c < n; c++) amax = Math.max(amax, Math.abs(x[o + c]!));
      const s = Math.fround(Math.max(amax, 1e-4) / FP8_E4M3_MAX);
      scales[r * kb + b] = s;
      for (let c = 0; c < n; c++) blk[c] = x[o + c]! / s;
      for (let c = 0; c < n; c++) data[o + c] = encodeE4m3(bits[c]!, blk[c]!);
    }
  }
  return { data, scales };
}

/** e4m3fn code of the f32 with bits u and value v (as dtypes.f32ToFp8e4m3). */
function encodeE4m3(u: number, v: number): number {
  const sign = (u >>> 24) & 0x80;
  const ua = u & 0x7fffffff;
  if (ua > 0x7f800000) return sign | 0x7f; // NaN
  if (ua >= 0x43e00000) return sign | 0x7e; // |v| >= 448 (inf included): saturate
  if (ua < 0x3c800000) {
    // |v| < 2^-6: subnormal, units of 2^-9 (a · 512 is exact in f64).
    const t = Math.abs(v) * 512;
    let q = Math.floor(t);
    const rem = t - q;
    if (rem > 0.5 || (rem === 0.5 && (q & 1))) q++;
    return sign | q;
  }
  const m = ua & 0x7fffff;
  let q = m >>> 20;
  const rem = m & 0xfffff;
  if (rem > 0x80000 || (rem === 0x80000 && (q & 1))) q++;
  const code = ((ua >>> 23) - 120 << 3) + q; // (e + 7) << 3 with e = exponent - 127; a mantissa carry bumps it
  return sign | (code > 0x7e ? 0x7e : code);
}

/** q * scale back to f32: [T, H]. */
export function fp8ToF32(data: Uint8Array, scales: Float32Array, numTokens: number, hidden: number, out = new Float32Array(numTokens * hidden)): Float32Array {
  const s = scaleCols(hidden);
  for (let t = 0; t < numTokens; t++) {
    for (let c = 0; c < hidden; c++) out[t * hidden + c] = FP8_E4M3_TABLE[data[t * hidden + c]!]! * scales[t * s + ((c / FP8_GROUP) | 0)]!;
  }
  return out;
}
