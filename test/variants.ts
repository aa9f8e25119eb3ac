// Small random DeepSeek-family checkpoints covering the config variations of the family, generated
// deterministically (seeded PRNG per tensor name) in BF16 or FP8 (128x128 block-quantised decoder
// projections, as in DeepSeek-V3 checkpoints). Shapes are tiny on purpose (fast tests) but cross FP8
// block edges (hidden 160 = 128 + 32) so partial blocks are exercised.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors, type TensorToWrite } from '../src/weights/writer.ts';
import { encodeBf16, bf16ToF32, f32ToFp8e4m3, FP8_E4M3_TABLE } from '../src/tensor/dtypes.ts';
import { mulberry32 } from '../src/tensor/random.ts';

export type VariantName = 'v2-lite' | 'v2-group' | 'v3-norope';

/** Config overrides per variant, on top of the shared tiny base. */
export const VARIANT_CONFIGS: Record<VariantName, Record<string, unknown>> = {
  // DeepSeek-V2-Lite style: no q LoRA (q_proj), softmax + greedy, no normalisation, 2 shared experts,
  // YaRN with mscale == mscale_all_dim = 0.707.
  'v2-lite': {
    model_type: 'deepseek_v2', architectures: ['DeepseekV2ForCausalLM'], num_hidden_layers: 3,
    q_lora_rank: null, qk_nope_head_dim: 32, qk_rope_head_dim: 16, v_head_dim: 32, num_attention_heads: 3,
    n_routed_experts: 8, num_experts_per_tok: 3, n_shared_experts: 2, n_group: 1, topk_group: 1,
    scoring_func: 'softmax', topk_method: 'greedy', norm_topk_prob: false, routed_scaling_factor: 1.0,
    first_k_dense_replace: 1, moe_layer_freq: 1, num_nextn_predict_layers: 0,
    rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 0.707 },
  },
  // DeepSeek-V2 style: group-limited greedy over softmax scores, routed_scaling_factor 16, v_head_dim ≠
  // qk_nope_head_dim, every other layer MoE from layer 0, YaRN mscale (1.0) ≠ mscale_all_dim (0.5),
  // and a large rms_norm_eps (HF applies it to the layer norms only, 1e-6 to q_a/kv_a_layernorm).
  'v2-group': {
    model_type: 'deepseek_v2', architectures: ['DeepseekV2ForCausalLM'], num_hidden_layers: 3,
    q_lora_rank: 48, qk_nope_head_dim: 32, qk_rope_head_dim: 16, v_head_dim: 48, num_attention_heads: 2,
    n_routed_experts: 8, num_experts_per_tok: 2, n_shared_experts: 1, n_group: 4, topk_group: 2,
    scoring_func: 'softmax', topk_method: 'group_limited_greedy', norm_topk_prob: false, routed_scaling_factor: 16.0,
    first_k_dense_replace: 0, moe_layer_freq: 2, num_nextn_predict_layers: 0, rms_norm_eps: 1e-2,
    rope_scaling: { type: 'yarn', factor: 16, original_max_position_embeddings: 2048, beta_fast: 32, beta_slow: 1, mscale: 1.0, mscale_all_dim: 0.5 },
  },
  // DeepSeek-V3 style routing (sigmoid, noaux_tc with bias) but plain RoPE, no shared experts, tied
  // embeddings, v_head_dim ≠ qk_nope_head_dim with nope = 128 (FP8 kv_b head slices on and off 128-row
  // block boundaries), one MTP layer.
  'v3-norope': {
    model_type: 'deepseek_v3', architectures: ['DeepseekV3ForCausalLM'], num_hidden_layers: 2,
    q_lora_rank: 64, qk_nope_head_dim: 128, qk_rope_head_dim: 16, v_head_dim: 64, num_attention_heads: 2,
    n_routed_experts: 8, num_experts_per_tok: 2, n_shared_experts: 0, n_group: 2, topk_group: 1,
    scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true, routed_scaling_factor: 2.5,
    first_k_dense_replace: 1, moe_layer_freq: 1, num_nextn_predict_layers: 1, tie_word_embeddings: true,
    rope_scaling: null,
  },
};

const BASE = {
  hidden_size: 160, intermediate_size: 200, moe_intermediate_size: 48, vocab_size: 300, kv_lora_rank: 64,
  rope_theta: 10000, rms_norm_eps: 1e-6, max_position_embeddings: 8192, hidden_act: 'silu', attention_bias: false,
  tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 1, torch_dtype: 'bfloat16',
};

function crc32(s: string): number {
  let c = ~0;
  for (let i = 0; i < s.length; i++) {
    c ^= s.charCodeAt(i);
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

const prng = mulberry32;

type Init = { kind: 'normal'; std: number } | { kind: 'uniform'; lo: number; hi: number };

function values(name: string, n: number, init: Init): Float32Array {
  const r = prng(crc32(name) ^ 0x5eed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (init.kind === 'uniform') out[i] = init.lo + (init.hi - init.lo) * r();
    else out[i] = init.std * Math.sqrt(-2 * Math.log(Math.max(r(), 1e-12))) * Math.cos(2 * Math.PI * r());
  }
  return out;
}

function quantizeFp8(w: Float32Array, rows: number, cols: number): { q: Uint8Array; s: Float32Array } {
  const sr = Math.ceil(rows / 128), sc = Math.ceil(cols / 128);
  const q = new Uint8Array(rows * cols);
  const s = new Float32Array(sr * sc);
  for (let bi = 0; bi < sr; bi++) {
    for (let bj = 0; bj < sc; bj++) {
      let amax = 0;
      for (let i = bi * 128; i < Math.min(rows, bi * 128 + 128); i++) for (let j = bj * 128; j < Math.min(cols, bj * 128 + 128); j++) amax = Math.max(amax, Math.abs(w[i * cols + j]!));
      const scale = Math.fround(amax / 448) || 1;
      s[bi * sc + bj] = scale;
      for (let i = bi * 128; i < Math.min(rows, bi * 128 + 128); i++) for (let j = bj * 128; j < Math.min(cols, bj * 128 + 128); j++) q[i * cols + j] = f32ToFp8e4m3(Math.fround(w[i * cols + j]! / scale));
    }
  }
  return { q, s };
}

/** Writes config.json + model.safetensors for a variant into `dir`; returns the config. */
export function writeVariant(dir: string, name: VariantName, format: 'bf16' | 'fp8'): Record<string, unknown> {
  const cfg: Record<string, any> = { ...BASE, ...VARIANT_CONFIGS[name] }; // eslint-disable-line @typescript-eslint/no-explicit-any
  cfg.num_key_value_heads = cfg.num_attention_heads;
  if (format === 'fp8') cfg.quantization_config = { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [128, 128] };
  const H = cfg.hidden_size, nH = cfg.num_attention_heads, qd = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim;
  const tensors: TensorToWrite[] = [];
  const mat = (n: string, rows: number, cols: number, quant: boolean) => {
    const v = encodeBf16(values(n, rows * cols, { kind: 'normal', std: 1 / Math.sqrt(cols) }));
    if (format === 'fp8' && quant) {
      const { q, s } = quantizeFp8(Float32Array.from(v, bf16ToF32), rows, cols);
      tensors.push({ name: n, dtype: 'F8_E4M3', shape: [rows, cols], data: q });
      tensors.push({ name: `${n}_scale_inv`, dtype: 'F32', shape: [Math.ceil(rows / 128), Math.ceil(cols / 128)], data: s });
    } else {
      tensors.push({ name: n, dtype: 'BF16', shape: [rows, cols], data: v });
    }
  };
  const vec = (n: string, len: number) => tensors.push({ name: n, dtype: 'BF16', shape: [len], data: encodeBf16(values(n, len, { kind: 'uniform', lo: 0.75, hi: 1.25 })) });
  const mlpW = (p: string, inter: number) => {
    mat(`${p}.gate_proj.weight`, inter, H, true);
    mat(`${p}.up_proj.weight`, inter, H, true);
    mat(`${p}.down_proj.weight`, H, inter, true);
  };
  const layer = (l: number) => {
    const p = `model.layers.${l}`;
    vec(`${p}.input_layernorm.weight`, H);
    vec(`${p}.post_attention_layernorm.weight`, H);
    if (cfg.q_lora_rank === null) {
      mat(`${p}.self_attn.q_proj.weight`, nH * qd, H, true);
    } else {
      mat(`${p}.self_attn.q_a_proj.weight`, cfg.q_lora_rank, H, true);
      vec(`${p}.self_attn.q_a_layernorm.weight`, cfg.q_lora_rank);
      mat(`${p}.self_attn.q_b_proj.weight`, nH * qd, cfg.q_lora_rank, true);
    }
    mat(`${p}.self_attn.kv_a_proj_with_mqa.weight`, cfg.kv_lora_rank + cfg.qk_rope_head_dim, H, true);
    vec(`${p}.self_attn.kv_a_layernorm.weight`, cfg.kv_lora_rank);
    mat(`${p}.self_attn.kv_b_proj.weight`, nH * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank, true);
    mat(`${p}.self_attn.o_proj.weight`, H, nH * cfg.v_head_dim, true);
    const moe = l >= cfg.first_k_dense_replace && l % cfg.moe_layer_freq === 0;
    if (!moe) {
      mlpW(`${p}.mlp`, cfg.intermediate_size);
      return;
    }
    mat(`${p}.mlp.gate.weight`, cfg.n_routed_experts, H, false);
    if (cfg.topk_method === 'noaux_tc') {
      tensors.push({ name: `${p}.mlp.gate.e_score_correction_bias`, dtype: 'F32', shape: [cfg.n_routed_experts], data: values(`${p}.bias`, cfg.n_routed_experts, { kind: 'normal', std: 0.05 }) });
    }
    for (let e = 0; e < cfg.n_routed_experts; e++) mlpW(`${p}.mlp.experts.${e}`, cfg.moe_intermediate_size);
    if (cfg.n_shared_experts) mlpW(`${p}.mlp.shared_experts`, cfg.n_shared_experts * cfg.moe_intermediate_size);
  };
  tensors.push({ name: 'model.embed_tokens.weight', dtype: 'BF16', shape: [cfg.vocab_size, H], data: encodeBf16(values('embed', cfg.vocab_size * H, { kind: 'normal', std: 1 })) });
  vec('model.norm.weight', H);
  if (!cfg.tie_word_embeddings) mat('lm_head.weight', cfg.vocab_size, H, false);
  for (let l = 0; l < cfg.num_hidden_layers + cfg.num_nextn_predict_layers; l++) layer(l);
  for (let j = 0; j < cfg.num_nextn_predict_layers; j++) {
    const p = `model.layers.${cfg.num_hidden_layers + j}`;
    vec(`${p}.enorm.weight`, H);
    vec(`${p}.hnorm.weight`, H);
    mat(`${p}.eh_proj.weight`, H, 2 * H, false);
    vec(`${p}.shared_head.norm.weight`, H);
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg, null, 2));
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return cfg;
}

export { FP8_E4M3_TABLE };
