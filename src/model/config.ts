// Hugging Face `config.json` of the DeepSeek-V2/V3 family, field names verbatim, validated.
// References: deepseek-ai/DeepSeek-V3 `configuration_deepseek.py` (DeepseekV3Config) and
// deepseek-ai/DeepSeek-V2 `configuration_deepseek.py` (DeepseekV2Config); defaults for absent optional
// fields follow those classes per model_type. Fields that define tensor shapes are required.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** A config.json the model cannot run: names the field. Exit code 2 in the CLI (user-fixable input). */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly exitCode = 2;
  constructor(readonly field: string, message: string, readonly source = 'config.json') {
    super(`${source}: ${message}`);
  }
}

/** YaRN rope scaling (HF `DeepseekV2YarnRotaryEmbedding`). */
export interface YarnRopeScaling {
  /** "yarn" (the only scaling type this family ships with). */
  type: 'yarn';
  /** Context extension factor s; inv_freq of low-frequency dims is divided by it. */
  factor: number;
  /** Context length the model was pre-trained with (YaRN correction range is computed from it). */
  original_max_position_embeddings: number;
  /** Rotations above which a dim is left unscaled (correction range low end). */
  beta_fast: number;
  /** Rotations below which a dim is fully interpolated (correction range high end). */
  beta_slow: number;
  /** cos/sin are multiplied by yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim). */
  mscale: number;
  /** Softmax scale is multiplied by yarn_get_mscale(factor, mscale_all_dim)² (0 = no factor). */
  mscale_all_dim: number;
}

/** FP8 block quantisation as in DeepSeek-V3 checkpoints. */
export interface Fp8QuantizationConfig {
  /** "fp8". */
  quant_method: 'fp8';
  /** "e4m3" (weights are float8_e4m3fn). */
  fmt: string;
  /** "dynamic": activations are not quantised in the checkpoint (we compute them in f32). */
  activation_scheme: string;
  /** [128, 128]: one `weight_scale_inv` per 128x128 weight block. */
  weight_block_size: [number, number];
}

export type ModelType = 'deepseek_v2' | 'deepseek_v3';
export type ScoringFunc = 'softmax' | 'sigmoid';
export type TopkMethod = 'greedy' | 'group_limited_greedy' | 'noaux_tc';

export interface DeepseekConfig {
  /** deepseek_v2 or deepseek_v3; selects HF defaults and the V2/V3 routing-weight rule. */
  model_type: ModelType;
  /** Tokens in the embedding and lm_head. */
  vocab_size: number;
  /** Residual stream width H. */
  hidden_size: number;
  /** Dense MLP intermediate width (layers before first_k_dense_replace or off moe_layer_freq). */
  intermediate_size: number;
  /** Intermediate width of each routed expert (and, × n_shared_experts, of the shared expert MLP). */
  moe_intermediate_size: number;
  /** Decoder layers used for next-token logits (the MTP layers follow at these indices and beyond). */
  num_hidden_layers: number;
  /** Attention heads. */
  num_attention_heads: number;
  /** Must equal num_attention_heads (MLA decompresses one K/V per head). */
  num_key_value_heads: number;
  /** Query low-rank dim (q_a_proj → q_a_layernorm → q_b_proj), or null for a full `q_proj` (V2-Lite). */
  q_lora_rank: number | null;
  /** Compressed KV latent dim c_kv (cached per token, normalised by kv_a_layernorm). */
  kv_lora_rank: number;
  /** Per-head query/key dims without rotary embedding. */
  qk_nope_head_dim: number;
  /** Rotary dims per head (k_pe is shared by all heads). */
  qk_rope_head_dim: number;
  /** Per-head value dim (may differ from qk_nope_head_dim). */
  v_head_dim: number;
  /** Routed experts per MoE layer, or null for an all-dense model. */
  n_routed_experts: number | null;
  /** Shared experts (one MLP of width n_shared_experts × moe_intermediate_size); null/0 = none. */
  n_shared_experts: number | null;
  /** k: routed experts per token. */
  num_experts_per_tok: number | null;
  /** Routed-expert weights are multiplied by this. */
  routed_scaling_factor: number;
  /** Router scores: softmax over experts (V2) or per-expert sigmoid (V3). */
  scoring_func: ScoringFunc;
  /** greedy (top-k of scores), group_limited_greedy (V2: groups ranked by max score), noaux_tc (V3: scores + e_score_correction_bias, groups ranked by top-2 sum). */
  topk_method: TopkMethod;
  /** Expert groups (for the group-limited methods). */
  n_group: number | null;
  /** Groups kept per token (for the group-limited methods). */
  topk_group: number | null;
  /** Normalise the k routed weights to sum 1 (before routed_scaling_factor). */
  norm_topk_prob: boolean;
  /** Layers [0, first_k_dense_replace) use the dense MLP. */
  first_k_dense_replace: number;
  /** Layer i ≥ first_k_dense_replace is MoE iff i % moe_layer_freq == 0. */
  moe_layer_freq: number;
  /** RoPE base θ. */
  rope_theta: number;
  /** YaRN scaling, or null for plain RoPE. */
  rope_scaling: YarnRopeScaling | null;
  /** Longest context the model supports. */
  max_position_embeddings: number;
  /** RMSNorm epsilon (all norms). */
  rms_norm_eps: number;
  /** "silu" (the only activation of the family). */
  hidden_act: 'silu';
  /** false (MLA projections have no bias). */
  attention_bias: false;
  /** lm_head shares the embedding matrix. */
  tie_word_embeddings: boolean;
  /** MTP modules stored as layers num_hidden_layers.. (loaded, not used for next-token logits). */
  num_nextn_predict_layers: number;
  /** FP8 block quantisation, or null for BF16/F32 checkpoints. */
  quantization_config: Fp8QuantizationConfig | null;
  /** Token ids as written in config.json (for the engine; the model does not use them). */
  bos_token_id: number | null;
  eos_token_id: number | number[] | null;
}

type Json = Record<string, unknown>;

/** Largest accepted width (vocabulary, hidden, intermediate, ranks, head dims; also heads x head dim). */
export const MAX_WIDTH = 2 ** 24;
/** Largest accepted num_hidden_layers + num_nextn_predict_layers. */
export const MAX_LAYERS = 4096;
/** Largest accepted (layers x routed experts): 3 tensors each (DeepSeek-V3: 62 x 256). */
export const MAX_EXPERT_LAYERS = 2 ** 20;

/** model_type values accepted as another name for deepseek_v3. */
const MODEL_TYPE_ALIASES = ['kimi_k2'] as const;

const V2_DEFAULTS = {
  scoring_func: 'softmax', topk_method: 'greedy', norm_topk_prob: false, routed_scaling_factor: 1.0,
  first_k_dense_replace: 0, max_position_embeddings: 2048, num_nextn_predict_layers: 0,
} as const;
const V3_DEFAULTS = {
  scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true, routed_scaling_factor: 2.5,
  first_k_dense_replace: 3, max_position_embeddings: 4096, num_nextn_predict_layers: 1,
} as const;

class Reader {
  constructor(readonly j: Json, readonly source: string) {}
  err(field: string, msg: string): ConfigError {
    return new ConfigError(field, msg, this.source);
  }
  has(f: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.j, f) && this.j[f] !== undefined;
  }
  int(f: string, def?: number, min = 1): number {
    const v = this.has(f) ? this.j[f] : def;
    if (v === undefined) throw this.err(f, `missing required field ${f}`);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw this.err(f, `${f} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return v;
  }
  intOrNull(f: string, def: number | null, min = 1): number | null {
    const v = this.has(f) ? this.j[f] : def;
    if (v === null) return null;
    return this.int(f, v as number, min);
  }
  num(f: string, def?: number, pred: (x: number) => boolean = Number.isFinite, what = 'a finite number'): number {
    const v = this.has(f) ? this.j[f] : def;
    if (v === undefined) throw this.err(f, `missing required field ${f}`);
    if (typeof v !== 'number' || !pred(v)) throw this.err(f, `${f} must be ${what}, got ${JSON.stringify(v)}`);
    return v;
  }
  bool(f: string, def: boolean): boolean {
    const v = this.has(f) ? this.j[f] : def;
    if (typeof v !== 'boolean') throw this.err(f, `${f} must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }
  oneOf<T extends string>(f: string, allowed: readonly T[], def: T): T {
    const v = this.has(f) ? this.j[f] : def;
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      throw this.err(f, `unsupported ${f} ${JSON.stringify(v)} (supported: ${allowed.join(', ')})`);
    }
    return v as T;
  }
}

const positive = (x: number) => Number.isFinite(x) && x > 0;

function parseRopeScaling(r: Reader): YarnRopeScaling | null {
  const raw = r.j.rope_scaling;
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw r.err('rope_scaling', 'rope_scaling must be an object or null');
  const s = new Reader(raw as Json, r.source);
  const type = s.has('type') ? s.j.type : s.j.rope_type;
  if (type !== 'yarn') throw r.err('rope_scaling.type', `unsupported rope_scaling.type ${JSON.stringify(type)} (supported: yarn, or rope_scaling null)`);
  const wrap = <T>(fn: () => T): T => {
    try { return fn(); } catch (e) {
      if (e instanceof ConfigError) throw r.err(`rope_scaling.${e.field}`, e.message.replace(`${r.source}: `, 'rope_scaling.'));
      throw e;
    }
  };
  return wrap(() => ({
    type: 'yarn',
    factor: s.num('factor', undefined, positive, 'a positive number'),
    original_max_position_embeddings: s.int('original_max_position_embeddings', 4096),
    beta_fast: s.num('beta_fast', 32, positive, 'a positive number'),
    beta_slow: s.num('beta_slow', 1, positive, 'a positive number'),
    mscale: s.num('mscale', 1, (x) => Number.isFinite(x) && x >= 0, 'a number >= 0'),
    mscale_all_dim: s.num('mscale_all_dim', 0, (x) => Number.isFinite(x) && x >= 0, 'a number >= 0'),
  }));
}

function parseQuant(r: Reader): Fp8QuantizationConfig | null {
  const raw = r.j.quantization_config;
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw r.err('quantization_config', 'quantization_config must be an object');
  const q = raw as Json;
  if (q.quant_method !== 'fp8') throw r.err('quantization_config.quant_method', `unsupported quantization_config.quant_method ${JSON.stringify(q.quant_method)} (supported: fp8)`);
  const fmt = q.fmt ?? 'e4m3';
  if (fmt !== 'e4m3') throw r.err('quantization_config.fmt', `unsupported quantization_config.fmt ${JSON.stringify(fmt)} (supported: e4m3)`);
  const bs = q.weight_block_size ?? [128, 128];
  if (!Array.isArray(bs) || bs.length !== 2 || bs[0] !== 128 || bs[1] !== 128) {
    throw r.err('quantization_config.weight_block_size', `unsupported quantization_config.weight_block_size ${JSON.stringify(bs)} (supported: [128, 128])`);
  }
  // DeepSeek-V3.1+ adds scale_fmt "ue8m0": the checkpoint's block scales are powers of two (and DeepGEMM
  // rounds activation scales to powers of two). The scales are still stored as float32 weight_scale_inv,
  // so the weights dequantise the same way; activations here are not quantised, so nothing else changes.
  const scaleFmt = q.scale_fmt;
  if (scaleFmt !== undefined && scaleFmt !== null && scaleFmt !== 'ue8m0') {
    throw r.err('quantization_config.scale_fmt', `unsupported quantization_config.scale_fmt ${JSON.stringify(scaleFmt)} (supported: ue8m0, or absent)`);
  }
  const act = q.activation_scheme ?? 'dynamic';
  if (act !== 'dynamic') throw r.err('quantization_config.activation_scheme', `unsupported quantization_config.activation_scheme ${JSON.stringify(act)} (supported: dynamic)`);
  return { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [128, 128] };
}

/** Validates a parsed config.json. Throws ConfigError naming the offending field. */
export function parseConfig(json: unknown, source = 'config.json'): DeepseekConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new ConfigError('', 'config must be a JSON object', source);
  const r = new Reader(json as Json, source);
  if (!r.has('model_type')) throw r.err('model_type', 'missing required field model_type (deepseek_v2 or deepseek_v3)');
  // Kimi-K2 ships DeepSeek-V3's architecture and remote code (auto_map configuration_deepseek.DeepseekV3Config)
  // under its own model_type so that engines can tell it apart; it runs as deepseek_v3 (V3 defaults and the
  // V3 routing-weight rule), as vLLM and SGLang do.
  const declared = r.oneOf('model_type', ['deepseek_v2', 'deepseek_v3', ...MODEL_TYPE_ALIASES], undefined as unknown as ModelType);
  const model_type: ModelType = declared === 'deepseek_v2' ? 'deepseek_v2' : 'deepseek_v3';
  const d = model_type === 'deepseek_v2' ? V2_DEFAULTS : V3_DEFAULTS;
  const num_attention_heads = r.int('num_attention_heads');
  const n_routed_experts = r.intOrNull('n_routed_experts', null);
  const moe = n_routed_experts !== null;
  if (!r.has('q_lora_rank')) throw r.err('q_lora_rank', 'missing required field q_lora_rank (a number, or null for q_proj)');
  const cfg: DeepseekConfig = {
    model_type,
    vocab_size: r.int('vocab_size'),
    hidden_size: r.int('hidden_size'),
    intermediate_size: r.int('intermediate_size'),
    moe_intermediate_size: moe ? r.int('moe_intermediate_size') : r.int('moe_intermediate_size', 1),
    num_hidden_layers: r.int('num_hidden_layers'),
    num_attention_heads,
    num_key_value_heads: r.int('num_key_value_heads', num_attention_heads),
    q_lora_rank: r.intOrNull('q_lora_rank', null),
    kv_lora_rank: r.int('kv_lora_rank'),
    qk_nope_head_dim: r.int('qk_nope_head_dim'),
    qk_rope_head_dim: r.int('qk_rope_head_dim'),
    v_head_dim: r.int('v_head_dim'),
    n_routed_experts,
    n_shared_experts: r.intOrNull('n_shared_experts', null, 0),
    num_experts_per_tok: moe ? r.int('num_experts_per_tok') : r.intOrNull('num_experts_per_tok', null),
    routed_scaling_factor: r.num('routed_scaling_factor', d.routed_scaling_factor, positive, 'a positive number'),
    scoring_func: r.oneOf<ScoringFunc>('scoring_func', ['softmax', 'sigmoid'], d.scoring_func),
    topk_method: r.oneOf<TopkMethod>('topk_method', ['greedy', 'group_limited_greedy', 'noaux_tc'], d.topk_method),
    n_group: r.intOrNull('n_group', null),
    topk_group: r.intOrNull('topk_group', null),
    norm_topk_prob: r.bool('norm_topk_prob', d.norm_topk_prob),
    first_k_dense_replace: r.int('first_k_dense_replace', d.first_k_dense_replace, 0),
    moe_layer_freq: r.int('moe_layer_freq', 1),
    rope_theta: r.num('rope_theta', 10000, positive, 'a positive number'),
    rope_scaling: parseRopeScaling(r),
    max_position_embeddings: r.int('max_position_embeddings', d.max_position_embeddings),
    rms_norm_eps: r.num('rms_norm_eps', 1e-6, positive, 'a positive number'),
    hidden_act: r.oneOf('hidden_act', ['silu'], 'silu'),
    attention_bias: (() => {
      if (r.bool('attention_bias', false)) throw r.err('attention_bias', 'unsupported attention_bias true (MLA projections have no bias)');
      return false as const;
    })(),
    tie_word_embeddings: r.bool('tie_word_embeddings', false),
    num_nextn_predict_layers: r.int('num_nextn_predict_layers', d.num_nextn_predict_layers, 0),
    quantization_config: parseQuant(r),
    bos_token_id: typeof r.j.bos_token_id === 'number' ? r.j.bos_token_id : null,
    eos_token_id: typeof r.j.eos_token_id === 'number' || Array.isArray(r.j.eos_token_id) ? (r.j.eos_token_id as number | number[]) : null,
  };
  // Bounds: a width above 2^24 (64x the largest vocabulary published) is no model but a typo; it keeps
  // every tensor's element count (a product of two widths) and byte size exact (< 2^53), so `info` can
  // never print a nonsense size. Layer and expert counts are bounded by what a checkpoint can list.
  for (const f of ['vocab_size', 'hidden_size', 'intermediate_size', 'moe_intermediate_size', 'num_attention_heads', 'q_lora_rank',
    'kv_lora_rank', 'qk_nope_head_dim', 'qk_rope_head_dim', 'v_head_dim'] as const) {
    const v = cfg[f];
    if (v !== null && v > MAX_WIDTH) throw r.err(f, `${f} ${v} is larger than any model's (at most ${MAX_WIDTH})`);
  }
  if (cfg.num_attention_heads * Math.max(qkHeadDim(cfg), cfg.qk_nope_head_dim + cfg.v_head_dim) > MAX_WIDTH) {
    throw r.err('num_attention_heads', `num_attention_heads ${cfg.num_attention_heads} x head dims makes attention projections wider than ${MAX_WIDTH}`);
  }
  const layers = cfg.num_hidden_layers + cfg.num_nextn_predict_layers;
  if (layers > MAX_LAYERS) throw r.err('num_hidden_layers', `${cfg.num_hidden_layers} layers + ${cfg.num_nextn_predict_layers} MTP is more than any model's (at most ${MAX_LAYERS})`);
  if (cfg.n_routed_experts !== null && layers * cfg.n_routed_experts > MAX_EXPERT_LAYERS) {
    throw r.err('n_routed_experts', `n_routed_experts ${cfg.n_routed_experts} over ${layers} layers is ${3 * layers * cfg.n_routed_experts} expert tensors, more than a checkpoint can list (at most ${3 * MAX_EXPERT_LAYERS})`);
  }
  // Cross-field rules.
  if (cfg.num_key_value_heads !== cfg.num_attention_heads) {
    throw r.err('num_key_value_heads', `unsupported num_key_value_heads ${cfg.num_key_value_heads} != num_attention_heads ${cfg.num_attention_heads} (MLA has one K/V per head)`);
  }
  if (cfg.qk_rope_head_dim % 2 !== 0) throw r.err('qk_rope_head_dim', `qk_rope_head_dim ${cfg.qk_rope_head_dim} must be even`);
  if (moe) {
    const E = cfg.n_routed_experts!;
    const k = cfg.num_experts_per_tok!;
    if (k > E) throw r.err('num_experts_per_tok', `num_experts_per_tok ${k} exceeds n_routed_experts ${E}`);
    if (cfg.topk_method !== 'greedy') {
      if (cfg.n_group === null) throw r.err('n_group', `topk_method ${cfg.topk_method} needs n_group`);
      if (cfg.topk_group === null) throw r.err('topk_group', `topk_method ${cfg.topk_method} needs topk_group`);
      if (E % cfg.n_group !== 0) throw r.err('n_group', `n_routed_experts ${E} is not divisible by n_group ${cfg.n_group}`);
      if (cfg.topk_group > cfg.n_group) throw r.err('topk_group', `topk_group ${cfg.topk_group} exceeds n_group ${cfg.n_group}`);
      const perGroup = E / cfg.n_group;
      if (k > cfg.topk_group * perGroup) throw r.err('num_experts_per_tok', `num_experts_per_tok ${k} exceeds the ${cfg.topk_group * perGroup} experts of the kept groups`);
      if (cfg.topk_method === 'noaux_tc' && perGroup < 2) throw r.err('n_group', 'noaux_tc ranks groups by their top-2 scores: needs >= 2 experts per group');
    }
  }
  return cfg;
}

/** Reads and validates `<dir>/config.json`. */
export function loadConfig(dir: string): DeepseekConfig {
  const path = join(dir, 'config.json');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError('', `cannot read config.json: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, path);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError('', `config.json is not JSON: ${(e as Error).message}`, path);
  }
  return parseConfig(json, path);
}

// ---------------------------------------------------------------- derived quantities

/** Per-head query/key dim: qk_nope_head_dim + qk_rope_head_dim. */
export function qkHeadDim(c: DeepseekConfig): number {
  return c.qk_nope_head_dim + c.qk_rope_head_dim;
}

/** HF rule: MoE iff routed experts exist, i >= first_k_dense_replace and i % moe_layer_freq == 0. */
export function isMoeLayer(c: DeepseekConfig, i: number): boolean {
  return c.n_routed_experts !== null && i >= c.first_k_dense_replace && i % c.moe_layer_freq === 0;
}

/** HF `yarn_get_mscale`: 0.1·mscale·ln(scale) + 1 for scale > 1, else 1. */
export function yarnGetMscale(scale: number, mscale: number): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/** Attention softmax scale: qk_head_dim^-0.5, × yarn_get_mscale(factor, mscale_all_dim)² under YaRN. */
export function softmaxScale(c: DeepseekConfig): number {
  let s = qkHeadDim(c) ** -0.5;
  const rs = c.rope_scaling;
  if (rs && rs.mscale_all_dim) {
    const m = yarnGetMscale(rs.factor, rs.mscale_all_dim);
    s *= m * m;
  }
  return s;
}

/** Number of shared-expert intermediate units (0 when there are none). */
export function sharedIntermediate(c: DeepseekConfig): number {
  return (c.n_shared_experts ?? 0) * c.moe_intermediate_size;
}
