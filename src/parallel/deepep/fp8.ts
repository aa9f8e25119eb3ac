// Per-token 1x128 FP8 (e4m3fn) casting as DeepEP's kernels and tests do it
// (https://github.com/deepseek-ai/DeepEP/blob/main/tests/utils.py `per_token_cast_to_fp8`,
// csrc/kernels/internode_ll.cu): for each 128-channel block amax = max(|x|, 1e-4), scale = amax / 448,
// q = e4m3(x / scale); x ~= q * scale. Shapes: x [T, H], q [T, H] bytes, scales [T, ceil(H / 128)] f32.
import { f32ToFp8e4m3, FP8_E4M3_MAX, FP8_E4M3_TABLE } from '../../tensor/dtypes.ts';

export const FP8_GROUP = 128;

export const scaleCols = (hidden: number): number => Math.ceil(hidden / FP8_GROUP);

/** Quantizes row `t` of x (any numeric array of length >= (t+1)·H) into q/scales. */
export function castRowToFp8(x: ArrayLike<number>, xOff: number, hidden: number, q: Uint8Array, qOff: number, scales: Float32Array, sOff: number): void {
  for (let g = 0, c0 = 0; c0 < hidden; g++, c0 += FP8_GROUP) {
    const c1 = Math.min(hidden, c0 + FP8_GROUP);
    let amax = 1e-4;
    for (let c = c0; c < c1; c++) {
      const a = Math.abs(x[xOff + c]!);
      if (a > amax) amax = a;
    }
    const scale = Math.fround(amax / FP8_E4M3_MAX);
    const inv = FP8_E4M3_MAX / amax;
    scales[sOff + g] = scale;
    for (let c = c0; c < c1; c++) q[qOff + c] = f32ToFp8e4m3(x[xOff + c]! * inv);
  }
}

export function castToFp8(x: Float32Array, numTokens: number, hidden: number): { data: Uint8Array; scales: Float32Array } {
  const s = scaleCols(hidden);
  const data = new Uint8Array(numTokens * hidden);
  const scales = new Float32Array(numTokens * s);
  for (let t = 0; t < numTokens; t++) castRowToFp8(x, t * hidden, hidden, data, t * hidden, scales, t * s);
  return { data, scales };
}

/** q * scale back to f32: [T, H]. */
export function fp8ToF32(data: Uint8Array, scales: Float32Array, numTokens: number, hidden: number, out = new Float32Array(numTokens * hidden)): Float32Array {
  const s = scaleCols(hidden);
  for (let t = 0; t < numTokens; t++) {
    for (let c = 0; c < hidden; c++) out[t * hidden + c] = FP8_E4M3_TABLE[data[t * hidden + c]!]! * scales[t * s + ((c / FP8_GROUP) | 0)]!;
  }
  return out;
}
