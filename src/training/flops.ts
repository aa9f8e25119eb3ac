// Model FLOPs of training and the GEMM peak they are measured against (model FLOPs utilization, MFU).
// Model FLOPs per trained token = 3 × the forward's (forward, input gradients, weight gradients):
//   2 × every multiply-add of the matmuls a token runs (attention projections, dense MLP or router +
//   top-k routed experts + shared experts, lm_head; the MTP modules' eh_proj, block and head on their
//   n − k positions), plus causal attention 2·heads·(qk + v)·(i + 1) at position i.
// The peak is the wasm backend's f32 matmul (the kernel every training product goes to, gemm.ts) at a
// 512×1024×1024 shape with its weight and activations already in backend memory, timed in the same
// process: MFU counts copies, transposes, element-wise ops and scheduling as lost time, as it should.
// Reference: Chowdhery et al., "PaLM" (2022), appendix B (model FLOPs utilization).
import type { Kernels } from '../kernels/api.ts';
import { isMoeLayer, qkHeadDim, type DeepseekConfig } from '../model/config.ts';

/** Multiply-adds per token of one decoder block's projections (layer id l; MTP blocks count as MoE per their own rule). */
function blockMacs(c: DeepseekConfig, moe: boolean): number {
  const H = c.hidden_size, Hd = c.num_attention_heads, qk = qkHeadDim(c);
  let a = c.q_lora_rank ? H * c.q_lora_rank + c.q_lora_rank * Hd * qk : H * Hd * qk;
  a += H * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank * Hd * (c.qk_nope_head_dim + c.v_head_dim) + Hd * c.v_head_dim * H;
  if (!moe) return a + 3 * H * c.intermediate_size;
  const E = c.n_routed_experts ?? 0, K = c.num_experts_per_tok ?? 0, mi = c.moe_intermediate_size;
  return a + H * E + K * 3 * H * mi + (c.n_shared_experts ?? 0) * 3 * H * mi;
}

/** Forward FLOPs of one window of n positions: the projections' products and causal attention's. */
export function forwardFlops(c: DeepseekConfig, n: number): { matmul: number; attention: number } {
  const Hd = c.num_attention_heads, qk = qkHeadDim(c), H = c.hidden_size, V = c.vocab_size;
  const attn = (len: number) => 2 * Hd * (qk + c.v_head_dim) * ((len * (len + 1)) / 2); // Σ_i (i + 1) keys
  let matmul = 0, attention = 0;
  for (let l = 0; l < c.num_hidden_layers; l++) { matmul += 2 * n * blockMacs(c, isMoeLayer(c, l)); attention += attn(n); }
  matmul += 2 * n * H * V;
  for (let k = 1; k <= c.num_nextn_predict_layers && n - k > 0; k++) {
    const m = n - k;
    matmul += 2 * m * (2 * H * H + blockMacs(c, c.n_routed_experts !== null) + H * V);
    attention += attn(m);
  }
  return { matmul, attention };
}

/** Training FLOPs of one window of n positions (n + 1 tokens): 3 × the forward's. */
export function trainFlopsPerWindow(c: DeepseekConfig, n: number): number {
  const f = forwardFlops(c, n);
  return 3 * (f.matmul + f.attention);
}

/** Best-of-reps f32 GEMM rate of the backend (GFLOP/s) at 512×1024×1024, weights in backend memory. */
export function gemmPeak(k: Kernels, reps = 4): number {
  const m = 512, n = 1024, kk = 1024;
  const w = k.allocWeight('f32', n, kk);
  const x = k.allocWeight('f32', 1, m * kk).data as Float32Array;
  const out = k.allocWeight('f32', 1, m * n).data as Float32Array;
  let s = 1;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5;
  for (let i = 0; i < w.data.length; i++) (w.data as Float32Array)[i] = rnd();
  for (let i = 0; i < x.length; i++) x[i] = rnd();
  let best = Infinity;
  for (let r = 0; r <= reps; r++) {
    const t0 = performance.now();
    k.matmul(x, m, w, out);
    const dt = performance.now() - t0;
    if (r > 0) best = Math.min(best, dt);
  }
  return (2 * m * n * kk) / (best / 1000) / 1e9;
}
