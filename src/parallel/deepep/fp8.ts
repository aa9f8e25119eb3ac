// Per-token 1x128 FP8 (e4m3fn) payloads as DeepEP's kernels and tests make them
// (https://github.com/deepseek-ai/DeepEP/blob/main/tests/utils.py `per_token_cast_to_fp8`,
// csrc/kernels/internode_ll.cu): per 128-channel block amax = max(|x|, 1e-4), scale = amax / 448,
// q = e4m3(x / scale); x ~= q * scale. Shapes: x [T, H], q [T, H] bytes, scales [T, ceil(H / 128)] f32.
// The cast itself is DeepGEMM's quantizer (the same recipe), shared rather than duplicated.
import { FP8_E4M3_TABLE } from '../../tensor/dtypes.ts';
import { quantizePerToken } from '../../kernels/deepgemm/quant.ts';

export const FP8_GROUP = 128;

export const scaleCols = (hidden: number): number => Math.ceil(hidden / FP8_GROUP);

export function castToFp8(x: Float32Array, numTokens: number, hidden: number): { data: Uint8Array; scales: Float32Array } {
  const q = quantizePerToken(x, numTokens, hidden);
  return { data: q.data, scales: q.scales };
}

/** q * scale back to f32: [T, H]. */
export function fp8ToF32(data: Uint8Array, scales: Float32Array, numTokens: number, hidden: number, out = new Float32Array(numTokens * hidden)): Float32Array {
  const s = scaleCols(hidden);
  for (let t = 0; t < numTokens; t++) {
    for (let c = 0; c < hidden; c++) out[t * hidden + c] = FP8_E4M3_TABLE[data[t * hidden + c]!]! * scales[t * s + ((c / FP8_GROUP) | 0)]!;
  }
  return out;
}
