// `seekd info`: what a model directory holds and what running it needs — architecture, parameter
// counts (total and active per token), stored dtypes, weight memory and KV-cache bytes per token, and
// the memory plan `seekd serve` would make with the same options (model/memory-plan.ts).
// Reads config.json and the safetensors headers only (no weights are loaded).
import type { Command } from 'commander';
import { Checkpoint } from '../../weights/checkpoint.ts';
import { SafetensorsError } from '../../weights/errors.ts';
import { ConfigError, isMoeLayer, loadConfig, type DeepseekConfig } from '../../model/config.ts';
import { checkWeights, parameterCounts, tensorSpecs } from '../../model/weight-map.ts';
import { fittingKvBlocks, planMemory, weightFootprint } from '../../model/memory-plan.ts';
import { CACHE_BLOCK_SIZE } from '../../model/latent-cache.ts';
import { DTYPE_BYTES } from '../../tensor/dtypes.ts';
import { checkModelDir, parseQuantize } from '../model-args.ts';
import { intOpt } from './serve.ts';
import { UsageError } from '../errors.ts';
import { backendNames } from '../../kernels/index.ts';
import { closeDevice, describeDevice, getDevice, type DeviceReport } from '../../kernels/webgpu/device.ts';

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
  /** Weights as loaded (with the MTP module; after --quantize). */
  memory: { weights_bytes: number; absorbed_mla_bytes: number; kv_bytes_per_token: number };
  /** The memory plan of `seekd serve` with the same options (KV cache lowered to fit where it can be). */
  plan: {
    quantize: 'fp8' | null; total_bytes: number; weights_bytes: number; kv_cache_bytes: number; kv_cache_tokens: number;
    scratch_bytes: number; runtime_bytes: number; available_bytes: number; available_source: string; fits: boolean;
    problems: string[]; fixes: string[];
  };
}

export interface InfoOptions {
  quantize?: 'fp8';
  /** Serving sizes the plan assumes (serve's defaults when absent). */
  maxModelLen?: number;
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
}

/**
 * Computes the report from config and checkpoint headers (no weight is read). The headers are first
 * checked against the config by the loader's own rules (weight-map.ts checkWeights, as `score` loads:
 * with the MTP module, after --quantize), so a checkpoint that cannot load is refused with the same error.
 */
export function modelInfo(dir: string, o: InfoOptions = {}): ModelInfo {
  const c: DeepseekConfig = loadConfig(dir);
  const ck = Checkpoint.open(dir);
  try {
    checkWeights(ck, c, { mtp: true, routedExperts: true, quantize: o.quantize });
    const counts = parameterCounts(c);
    const dtypes: Record<string, number> = {};
    for (const s of tensorSpecs(c, { mtp: true })) {
      if (!ck.has(s.name)) continue;
      const t = ck.info(s.name);
      dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + t.byteLength / DTYPE_BYTES[t.dtype];
    }
    // The plan as `seekd serve` would run it (defaults as serve's; the MTP module is not loaded there).
    const maxModelLen = o.maxModelLen ?? Math.min(c.max_position_embeddings, 4096);
    const maxNumSeqs = o.maxNumSeqs ?? 32;
    const perSeq = Math.ceil(maxModelLen / CACHE_BLOCK_SIZE);
    const planOpts = { quantize: o.quantize, maxModelLen, maxNumSeqs, maxBatchTokens: o.maxNumBatchedTokens ?? 512, mtp: false };
    const wanted = Math.max(perSeq, Math.min(4096, perSeq * maxNumSeqs));
    let plan = planMemory(c, ck, { ...planOpts, kvBlocks: wanted });
    if (!plan.fits) plan = planMemory(c, ck, { ...planOpts, kvBlocks: Math.max(perSeq, fittingKvBlocks(plan, wanted)) }, plan.available);
    const fp = weightFootprint(c, ck, { quantize: o.quantize, mtp: true });
    let moe = 0;
    for (let l = 0; l < c.num_hidden_layers; l++) if (isMoeLayer(c, l)) moe++;
    return {
      model_type: c.model_type,
      layers: { total: c.num_hidden_layers, dense: c.num_hidden_layers - moe, moe, mtp: c.num_nextn_predict_layers },
      hidden_size: c.hidden_size,
      heads: c.num_attention_heads,
      q_lora_rank: c.q_lora_rank,
      kv_lora_rank: c.kv_lora_rank,
      qk_nope_head_dim: c.qk_nope_head_dim,
      qk_rope_head_dim: c.qk_rope_head_dim,
      v_head_dim: c.v_head_dim,
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
        weights_bytes: fp.matrices + fp.vectors,
        absorbed_mla_bytes: fp.absorbedMla,
        kv_bytes_per_token: plan.kvCache.bytesPerToken,
      },
      plan: {
        quantize: o.quantize ?? null,
        total_bytes: plan.total,
        weights_bytes: plan.weights.total,
        kv_cache_bytes: plan.kvCache.bytes,
        kv_cache_tokens: plan.kvCache.tokens,
        scratch_bytes: plan.scratch,
        runtime_bytes: plan.runtime,
        available_bytes: plan.available.bytes,
        available_source: plan.available.source,
        fits: plan.fits,
        problems: plan.problems,
        fixes: plan.fixes,
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
    .option('--quantize <fmt>', 'plan for quantization while loading (fp8)')
    .option('--max-model-len <n>', 'plan for this context limit (default: min(config, 4096), as serve)')
    .option('--max-num-seqs <n>', 'plan for this many sequences (default 32, as serve)')
    .option('--max-num-batched-tokens <n>', 'plan for this many tokens per step (default 512, as serve)')
    .option('--backend <name>', 'also report this backend: webgpu prints the adapter and the limits the GPU forward plans with')
    .option('--json', 'print the report as JSON')
    .action(async (opts: { model: string; json?: boolean; quantize?: string; maxModelLen?: string; maxNumSeqs?: string; maxNumBatchedTokens?: string; backend?: string }) => {
      checkModelDir(opts.model);
      const io: InfoOptions = {
        quantize: parseQuantize(opts.quantize),
        maxModelLen: intOpt('max-model-len', opts.maxModelLen),
        maxNumSeqs: intOpt('max-num-seqs', opts.maxNumSeqs),
        maxNumBatchedTokens: intOpt('max-num-batched-tokens', opts.maxNumBatchedTokens),
      };
      let info: ModelInfo;
      try {
        info = modelInfo(opts.model, io);
      } catch (e) {
        if (e instanceof ConfigError || e instanceof SafetensorsError) throw new UsageError(e.message);
        throw e;
      }
      if (opts.backend !== undefined && !backendNames().includes(opts.backend)) {
        throw new UsageError(`unknown --backend '${opts.backend}' (available: ${backendNames().join(', ')})`);
      }
      const gpu = opts.backend === 'webgpu' ? await webgpuReport() : null;
      if (opts.json) {
        process.stdout.write(JSON.stringify(gpu ? { ...info, webgpu: gpu } : info) + '\n');
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
        `memory: weights ${bytes(i.memory.weights_bytes)}${i.plan.quantize ? ` after --quantize ${i.plan.quantize}` : ''} + absorbed-MLA copies ${bytes(i.memory.absorbed_mla_bytes)}; KV cache ${bytes(i.memory.kv_bytes_per_token)} per token (f32 latent)`,
        `plan (serve): ${bytes(i.plan.total_bytes)} of ${bytes(i.plan.available_bytes)} available (${i.plan.available_source}): `
          + `weights ${bytes(i.plan.weights_bytes)}, KV cache ${bytes(i.plan.kv_cache_bytes)} (${i.plan.kv_cache_tokens} tokens), scratch ${bytes(i.plan.scratch_bytes)}, runtime ${bytes(i.plan.runtime_bytes)}`
          + (i.plan.fits ? ' -- fits' : ` -- does NOT fit: ${i.plan.problems.join('; ')}; fixes: ${i.plan.fixes.join('; ')}`),
      ];
      if (gpu) {
        const l = gpu.limits;
        lines.push(`webgpu: ${gpu.adapter || '(no adapter description)'} on ${gpu.platform} (feature level ${gpu.featureLevel}); features: ${gpu.features.join(', ') || 'none'}`,
          `webgpu limits: maxStorageBufferBindingSize ${bytes(l.maxStorageBufferBindingSize ?? 0)}, maxBufferSize ${bytes(l.maxBufferSize ?? 0)} `
          + `(weights beyond a binding are split into parts), maxStorageBuffersPerShaderStage ${l.maxStorageBuffersPerShaderStage}, `
          + `maxComputeInvocationsPerWorkgroup ${l.maxComputeInvocationsPerWorkgroup}, maxComputeWorkgroupStorageSize ${bytes(l.maxComputeWorkgroupStorageSize ?? 0)}, `
          + `maxComputeWorkgroupsPerDimension ${l.maxComputeWorkgroupsPerDimension}`);
      }
      process.stdout.write(lines.join('\n') + '\n');
    });
}

/** The WebGPU device the GPU forward would use (opened and closed again). */
async function webgpuReport(): Promise<DeviceReport> {
  const ctx = await getDevice();
  try {
    return describeDevice(ctx);
  } finally {
    await closeDevice();
  }
}
