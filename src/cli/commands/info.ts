// `seekd info`: what a model directory holds and what running it needs — architecture, parameter
// counts (total and active per token), stored dtypes, weight memory and KV-cache bytes per token.
// Reads config.json and the safetensors headers only (no weights are loaded).
import type { Command } from 'commander';
import { Checkpoint } from '../../weights/checkpoint.ts';
import { SafetensorsError } from '../../weights/errors.ts';
import { ConfigError, isMoeLayer, loadConfig, type DeepseekConfig } from '../../model/config.ts';
import { parameterCounts, tensorSpecs } from '../../model/weight-map.ts';
import { FP8_BLOCK } from '../../kernels/api.ts';
import { DTYPE_BYTES } from '../../tensor/dtypes.ts';
import { checkModelDir } from '../model-args.ts';
import { UsageError } from '../errors.ts';

export interface ModelInfo {
  model_type: string;
  layers: { total: number; dense: number; moe: number; mtp: number };
  hidden_size: number;
  heads: number;
  q_lora_rank: number | null;
  kv_lora_rank: number;
  qk_nope_head_dim: number;
  qk_rope_head_dim: number;
  v_head_dim: number;
  vocab_size: number;
  routed_experts: number | null;
  experts_per_token: number | null;
  shared_experts: number;
  routing: string | null;
  rope_scaling: string;
  quantization: string | null;
  params: { total: number; active_per_token: number; mtp: number };
  dtypes: Record<string, number>;
  memory: { weights_bytes: number; absorbed_mla_bytes: number; kv_bytes_per_token: number };
}

/** Computes the report from config and checkpoint headers. */
export function modelInfo(dir: string): ModelInfo {
  const c: DeepseekConfig = loadConfig(dir);
  const ck = Checkpoint.open(dir);
  try {
    const counts = parameterCounts(c);
    const dtypes: Record<string, number> = {};
    let weightBytes = 0;
    for (const s of tensorSpecs(c, { mtp: true })) {
      if (!ck.has(s.name)) continue;
      const t = ck.info(s.name);
      const n = t.byteLength / DTYPE_BYTES[t.dtype];
      dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + n;
      // Vectors are widened to f32 on load; matrices keep their stored bytes (+ FP8 scales).
      weightBytes += s.kind === 'vector' ? n * 4 : t.byteLength;
      if (ck.has(`${s.name}_scale_inv`)) weightBytes += ck.info(`${s.name}_scale_inv`).byteLength;
    }
    // The absorbed MLA keeps per-head copies of kv_b_proj (K part transposed, V part): same bytes as
    // kv_b_proj, or f32 where an FP8 head slice does not start on a 128-row block.
    let absorbed = 0;
    const H = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim, r = c.kv_lora_rank;
    const layersWithAttn = c.num_hidden_layers;
    const kvbName = 'model.layers.0.self_attn.kv_b_proj.weight';
    const fp8 = ck.has(kvbName) && ck.info(kvbName).dtype === 'F8_E4M3';
    const elt = ck.has(kvbName) ? DTYPE_BYTES[ck.info(kvbName).dtype] : 2;
    for (let h = 0; h < H; h++) {
      for (const [start, rows] of [[h * (nope + v), nope], [h * (nope + v) + nope, v]] as const) {
        if (fp8 && start % FP8_BLOCK !== 0) absorbed += rows * r * 4;
        else absorbed += rows * r * elt + (fp8 ? Math.ceil(rows / FP8_BLOCK) * Math.ceil(r / FP8_BLOCK) * 4 : 0);
      }
    }
    absorbed *= layersWithAttn;
    let moe = 0;
    for (let l = 0; l < c.num_hidden_layers; l++) if (isMoeLayer(c, l)) moe++;
    return {
      model_type: c.model_type,
      layers: { total: c.num_hidden_layers, dense: c.num_hidden_layers - moe, moe, mtp: c.num_nextn_predict_layers },
      hidden_size: c.hidden_size,
      heads: c.num_attention_heads,
      q_lora_rank: c.q_lora_rank,
      kv_lora_rank: c.kv_lora_rank,
      qk_nope_head_dim: nope,
      qk_rope_head_dim: c.qk_rope_head_dim,
      v_head_dim: v,
      vocab_size: c.vocab_size,
      routed_experts: c.n_routed_experts,
      experts_per_token: c.num_experts_per_tok,
      shared_experts: c.n_shared_experts ?? 0,
      routing: c.n_routed_experts === null ? null
        : `${c.scoring_func}/${c.topk_method}${c.n_group ? ` (${c.topk_group} of ${c.n_group} groups)` : ''}, norm_topk_prob ${c.norm_topk_prob}, scale ${c.routed_scaling_factor}`,
      rope_scaling: c.rope_scaling ? `yarn factor ${c.rope_scaling.factor} (mscale ${c.rope_scaling.mscale}, mscale_all_dim ${c.rope_scaling.mscale_all_dim})` : 'none',
      quantization: c.quantization_config ? 'fp8 e4m3, 128x128 block scales' : null,
      params: { total: counts.total, active_per_token: counts.activePerToken, mtp: counts.mtp },
      dtypes,
      memory: {
        weights_bytes: weightBytes,
        absorbed_mla_bytes: absorbed,
        kv_bytes_per_token: c.num_hidden_layers * (c.kv_lora_rank + c.qk_rope_head_dim) * 4,
      },
    };
  } finally {
    ck.close();
  }
}

function human(n: number, unit = ''): string {
  const units = ['', 'K', 'M', 'G', 'T'];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${i === 0 ? String(v) : v.toFixed(2)}${units[i]}${unit}`;
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(2)} ${units[i]}`;
}

export function register(program: Command): void {
  program.command('info')
    .description('describe a model directory: architecture, parameters, dtypes, memory needed')
    .requiredOption('--model <dir>', 'model directory (Hugging Face layout)')
    .option('--json', 'print the report as JSON')
    .action((opts: { model: string; json?: boolean }) => {
      checkModelDir(opts.model);
      let info: ModelInfo;
      try {
        info = modelInfo(opts.model);
      } catch (e) {
        if (e instanceof ConfigError || e instanceof SafetensorsError) throw new UsageError(e.message);
        throw e;
      }
      if (opts.json) {
        process.stdout.write(JSON.stringify(info) + '\n');
        return;
      }
      const i = info;
      const lines = [
        `architecture: ${i.model_type}, ${i.layers.total} layers (${i.layers.dense} dense, ${i.layers.moe} MoE) + ${i.layers.mtp} MTP, hidden ${i.hidden_size}, vocab ${i.vocab_size}`,
        `attention: MLA, ${i.heads} heads, q_lora_rank ${i.q_lora_rank ?? 'none (q_proj)'}, kv_lora_rank ${i.kv_lora_rank}, qk ${i.qk_nope_head_dim}+${i.qk_rope_head_dim}, v ${i.v_head_dim}, rope scaling ${i.rope_scaling}`,
        i.routed_experts === null ? 'mlp: dense only'
          : `moe: ${i.routed_experts} routed experts, ${i.experts_per_token} per token, ${i.shared_experts} shared; ${i.routing}`,
        `parameters: ${human(i.params.total)} total, ${human(i.params.active_per_token)} active per token (+ ${human(i.params.mtp)} MTP)`,
        `dtypes: ${Object.entries(i.dtypes).map(([d, n]) => `${d} ${human(n)}`).join(', ')}${i.quantization ? ` (${i.quantization})` : ''}`,
        `memory: weights ${bytes(i.memory.weights_bytes)} + absorbed-MLA copies ${bytes(i.memory.absorbed_mla_bytes)}; KV cache ${bytes(i.memory.kv_bytes_per_token)} per token (f32 latent)`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    });
}
