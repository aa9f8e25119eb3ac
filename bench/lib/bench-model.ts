// Deterministic random DeepSeek-V3-architecture checkpoints for benchmarks, written tensor by tensor
// (never the whole model in memory) into a cache directory outside git (.cache/bench-models/).
// Values: uniform with std 1/√fan_in (norms ≈ 1), from a per-tensor seeded xorshift generator, so the
// files are identical on every machine; BF16, or FP8 e4m3fn with 128x128 block scales for every decoder
// projection (as in DeepSeek-V3 checkpoints).
import { closeSync, existsSync, mkdirSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { f32ToFp8e4m3 } from '../../src/tensor/dtypes.ts';

/** The "medium" benchmark shape: ≈506M parameters, ≈131M active per token. */
export const MEDIUM_CONFIG = {
  architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3',
  vocab_size: 32256, hidden_size: 1024, intermediate_size: 4096, moe_intermediate_size: 384,
  num_hidden_layers: 6, first_k_dense_replace: 1, moe_layer_freq: 1,
  num_attention_heads: 16, num_key_value_heads: 16,
  q_lora_rank: 384, kv_lora_rank: 512, qk_rope_head_dim: 64, qk_nope_head_dim: 128, v_head_dim: 128,
  n_routed_experts: 64, num_experts_per_tok: 6, n_shared_experts: 2, n_group: 8, topk_group: 4,
  scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true, routed_scaling_factor: 2.5,
  rope_theta: 10000, max_position_embeddings: 163840, rms_norm_eps: 1e-6, hidden_act: 'silu',
  attention_bias: false, tie_word_embeddings: false, num_nextn_predict_layers: 0,
  rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 1.0, mscale_all_dim: 1.0 },
  bos_token_id: 0, eos_token_id: 1, torch_dtype: 'bfloat16',
} as const;

type Cfg = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

interface Planned { name: string; dtype: 'BF16' | 'F32' | 'F8_E4M3'; shape: number[]; fill: (out: Uint8Array) => void }

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0 || 1;
}

/** Uniform(-a, a) values with std `std`, seeded by the tensor name. */
function fillUniform(name: string, out: Float32Array, std: number, mean = 0): void {
  let x = hash(name);
  const a = std * Math.sqrt(3);
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    out[i] = mean + a * (((x >>> 0) / 4294967296) * 2 - 1);
  }
}

function toBf16Bytes(v: Float32Array, out: Uint8Array): void {
  const u = new Uint32Array(v.buffer, v.byteOffset, v.length);
  const o = new Uint16Array(out.buffer, out.byteOffset, v.length);
  for (let i = 0; i < v.length; i++) {
    const b = u[i]!;
    o[i] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff; // RNE (values are finite)
  }
}

function plan(c: Cfg, format: 'bf16' | 'fp8'): Planned[] {
  const H = c.hidden_size, nH = c.num_attention_heads, qd = c.qk_nope_head_dim + c.qk_rope_head_dim;
  const out: Planned[] = [];
  const mat = (name: string, rows: number, cols: number, quant: boolean) => {
    if (format === 'fp8' && quant) {
      const sr = Math.ceil(rows / 128), sc = Math.ceil(cols / 128);
      const scales = new Float32Array(sr * sc);
      out.push({
        name, dtype: 'F8_E4M3', shape: [rows, cols], fill: (o) => {
          const v = new Float32Array(rows * cols);
          fillUniform(name, v, 1 / Math.sqrt(cols));
          for (let bi = 0; bi < sr; bi++) {
            for (let bj = 0; bj < sc; bj++) {
              let amax = 0;
              for (let i = bi * 128; i < Math.min(rows, bi * 128 + 128); i++) for (let j = bj * 128; j < Math.min(cols, bj * 128 + 128); j++) amax = Math.max(amax, Math.abs(v[i * cols + j]!));
              const s = Math.fround(amax / 448) || 1;
              scales[bi * sc + bj] = s;
              const inv = 1 / s;
              for (let i = bi * 128; i < Math.min(rows, bi * 128 + 128); i++) for (let j = bj * 128; j < Math.min(cols, bj * 128 + 128); j++) o[i * cols + j] = f32ToFp8e4m3(v[i * cols + j]! * inv);
            }
          }
        },
      });
      // Written right after its weight, whose fill computed the scales.
      out.push({ name: `${name}_scale_inv`, dtype: 'F32', shape: [sr, sc], fill: (o) => o.set(new Uint8Array(scales.buffer)) });
    } else {
      out.push({ name, dtype: 'BF16', shape: [rows, cols], fill: (o) => { const v = new Float32Array(rows * cols); fillUniform(name, v, 1 / Math.sqrt(cols)); toBf16Bytes(v, o); } });
    }
  };
  const vec = (name: string, n: number) => out.push({ name, dtype: 'BF16', shape: [n], fill: (o) => { const v = new Float32Array(n); fillUniform(name, v, 0.1, 1); toBf16Bytes(v, o); } });
  const mlp = (p: string, inter: number) => {
    mat(`${p}.gate_proj.weight`, inter, H, true);
    mat(`${p}.up_proj.weight`, inter, H, true);
    mat(`${p}.down_proj.weight`, H, inter, true);
  };
  out.push({ name: 'model.embed_tokens.weight', dtype: 'BF16', shape: [c.vocab_size, H], fill: (o) => { const v = new Float32Array(c.vocab_size * H); fillUniform('embed', v, 1); toBf16Bytes(v, o); } });
  vec('model.norm.weight', H);
  mat('lm_head.weight', c.vocab_size, H, false);
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    vec(`${p}.input_layernorm.weight`, H);
    vec(`${p}.post_attention_layernorm.weight`, H);
    mat(`${p}.self_attn.q_a_proj.weight`, c.q_lora_rank, H, true);
    vec(`${p}.self_attn.q_a_layernorm.weight`, c.q_lora_rank);
    mat(`${p}.self_attn.q_b_proj.weight`, nH * qd, c.q_lora_rank, true);
    mat(`${p}.self_attn.kv_a_proj_with_mqa.weight`, c.kv_lora_rank + c.qk_rope_head_dim, H, true);
    vec(`${p}.self_attn.kv_a_layernorm.weight`, c.kv_lora_rank);
    mat(`${p}.self_attn.kv_b_proj.weight`, nH * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank, true);
    mat(`${p}.self_attn.o_proj.weight`, H, nH * c.v_head_dim, true);
    if (l < c.first_k_dense_replace) {
      mlp(`${p}.mlp`, c.intermediate_size);
      continue;
    }
    mat(`${p}.mlp.gate.weight`, c.n_routed_experts, H, false);
    out.push({ name: `${p}.mlp.gate.e_score_correction_bias`, dtype: 'F32', shape: [c.n_routed_experts], fill: (o) => { const v = new Float32Array(c.n_routed_experts); fillUniform(`${p}.bias`, v, 0.02); o.set(new Uint8Array(v.buffer)); } });
    for (let e = 0; e < c.n_routed_experts; e++) mlp(`${p}.mlp.experts.${e}`, c.moe_intermediate_size);
    mlp(`${p}.mlp.shared_experts`, c.n_shared_experts * c.moe_intermediate_size);
  }
  return out;
}

const BYTES = { BF16: 2, F32: 4, F8_E4M3: 1 } as const;

/**
 * Ensures `<cacheDir>/<name>-<format>` holds the model (built once; a `.complete` marker guards
 * against half-written directories). Returns the directory.
 */
export function ensureBenchModel(cacheDir: string, name: string, config: Cfg, format: 'bf16' | 'fp8'): string {
  const dir = join(cacheDir, `${name}-${format}`);
  if (existsSync(join(dir, '.complete'))) return dir;
  mkdirSync(dir, { recursive: true });
  const cfg: Cfg = { ...config };
  if (format === 'fp8') cfg.quantization_config = { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [128, 128] };
  const tensors = plan(cfg, format);
  // Header: data offsets in order, padded with spaces to a multiple of 8.
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let off = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1) * BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + n] };
    off += n;
  }
  let text = JSON.stringify(header);
  while ((Buffer.byteLength(text) + 8) % 8 !== 0) text += ' ';
  const tmp = join(dir, 'model.safetensors.partial');
  const fd = openSync(tmp, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
    writeSync(fd, len);
    writeSync(fd, Buffer.from(text));
    for (const t of tensors) {
      const n = t.shape.reduce((a, b) => a * b, 1) * BYTES[t.dtype];
      const buf = new Uint8Array(n);
      t.fill(buf);
      let done = 0;
      while (done < n) done += writeSync(fd, buf, done, n - done);
    }
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, join(dir, 'model.safetensors'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg, null, 2));
  writeFileSync(join(dir, '.complete'), '');
  return dir;
}
