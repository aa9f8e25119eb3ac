// Rotary position embedding of DeepSeek MLA: interleaved pairs (x[2i], x[2i+1]) rotated by
// pos·inv_freq[i], with YaRN frequency interpolation when `rope_scaling` is set.
// References: deepseek-ai/DeepSeek-V3 inference/model.py `precompute_freqs_cis` / `apply_rotary_emb`
// (interleaved complex pairs) and HF modeling_deepseek.py `DeepseekV2YarnRotaryEmbedding` (same angles;
// its cos/sin carry the factor yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)).
// inv_freq and the angle pos·inv_freq are computed in f32 as the reference does (torch float32).
import { yarnGetMscale, type DeepseekConfig } from './config.ts';

/** YaRN correction dim for a number of rotations (HF `yarn_find_correction_dim`). */
function correctionDim(rotations: number, dim: number, base: number, maxPos: number): number {
  return (dim * Math.log(maxPos / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
}

/** inv_freq[i] for i < dim/2 (f32 values). */
export function ropeInvFreq(c: DeepseekConfig): Float32Array {
  const dim = c.qk_rope_head_dim;
  const half = dim / 2;
  const base = c.rope_theta;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = Math.fround(1 / Math.fround(base ** Math.fround((2 * i) / dim)));
  const rs = c.rope_scaling;
  if (!rs) return inv;
  let low = Math.floor(correctionDim(rs.beta_fast, dim, base, rs.original_max_position_embeddings));
  let high = Math.ceil(correctionDim(rs.beta_slow, dim, base, rs.original_max_position_embeddings));
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001;
  for (let i = 0; i < half; i++) {
    // ramp = 0: extrapolate (keep base frequency); ramp = 1: interpolate (divide by factor).
    const ramp = Math.min(1, Math.max(0, Math.fround((i - low) / (high - low))));
    const extra = inv[i]!;
    const inter = Math.fround(extra / rs.factor);
    inv[i] = Math.fround(Math.fround(inter * ramp) + Math.fround(extra * (1 - ramp)));
  }
  return inv;
}

/** The cos/sin magnitude factor: yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim). */
export function ropeMscale(c: DeepseekConfig): number {
  const rs = c.rope_scaling;
  if (!rs) return 1;
  return yarnGetMscale(rs.factor, rs.mscale) / yarnGetMscale(rs.factor, rs.mscale_all_dim);
}

/** cos/sin per position, [pos, dim/2], grown on demand. */
export class RopeTable {
  readonly half: number;
  readonly invFreq: Float32Array;
  readonly mscale: number;
  #cos = new Float32Array(0);
  #sin = new Float32Array(0);
  #positions = 0;

  constructor(c: DeepseekConfig) {
    this.invFreq = ropeInvFreq(c);
    this.half = this.invFreq.length;
    this.mscale = ropeMscale(c);
  }

  #ensure(n: number): void {
    if (n <= this.#positions) return;
    const cap = Math.max(n, this.#positions * 2, 256);
    const cos = new Float32Array(cap * this.half);
    const sin = new Float32Array(cap * this.half);
    for (let p = 0; p < cap; p++) {
      for (let i = 0; i < this.half; i++) {
        const a = Math.fround(p * this.invFreq[i]!);
        cos[p * this.half + i] = Math.cos(a) * this.mscale;
        sin[p * this.half + i] = Math.sin(a) * this.mscale;
      }
    }
    this.#cos = cos;
    this.#sin = sin;
    this.#positions = cap;
  }

  /**
   * cos/sin rows for the given positions, each repeated `repeat` times (one per head):
   * returns [positions.length * repeat, dim/2] arrays for the `rope` kernel.
   */
  rows(positions: Int32Array, repeat = 1): { cos: Float32Array; sin: Float32Array } {
    let maxPos = 0;
    for (const p of positions) maxPos = Math.max(maxPos, p);
    this.#ensure(maxPos + 1);
    const h = this.half;
    const cos = new Float32Array(positions.length * repeat * h);
    const sin = new Float32Array(positions.length * repeat * h);
    for (let t = 0; t < positions.length; t++) {
      const src = positions[t]! * h;
      for (let r = 0; r < repeat; r++) {
        const dst = (t * repeat + r) * h;
        cos.set(this.#cos.subarray(src, src + h), dst);
        sin.set(this.#sin.subarray(src, src + h), dst);
      }
    }
    return { cos, sin };
  }
}
