// An independent float64 oracle of the Hugging Face `modeling_deepseek.py` semantics (DeepSeek-V2 and
// V3), for checking the engine on checkpoints that have no reference vectors. Deliberately plain:
// no cache (the whole sequence every time), per-head naive attention, HF's own RoPE formulation
// (de-interleave then rotate_half), HF's MoEGate branches per model_type, HF's norm eps (config
// rms_norm_eps for the layer norms, the DeepseekV2RMSNorm default 1e-6 for q_a/kv_a_layernorm).
// It shares no code with src/model: only the safetensors reader and the number formats.
// References: HF modeling_deepseek.py for DeepSeek-V2 (deepseek-ai/DeepSeek-V2, DeepSeek-V2-Lite) and
// DeepSeek-V3 (deepseek-ai/DeepSeek-V3): DeepseekV2YarnRotaryEmbedding, apply_rotary_pos_emb, MoEGate,
// DeepseekV2Attention (eager), DeepseekV2DecoderLayer.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint } from '../../src/weights/checkpoint.ts';
import { FP8_E4M3_TABLE } from '../../src/tensor/dtypes.ts';

type Cfg = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface OracleResult {
  /** [T, vocab] logits at every position. */
  logits: Float64Array;
  /** Per MoE layer: experts [T][k] in descending choice-score order, weights [T][k]. */
  routing: Map<number, { experts: number[][]; weights: number[][] }>;
}

class Tensors {
  #cache = new Map<string, Float64Array>();
  constructor(readonly ck: Checkpoint) {}
  get(name: string): Float64Array {
    let v = this.#cache.get(name);
    if (v) return v;
    const info = this.ck.info(name);
    if (info.dtype === 'F8_E4M3') {
      const q = this.ck.readBytes(name);
      const s = this.ck.readF32(`${name}_scale_inv`);
      const [rows, cols] = info.shape as [number, number];
      const sc = Math.ceil(cols / 128);
      v = new Float64Array(rows * cols);
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          // The checkpoint's dequantisation is a float32 product (README, reference weight_dequant).
          v[i * cols + j] = Math.fround(FP8_E4M3_TABLE[q[i * cols + j]!]! * s[Math.floor(i / 128) * sc + Math.floor(j / 128)]!);
        }
      }
    } else {
      v = Float64Array.from(this.ck.readF32(name));
    }
    this.#cache.set(name, v);
    return v;
  }
  has(name: string): boolean {
    return this.ck.has(name);
  }
}

/** y[T, out] = x[T, in] · Wᵀ. */
function linear(x: Float64Array, T: number, w: Float64Array, out: number): Float64Array {
  const inn = w.length / out;
  const y = new Float64Array(T * out);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let i = 0; i < inn; i++) s += x[t * inn + i]! * w[o * inn + i]!;
      y[t * out + o] = s;
    }
  }
  return y;
}

function rmsNorm(x: Float64Array, T: number, w: Float64Array, eps: number): Float64Array {
  const d = w.length;
  const y = new Float64Array(x.length);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < d; i++) ss += x[t * d + i]! ** 2;
    const r = 1 / Math.sqrt(ss / d + eps);
    for (let i = 0; i < d; i++) y[t * d + i] = w[i]! * (x[t * d + i]! * r);
  }
  return y;
}

const silu = (v: number) => v / (1 + Math.exp(-v));

function getMscale(scale: number, mscale: number): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/** HF rotary tables: cos/sin [T, dim] with emb = cat(freqs, freqs), times the YaRN mscale ratio. */
function rotary(cfg: Cfg, T: number): { cos: Float64Array; sin: Float64Array; dim: number } {
  const dim: number = cfg.qk_rope_head_dim;
  const base: number = cfg.rope_theta ?? 10000;
  const rs = cfg.rope_scaling;
  const half = dim / 2;
  const inv = new Float64Array(half);
  let m = 1;
  for (let i = 0; i < half; i++) inv[i] = 1 / base ** ((2 * i) / dim);
  if (rs) {
    const factor: number = rs.factor;
    const orig: number = rs.original_max_position_embeddings ?? 4096;
    const bf: number = rs.beta_fast ?? 32, bs: number = rs.beta_slow ?? 1;
    const corr = (rot: number) => (dim * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(base));
    const low = Math.max(Math.floor(corr(bf)), 0);
    let high = Math.min(Math.ceil(corr(bs)), dim - 1);
    if (low === high) high += 0.001;
    for (let i = 0; i < half; i++) {
      const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
      const mask = 1 - ramp; // HF inv_freq_mask: 1 keeps the extrapolated (base) frequency
      inv[i] = (inv[i]! / factor) * (1 - mask) + inv[i]! * mask;
    }
    m = getMscale(factor, rs.mscale ?? 1) / getMscale(factor, rs.mscale_all_dim ?? 0);
  }
  const cos = new Float64Array(T * dim), sin = new Float64Array(T * dim);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < dim; i++) {
      const a = t * inv[i % half]!;
      cos[t * dim + i] = Math.cos(a) * m;
      sin[t * dim + i] = Math.sin(a) * m;
    }
  }
  return { cos, sin, dim };
}

/** HF apply_rotary_pos_emb on one vector: de-interleave (view(d/2, 2).transpose), then x·cos + rotate_half(x)·sin. */
function applyRope(x: Float64Array, off: number, cos: Float64Array, sin: Float64Array, t: number, dim: number): Float64Array {
  const half = dim / 2;
  const d = new Float64Array(dim);
  for (let i = 0; i < half; i++) { d[i] = x[off + 2 * i]!; d[half + i] = x[off + 2 * i + 1]!; }
  const out = new Float64Array(dim);
  for (let i = 0; i < dim; i++) {
    const rot = i < half ? -d[i + half]! : d[i - half]!;
    out[i] = d[i]! * cos[t * dim + i]! + rot * sin[t * dim + i]!;
  }
  return out;
}

function mlp(W: Tensors, prefix: string, x: Float64Array, T: number, H: number): Float64Array {
  const gw = W.get(`${prefix}.gate_proj.weight`);
  const inter = gw.length / H;
  const g = linear(x, T, gw, inter);
  const u = linear(x, T, W.get(`${prefix}.up_proj.weight`), inter);
  for (let i = 0; i < g.length; i++) g[i] = silu(g[i]!) * u[i]!;
  return linear(g, T, W.get(`${prefix}.down_proj.weight`), H);
}

/** Indices of the k largest values, descending (ties: lower index first). */
function topk(v: Float64Array | number[], k: number): number[] {
  return Array.from({ length: v.length }, (_, i) => i).sort((a, b) => (v[b]! - v[a]!) || a - b).slice(0, k);
}

function moeGate(cfg: Cfg, W: Tensors, l: number, x: Float64Array, T: number, H: number) {
  const E: number = cfg.n_routed_experts;
  const k: number = cfg.num_experts_per_tok;
  const v3 = cfg.model_type === 'deepseek_v3';
  const scoring = cfg.scoring_func ?? (v3 ? 'sigmoid' : 'softmax');
  const method = cfg.topk_method ?? (v3 ? 'noaux_tc' : 'greedy');
  const norm = cfg.norm_topk_prob ?? v3;
  const rsf = cfg.routed_scaling_factor ?? (v3 ? 2.5 : 1);
  const logits = linear(x, T, W.get(`model.layers.${l}.mlp.gate.weight`), E);
  const experts: number[][] = [], weights: number[][] = [];
  for (let t = 0; t < T; t++) {
    const row = logits.subarray(t * E, (t + 1) * E);
    let scores: Float64Array;
    if (scoring === 'softmax') {
      const mx = Math.max(...row);
      const e = row.map((v) => Math.exp(v - mx));
      const s = e.reduce((a, b) => a + b, 0);
      scores = e.map((v) => v / s);
    } else {
      scores = row.map((v) => 1 / (1 + Math.exp(-v)));
    }
    let choice = Float64Array.from(scores);
    if (method === 'noaux_tc') {
      const b = W.get(`model.layers.${l}.mlp.gate.e_score_correction_bias`);
      choice = choice.map((v, i) => v + b[i]!);
    }
    if (method !== 'greedy') {
      const G: number = cfg.n_group, per = E / G;
      const gs = Array.from({ length: G }, (_, g) => {
        const grp = Array.from(choice.subarray(g * per, (g + 1) * per)).sort((a, b) => b - a);
        return method === 'noaux_tc' ? grp[0]! + grp[1]! : grp[0]!;
      });
      const keep = new Set(topk(gs, cfg.topk_group));
      choice = choice.map((v, i) => (keep.has(Math.floor(i / per)) ? v : 0)); // HF masked_fill(…, 0.0)
    }
    const idx = topk(choice, k);
    let w = idx.map((i) => scores[i]!);
    if (v3) {
      if (k > 1 && norm) { const s = w.reduce((a, b) => a + b, 0) + 1e-20; w = w.map((v) => v / s); }
      w = w.map((v) => v * rsf);
    } else if (k > 1 && norm) {
      const s = w.reduce((a, b) => a + b, 0) + 1e-20; w = w.map((v) => v / s);
    } else {
      w = w.map((v) => v * rsf);
    }
    experts.push(idx);
    weights.push(w);
  }
  return { experts, weights };
}

/** Full-sequence float64 forward: logits at every position and the routing of every MoE layer. */
export function oracleForward(dir: string, tokens: readonly number[]): OracleResult {
  const cfg: Cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const ck = Checkpoint.open(dir);
  try {
    const W = new Tensors(ck);
    const T = tokens.length;
    const H: number = cfg.hidden_size, V: number = cfg.vocab_size, nH: number = cfg.num_attention_heads;
    const nope: number = cfg.qk_nope_head_dim, rope: number = cfg.qk_rope_head_dim, vd: number = cfg.v_head_dim;
    const kvl: number = cfg.kv_lora_rank, qd = nope + rope;
    const eps: number = cfg.rms_norm_eps ?? 1e-6;
    const rs = cfg.rope_scaling;
    let scale = qd ** -0.5;
    if (rs && rs.mscale_all_dim) { const m = getMscale(rs.factor, rs.mscale_all_dim); scale *= m * m; }
    const { cos, sin } = rotary(cfg, T);
    const emb = W.get('model.embed_tokens.weight');
    let x = new Float64Array(T * H);
    tokens.forEach((id, t) => x.set(emb.subarray(id * H, (id + 1) * H), t * H));
    const routing = new Map<number, { experts: number[][]; weights: number[][] }>();
    const v3 = cfg.model_type === 'deepseek_v3';
    const firstDense = cfg.first_k_dense_replace ?? (v3 ? 3 : 0);
    for (let l = 0; l < cfg.num_hidden_layers; l++) {
      const p = `model.layers.${l}`;
      // --- attention
      const h = rmsNorm(x, T, W.get(`${p}.input_layernorm.weight`), eps);
      const q = cfg.q_lora_rank == null
        ? linear(h, T, W.get(`${p}.self_attn.q_proj.weight`), nH * qd)
        : linear(rmsNorm(linear(h, T, W.get(`${p}.self_attn.q_a_proj.weight`), cfg.q_lora_rank), T, W.get(`${p}.self_attn.q_a_layernorm.weight`), 1e-6),
          T, W.get(`${p}.self_attn.q_b_proj.weight`), nH * qd);
      const ckv = linear(h, T, W.get(`${p}.self_attn.kv_a_proj_with_mqa.weight`), kvl + rope);
      const lat = new Float64Array(T * kvl);
      for (let t = 0; t < T; t++) lat.set(ckv.subarray(t * (kvl + rope), t * (kvl + rope) + kvl), t * kvl);
      const kv = linear(rmsNorm(lat, T, W.get(`${p}.self_attn.kv_a_layernorm.weight`), 1e-6), T, W.get(`${p}.self_attn.kv_b_proj.weight`), nH * (nope + vd));
      const kpe = Array.from({ length: T }, (_, t) => applyRope(ckv, t * (kvl + rope) + kvl, cos, sin, t, rope));
      const attn = new Float64Array(T * nH * vd);
      for (let hh = 0; hh < nH; hh++) {
        for (let t = 0; t < T; t++) {
          const qpe = applyRope(q, (t * nH + hh) * qd + nope, cos, sin, t, rope);
          const sc = new Float64Array(t + 1);
          for (let s = 0; s <= t; s++) {
            let a = 0;
            for (let d = 0; d < nope; d++) a += q[(t * nH + hh) * qd + d]! * kv[(s * nH + hh) * (nope + vd) + d]!;
            for (let d = 0; d < rope; d++) a += qpe[d]! * kpe[s]![d]!;
            sc[s] = a * scale;
          }
          const mx = Math.max(...sc);
          let sum = 0;
          for (let s = 0; s <= t; s++) { sc[s] = Math.exp(sc[s]! - mx); sum += sc[s]!; }
          for (let s = 0; s <= t; s++) {
            for (let d = 0; d < vd; d++) attn[(t * nH + hh) * vd + d] += (sc[s]! / sum) * kv[(s * nH + hh) * (nope + vd) + nope + d]!;
          }
        }
      }
      const o = linear(attn, T, W.get(`${p}.self_attn.o_proj.weight`), H);
      x = x.map((v, i) => v + o[i]!);
      // --- MLP / MoE
      const h2 = rmsNorm(x, T, W.get(`${p}.post_attention_layernorm.weight`), eps);
      const isMoe = cfg.n_routed_experts != null && l >= firstDense && l % (cfg.moe_layer_freq ?? 1) === 0;
      let y: Float64Array;
      if (!isMoe) {
        y = mlp(W, `${p}.mlp`, h2, T, H);
      } else {
        const r = moeGate(cfg, W, l, h2, T, H);
        routing.set(l, r);
        y = new Float64Array(T * H);
        for (let t = 0; t < T; t++) {
          const xt = h2.subarray(t * H, (t + 1) * H);
          r.experts[t]!.forEach((e, j) => {
            const ye = mlp(W, `${p}.mlp.experts.${e}`, xt, 1, H);
            for (let i = 0; i < H; i++) y[t * H + i] += r.weights[t]![j]! * ye[i]!;
          });
        }
        if (cfg.n_shared_experts) {
          const z = mlp(W, `${p}.mlp.shared_experts`, h2, T, H);
          for (let i = 0; i < y.length; i++) y[i] += z[i]!;
        }
      }
      x = x.map((v, i) => v + y[i]!);
    }
    const hn = rmsNorm(x, T, W.get('model.norm.weight'), eps);
    const head = cfg.tie_word_embeddings ? emb : W.get('lm_head.weight');
    return { logits: linear(hn, T, head, V), routing };
  } finally {
    ck.close();
  }
}
