// The memory plan: what a model will hold once loaded, computed from config.json and the safetensors
// headers alone (no weight is read), set against the memory this process can have. Commands check it
// before loading, so a model that cannot fit stops at once with the numbers and the fixes instead of
// being killed by the OOM killer minutes later; `seekd info` prints it.
//
// What is counted (bytes):
// - weights: every matrix in the format it will have after loading (stored, or FP8 codes + 128x128
//   f32 scales under `quantize: 'fp8'`), vectors widened to f32, the absorbed-MLA per-head copies of
//   kv_b_proj (mla.ts deriveAbsorbed);
// - the paged latent KV cache: layers x blocks x 64 x (kv_lora_rank + qk_rope_head_dim) x 4 (f32);
// - scratch: activation buffers and staged operands of the largest step (maxBatchTokens rows), and
//   the logits of maxNumSeqs rows;
// - a fixed runtime allowance (Node, V8, worker threads).
// Available: MemAvailable from /proc/meminfo, lowered to the cgroup's limit minus its usage where one
// is set (containers), or SEEKD_MEMORY_LIMIT (bytes) when given (tests, or to leave room for others).
import { readFileSync } from 'node:fs';
import { freemem } from 'node:os';
import { FP8_BLOCK } from '../kernels/api.ts';
import { DTYPE_BYTES, type DType } from '../tensor/dtypes.ts';
import { Checkpoint } from '../weights/checkpoint.ts';
import { isMoeLayer, loadConfig, qkHeadDim, sharedIntermediate, type DeepseekConfig } from './config.ts';
import { CACHE_BLOCK_SIZE } from './latent-cache.ts';
import { isQuantizable, tensorSpecs, type TensorSpec } from './weight-map.ts';

/** One wasm32 memory holds the whole latent cache (the FlashMLA kernel's memory). */
export const KV_CACHE_MAX_BYTES = 4 * 2 ** 30 - 256 * 2 ** 20;
/**
 * The largest single weight allocation the wasm backend can hold: one wasm32 memory (a stacked expert
 * projection is one allocation: Kimi-K2's 384 x 2048 x 7168 FP8 is 5.6 GB).
 */
export const WASM_TENSOR_MAX_BYTES = 4 * 2 ** 30 - 65536;
/** Node, V8 heaps, compiled kernels and worker threads. */
export const RUNTIME_BYTES = 384 * 2 ** 20;

/** The tensor headers the plan reads (a Checkpoint). */
export interface TensorHeaders {
  has(name: string): boolean;
  info(name: string): { readonly dtype: DType };
}

export interface MemoryPlanOptions {
  quantize?: 'fp8';
  /** Context length per sequence (the KV cache holds maxNumSeqs of them, see kvBlocks). */
  maxModelLen: number;
  maxNumSeqs: number;
  /** Rows one forward computes at most (the scheduler's token budget; a prompt for score/generate). */
  maxBatchTokens: number;
  /** KV blocks to hold; default: enough for maxNumSeqs sequences of maxModelLen. */
  kvBlocks?: number;
  mtp?: boolean;
  /** Speculative decoding: the MTP module's one-layer latent cache beside the main one (same blocks). */
  mtpCache?: boolean;
  routedExperts?: boolean;
}

export interface AvailableMemory {
  bytes: number;
  source: string;
}

export interface MemoryPlan {
  /** Bytes of each allocation the loader makes in backend memory, in load order (kernels.reserve). */
  allocations: number[];
  weights: { matrices: number; vectors: number; absorbedMla: number; total: number; storedDtypes: Record<string, number> };
  kvCache: { blocks: number; tokens: number; bytesPerToken: number; bytes: number };
  scratch: number;
  runtime: number;
  total: number;
  available: AvailableMemory;
  fits: boolean;
  /** Why it does not fit, one line each (empty when it fits). */
  problems: string[];
  /** What the user can change, most effective first (empty when it fits). */
  fixes: string[];
}

/** The plan's refusal: exit code 2, the numbers and the fixes in the message. */
export class MemoryPlanError extends Error {
  override name = 'MemoryPlanError';
  readonly exitCode = 2;
  /** The whole plan, for the lines after the one-line message. */
  readonly details: string;
  constructor(readonly plan: MemoryPlan) {
    super(`the model does not fit: ${plan.problems.join('; ')}; fixes: ${plan.fixes.join('; ')}`);
    this.details = formatPlan(plan);
  }
}

/** Storage bytes of a [groups, rows, cols] matrix in a weight format (FP8: codes + f32 block scales). */
export function matrixBytes(format: 'fp8' | DType, rows: number, cols: number, groups = 1): number {
  if (format === 'fp8' || format === 'F8_E4M3') return groups * (rows * cols + Math.ceil(rows / FP8_BLOCK) * Math.ceil(cols / FP8_BLOCK) * 4);
  return groups * rows * cols * DTYPE_BYTES[format];
}

/**
 * The dtype a tensor is stored in: from the checkpoint header when there is one, else what config.json
 * implies (FP8 for the quantized matrices of a checkpoint with quantization_config, BF16 otherwise).
 */
function storedDtype(c: DeepseekConfig, s: TensorSpec, ck: TensorHeaders | null): DType {
  if (ck?.has(s.name)) return ck.info(s.name).dtype;
  if (s.name.endsWith('e_score_correction_bias')) return 'F32';
  return c.quantization_config && isQuantizable(s) ? 'F8_E4M3' : 'BF16';
}

export interface WeightFootprint {
  /** Bytes of each allocation the loader makes in backend memory, in load order (kernels.reserve). */
  allocations: number[];
  matrices: number;
  vectors: number;
  absorbedMla: number;
  storedDtypes: Record<string, number>;
}

/** What loading puts in memory, tensor by tensor, in the loader's order (weight-map.ts loadWeights). */
export function weightFootprint(c: DeepseekConfig, ck: TensorHeaders | null,
  o: { quantize?: 'fp8'; mtp?: boolean; routedExperts?: boolean } = {}): WeightFootprint {
  const allocations: number[] = [];
  const storedDtypes: Record<string, number> = {};
  let matrices = 0, vectors = 0;
  for (const s of tensorSpecs(c, { mtp: o.mtp ?? true, routedExperts: o.routedExperts ?? true })) {
    if (s.optional && ck && !ck.has(s.name)) continue;
    const n = s.shape.reduce((a, b) => a * b, 1);
    const dt = storedDtype(c, s, ck);
    storedDtypes[dt] = (storedDtypes[dt] ?? 0) + n;
    if (s.kind === 'vector') { vectors += n * 4; continue; }
    const [rows, cols] = s.shape as [number, number];
    const fmt = dt === 'F8_E4M3' || (o.quantize === 'fp8' && isQuantizable(s)) ? 'fp8' : dt;
    // Routed experts: one stacked allocation per projection, made when its first expert is read.
    if (s.group && s.group.index !== 0) continue;
    const b = matrixBytes(fmt, rows, cols, s.group?.count ?? 1);
    allocations.push(b);
    matrices += b;
  }
  const absorbedMla = absorbedBytes(c, ck, o.quantize);
  // deriveAbsorbed allocates 2 x heads slices per layer after the weights.
  const slices = 2 * c.num_attention_heads * c.num_hidden_layers;
  for (let i = 0; i < slices; i++) allocations.push(absorbedMla / slices);
  return { allocations, matrices, vectors, absorbedMla, storedDtypes };
}

/** Computes the plan; `ck` null means "from config.json alone" (no checkpoint files yet). */
export function planMemory(c: DeepseekConfig, ck: TensorHeaders | null, o: MemoryPlanOptions, available = availableMemory()): MemoryPlan {
  const { allocations, matrices, vectors, absorbedMla, storedDtypes } = weightFootprint(c, ck, o);
  const layerBytesPerToken = (c.kv_lora_rank + c.qk_rope_head_dim) * 4;
  const bytesPerToken = (c.num_hidden_layers + (o.mtpCache ? 1 : 0)) * layerBytesPerToken;
  const blocks = o.kvBlocks ?? Math.ceil(o.maxModelLen / CACHE_BLOCK_SIZE) * o.maxNumSeqs;
  const kvBytes = blocks * CACHE_BLOCK_SIZE * bytesPerToken;
  const scratch = scratchBytes(c, o.maxBatchTokens, o.maxNumSeqs);
  const weightsTotal = matrices + vectors + absorbedMla;
  const total = weightsTotal + kvBytes + scratch + RUNTIME_BYTES;

  const problems: string[] = [];
  const fixes: string[] = [];
  const unquantized = o.quantize !== 'fp8' && Object.keys(storedDtypes).some((d) => d === 'BF16' || d === 'F16' || d === 'F32') && !c.quantization_config;
  if (total > available.bytes) {
    problems.push(`it needs ${gib(total)} but ${gib(available.bytes)} is available (${available.source})`);
    if (unquantized) {
      const q = planMemory(c, ck, { ...o, quantize: 'fp8' }, available);
      fixes.push(`--quantize fp8 (weights ${gib(weightsTotal)} -> ${gib(q.weights.total)}${q.total <= available.bytes ? ', then it fits' : ''})`);
    }
    if (kvBytes > 2 ** 28 && total - kvBytes < available.bytes) fixes.push(`a smaller --max-model-len or --max-num-seqs (the KV cache takes ${gib(kvBytes)}, ${(bytesPerToken / 1024).toFixed(1)} KiB per token)`);
    fixes.push('free memory, or a machine with more');
  }
  const largest = Math.max(0, ...allocations);
  if (largest > WASM_TENSOR_MAX_BYTES) {
    problems.push(`one weight (a layer's stacked experts) takes ${gib(largest)}, over the ${gib(WASM_TENSOR_MAX_BYTES)} one wasm memory holds`);
    fixes.push('none on the wasm backend yet: it does not split one layer\'s experts across memories');
  }
  // The main cache is one allocation (the MTP module's, when present, is another).
  if (blocks * CACHE_BLOCK_SIZE * c.num_hidden_layers * layerBytesPerToken > KV_CACHE_MAX_BYTES) {
    problems.push(`its KV cache of ${blocks * CACHE_BLOCK_SIZE} tokens takes ${gib(kvBytes)}, over the ${gib(KV_CACHE_MAX_BYTES)} one wasm memory holds`);
    fixes.push(`at most ${Math.floor(KV_CACHE_MAX_BYTES / (c.num_hidden_layers * layerBytesPerToken))} cached tokens: a smaller --max-model-len x --max-num-seqs`);
  }
  return {
    allocations,
    weights: { matrices, vectors, absorbedMla, total: weightsTotal, storedDtypes },
    kvCache: { blocks, tokens: blocks * CACHE_BLOCK_SIZE, bytesPerToken, bytes: kvBytes },
    scratch,
    runtime: RUNTIME_BYTES,
    total,
    available,
    fits: problems.length === 0,
    problems,
    fixes,
  };
}

/** The plan of a model directory (config.json + safetensors headers; no weight is read). */
export function planForDir(dir: string, o: MemoryPlanOptions, available = availableMemory()): MemoryPlan {
  const c = loadConfig(dir);
  const ck = Checkpoint.open(dir);
  try {
    return planMemory(c, ck, o, available);
  } finally {
    ck.close();
  }
}

/**
 * KV blocks that fit next to the weights: what is left of the available memory (less a 10% margin)
 * and of one wasm memory, capped at `wanted`. 0 when not even one block fits.
 */
export function fittingKvBlocks(plan: MemoryPlan, wanted: number): number {
  const perBlock = CACHE_BLOCK_SIZE * plan.kvCache.bytesPerToken;
  const left = plan.available.bytes * 0.9 - (plan.total - plan.kvCache.bytes);
  return Math.max(0, Math.min(wanted, Math.floor(Math.min(left, KV_CACHE_MAX_BYTES) / perBlock)));
}

/** Absorbed-MLA copies (mla.ts sliceWeight): kv_b_proj's bytes again, f32 where an FP8 slice is off-block. */
function absorbedBytes(c: DeepseekConfig, ck: TensorHeaders | null, quantize: 'fp8' | undefined): number {
  const H = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim, r = c.kv_lora_rank;
  const name = 'model.layers.0.self_attn.kv_b_proj.weight';
  const stored: DType = ck?.has(name) ? ck.info(name).dtype : c.quantization_config ? 'F8_E4M3' : 'BF16';
  const fp8 = stored === 'F8_E4M3' || quantize === 'fp8';
  let b = 0;
  for (let h = 0; h < H; h++) {
    for (const [start, rows] of [[h * (nope + v), nope], [h * (nope + v) + nope, v]] as const) {
      if (fp8 && start % FP8_BLOCK !== 0) b += rows * r * 4;
      else b += fp8 ? matrixBytes('fp8', rows, r) : rows * r * DTYPE_BYTES[stored];
    }
  }
  return b * c.num_hidden_layers;
}

/** Activations of one step of T rows (workspace buffers, staged MoE rows and outputs) plus logits. */
function scratchBytes(c: DeepseekConfig, T: number, seqs: number): number {
  const H = c.hidden_size, Hd = c.num_attention_heads, R = c.kv_lora_rank + c.qk_rope_head_dim;
  const k = c.num_experts_per_tok ?? 0;
  let ffn = c.intermediate_size * 3;
  for (let l = 0; l < c.num_hidden_layers; l++) {
    if (isMoeLayer(c, l)) { ffn = Math.max(ffn, k * (3 * c.moe_intermediate_size + 2 * H) + 3 * sharedIntermediate(c)); break; }
  }
  const perRow = 8 * H + Hd * (qkHeadDim(c) + 2 * R + c.v_head_dim) + (c.q_lora_rank ?? 0) * 2 + ffn;
  return 4 * (T * perRow + Math.max(seqs, 1) * c.vocab_size);
}

/** Memory this process can still take: MemAvailable, the cgroup's room, or SEEKD_MEMORY_LIMIT. */
export function availableMemory(): AvailableMemory {
  const env = process.env.SEEKD_MEMORY_LIMIT;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isSafeInteger(n) || n <= 0) throw new RangeError(`SEEKD_MEMORY_LIMIT must be a positive number of bytes, got '${env}'`);
    return { bytes: n, source: 'SEEKD_MEMORY_LIMIT' };
  }
  let best: AvailableMemory = { bytes: freemem(), source: 'free memory' };
  const meminfo = readText('/proc/meminfo');
  const m = meminfo && /^MemAvailable:\s+(\d+)\s+kB/m.exec(meminfo);
  if (m) best = { bytes: Number(m[1]) * 1024, source: 'MemAvailable' };
  // cgroup v2, then v1: limit minus what the group already uses.
  for (const [limitFile, usageFile] of [
    ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'],
    ['/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory/memory.usage_in_bytes'],
  ] as const) {
    const limit = Number(readText(limitFile)?.trim());
    const usage = Number(readText(usageFile)?.trim() ?? 0);
    if (Number.isFinite(limit) && limit > 0 && limit < 2 ** 60) {
      const room = Math.max(0, limit - usage);
      if (room < best.bytes) best = { bytes: room, source: `cgroup limit ${gib(limit)}` };
      break;
    }
  }
  return best;
}

function readText(path: string): string | null {
  try { return readFileSync(path, 'utf8'); } catch { return null; }
}

export function gib(n: number): string {
  return `${(n / 2 ** 30).toFixed(2)} GiB`;
}

/** The plan as lines for people (seekd info, the refusal message). */
export function formatPlan(p: MemoryPlan): string {
  return [
    `memory plan: ${gib(p.total)} of ${gib(p.available.bytes)} available (${p.available.source})${p.fits ? '' : ' -- does NOT fit'}`,
    `  weights ${gib(p.weights.total)} (matrices ${gib(p.weights.matrices)}, absorbed-MLA copies ${gib(p.weights.absorbedMla)}, vectors ${gib(p.weights.vectors)})`,
    `  KV cache ${gib(p.kvCache.bytes)} (${p.kvCache.tokens} tokens in ${p.kvCache.blocks} blocks, ${(p.kvCache.bytesPerToken / 1024).toFixed(1)} KiB per token, f32 latent)`,
    `  scratch ${gib(p.scratch)}, runtime ${gib(p.runtime)}`,
  ].join('\n');
}
