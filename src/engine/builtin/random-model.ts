// The random model: a small DeepSeek-V3-architecture checkpoint (MLA attention, sigmoid-routed MoE
// with a shared expert, one dense layer first) with a DeepSeek-style tokenizer and chat template,
// generated deterministically on first use into a cache directory. Its weights are RANDOM: tests and
// benchmarks use it to exercise the whole stack on a model whose output never stops early (no EOS
// preference) and whose logits stay the same whatever the trained built-in model (./builtin.ts) becomes.
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { encodeBf16 } from '../../tensor/dtypes.ts';
import { writeSafetensors, type TensorToWrite } from '../../weights/writer.ts';
import { Rng } from '../rng.ts';
import { buildTokenizerFiles } from './tokenizer-files.ts';

/** Bump when the weights, config, tokenizer or template change: a new version lands in a new directory. */
export const RANDOM_MODEL_VERSION = 'v2';
export const RANDOM_MODEL_ID = 'seekd-random';
const SEED = 20240601;

/** HF config.json of the random model (DeepSeek-V3 field names, verbatim). */
export const RANDOM_MODEL_CONFIG = {
  architectures: ['DeepseekV3ForCausalLM'],
  model_type: 'deepseek_v3',
  vocab_size: 2048,
  hidden_size: 384,
  intermediate_size: 768,
  moe_intermediate_size: 192,
  num_hidden_layers: 3,
  first_k_dense_replace: 1,
  moe_layer_freq: 1,
  // Few heads: attention runs in plain JS per sequence, so it is what batching cannot amortize.
  num_attention_heads: 2,
  num_key_value_heads: 2,
  q_lora_rank: 128,
  kv_lora_rank: 128,
  qk_nope_head_dim: 64,
  qk_rope_head_dim: 32,
  v_head_dim: 64,
  n_routed_experts: 8,
  n_shared_experts: 1,
  num_experts_per_tok: 2,
  n_group: 2,
  topk_group: 1,
  scoring_func: 'sigmoid',
  topk_method: 'noaux_tc',
  norm_topk_prob: true,
  routed_scaling_factor: 2.5,
  hidden_act: 'silu',
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  rope_scaling: null,
  max_position_embeddings: 4096,
  num_nextn_predict_layers: 0,
  tie_word_embeddings: false,
  attention_bias: false,
  bos_token_id: 0,
  eos_token_id: 1,
  torch_dtype: 'bfloat16',
};

export function defaultRandomModelDir(): string {
  const base = process.env.SEEKD_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'seekd');
  return join(base, `random-${RANDOM_MODEL_VERSION}`);
}

type Cfg = typeof RANDOM_MODEL_CONFIG;

/** Tensor names and shapes ([out, in] for linear layers), in file order. */
export function randomModelTensorSpecs(c: Cfg = RANDOM_MODEL_CONFIG): { name: string; shape: number[]; init: 'linear' | 'embed' | 'norm' | 'bias' }[] {
  const H = c.hidden_size;
  const qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  const specs: ReturnType<typeof randomModelTensorSpecs> = [];
  const lin = (name: string, out: number, inp: number) => specs.push({ name, shape: [out, inp], init: 'linear' });
  const norm = (name: string, n: number) => specs.push({ name, shape: [n], init: 'norm' });
  specs.push({ name: 'model.embed_tokens.weight', shape: [c.vocab_size, H], init: 'embed' });
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    norm(`${p}.input_layernorm.weight`, H);
    norm(`${p}.post_attention_layernorm.weight`, H);
    lin(`${p}.self_attn.q_a_proj.weight`, c.q_lora_rank, H);
    norm(`${p}.self_attn.q_a_layernorm.weight`, c.q_lora_rank);
    lin(`${p}.self_attn.q_b_proj.weight`, c.num_attention_heads * qk, c.q_lora_rank);
    lin(`${p}.self_attn.kv_a_proj_with_mqa.weight`, c.kv_lora_rank + c.qk_rope_head_dim, H);
    norm(`${p}.self_attn.kv_a_layernorm.weight`, c.kv_lora_rank);
    lin(`${p}.self_attn.kv_b_proj.weight`, c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    lin(`${p}.self_attn.o_proj.weight`, H, c.num_attention_heads * c.v_head_dim);
    if (l < c.first_k_dense_replace) {
      lin(`${p}.mlp.gate_proj.weight`, c.intermediate_size, H);
      lin(`${p}.mlp.up_proj.weight`, c.intermediate_size, H);
      lin(`${p}.mlp.down_proj.weight`, H, c.intermediate_size);
    } else {
      lin(`${p}.mlp.gate.weight`, c.n_routed_experts, H);
      specs.push({ name: `${p}.mlp.gate.e_score_correction_bias`, shape: [c.n_routed_experts], init: 'bias' });
      for (let e = 0; e < c.n_routed_experts; e++) {
        lin(`${p}.mlp.experts.${e}.gate_proj.weight`, c.moe_intermediate_size, H);
        lin(`${p}.mlp.experts.${e}.up_proj.weight`, c.moe_intermediate_size, H);
        lin(`${p}.mlp.experts.${e}.down_proj.weight`, H, c.moe_intermediate_size);
      }
      const S = c.n_shared_experts * c.moe_intermediate_size;
      lin(`${p}.mlp.shared_experts.gate_proj.weight`, S, H);
      lin(`${p}.mlp.shared_experts.up_proj.weight`, S, H);
      lin(`${p}.mlp.shared_experts.down_proj.weight`, H, S);
    }
  }
  norm('model.norm.weight', H);
  lin('lm_head.weight', c.vocab_size, H);
  return specs;
}

/** Standard normal draws (Box-Muller) from the seeded PRNG. */
function normals(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - rng.next();
    const v = rng.next();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** Generates the tensors (BF16, the correction bias F32). Each tensor has its own seed (name hash), so order does not matter. */
export function randomModelTensors(c: Cfg = RANDOM_MODEL_CONFIG): TensorToWrite[] {
  return randomModelTensorSpecs(c).map((s) => {
    let h = SEED;
    for (const ch of s.name) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193);
    const rng = new Rng(h >>> 0);
    const n = s.shape.reduce((a, b) => a * b, 1);
    let v: Float32Array;
    if (s.init === 'linear') v = normals(rng, n, 1 / Math.sqrt(s.shape[1]!));
    else if (s.init === 'embed') v = normals(rng, n, 1);
    else if (s.init === 'bias') return { name: s.name, dtype: 'F32' as const, shape: s.shape, data: normals(rng, n, 0.05) };
    else v = Float32Array.from({ length: n }, () => 0.75 + 0.5 * rng.next());
    return { name: s.name, dtype: 'BF16' as const, shape: s.shape, data: encodeBf16(v) };
  });
}

/**
 * Returns the random model's directory, generating it first if needed (atomically: written to a
 * temporary sibling, then renamed, so an interrupted run never leaves a half-written model).
 */
export function ensureRandomModel(dir = defaultRandomModelDir(), onProgress?: (msg: string) => void): string {
  if (existsSync(join(dir, 'model.safetensors')) && existsSync(join(dir, 'tokenizer.json'))) return dir;
  onProgress?.(`generating the random model in ${dir}`);
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  mkdirSync(tmp, { recursive: true });
  try {
    const tk = buildTokenizerFiles(RANDOM_MODEL_CONFIG.vocab_size, RANDOM_MODEL_CONFIG.max_position_embeddings);
    writeFileSync(join(tmp, 'config.json'), JSON.stringify(RANDOM_MODEL_CONFIG, null, 2) + '\n');
    writeFileSync(join(tmp, 'generation_config.json'), JSON.stringify({ bos_token_id: 0, eos_token_id: 1, do_sample: true, temperature: 0.7, top_p: 0.95 }, null, 2) + '\n');
    writeFileSync(join(tmp, 'tokenizer.json'), JSON.stringify(tk.tokenizerJson));
    writeFileSync(join(tmp, 'tokenizer_config.json'), JSON.stringify(tk.tokenizerConfig, null, 2) + '\n');
    writeFileSync(join(tmp, 'README.md'), `# ${RANDOM_MODEL_ID} (${RANDOM_MODEL_VERSION})\n\nA DeepSeek-V3-architecture model with RANDOM weights, generated by seekd from a fixed seed. It is not trained: its output is meaningless.\n`);
    writeSafetensors(join(tmp, 'model.safetensors'), randomModelTensors(), { format: 'pt', generator: `seekd random ${RANDOM_MODEL_VERSION}` });
    mkdirSync(join(dir, '..'), { recursive: true });
    try {
      renameSync(tmp, dir);
    } catch (e) {
      // Another process won the race: keep its copy.
      if (!existsSync(join(dir, 'model.safetensors'))) throw e;
      rmSync(tmp, { recursive: true, force: true });
    }
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return dir;
}
