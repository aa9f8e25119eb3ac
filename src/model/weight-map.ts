// Hugging Face tensor names → model parameters, in ONE table (names verbatim, as in DeepSeek-V2/V3
// checkpoints), and the loader that copies each tensor once into backend memory.
// - Linear weights keep their stored format: BF16/F32 as is, FP8 e4m3fn codes (one byte per parameter)
//   with the `<name>_scale_inv` 128x128 block scales next to them. Nothing is widened as a whole.
// - A layer's routed experts are stacked: gate/up/down each become one grouped weight [E, out, in]
//   (kernels' GroupedWeight, FP8 scales [E, ceil(out/128), ceil(in/128)]) allocated once in backend
//   memory; each expert's tensor is read straight into its slice, so MoE runs one grouped product per
//   projection instead of one matmul per expert.
// - `quantize: 'fp8'`: the projections DeepSeek's FP8 checkpoints quantize (isQuantizable) become FP8
//   codes + 128x128 block scales as they stream in (weights/quantize.ts: DeepGEMM's per-block rule,
//   128 rows at a time through one reusable staging buffer, straight into the backend's FP8 weight);
//   tensors already stored as FP8 stay as stored.
// - Norm weights and the router bias are widened to f32 (small vectors).
// - The embedding stays in its stored format; rows are widened on lookup.
// Shapes follow the HF convention [out, in]; see /work/shared/testdata/deepseek-ref/README.md.
import { Checkpoint } from '../weights/checkpoint.ts';
import type { CheckpointLike } from '../weights/bytes-checkpoint.ts';
import { fp8Pair, type Fp8Pair } from '../weights/pairing.ts';
import type { TensorInfo } from '../weights/safetensors.ts';
import { Fp8StreamQuantizer } from '../weights/quantize.ts';
import type { DType } from '../tensor/dtypes.ts';
import { groupSlice, type GroupedWeight, type KernelOps, type WeightMatrix } from '../kernels/api.ts';
import { isMoeLayer, loadConfig, qkHeadDim, sharedIntermediate, type DeepseekConfig } from './config.ts';

/** Weights of one MLP (dense FFN, one routed expert, or the shared experts): w2(silu(w1 x) * w3 x). */
export interface MlpWeights { gate: WeightMatrix; up: WeightMatrix; down: WeightMatrix }

export interface AttnWeights {
  /** q_lora_rank set: q_a_proj [q_lora, H], q_a_layernorm [q_lora], q_b_proj [heads·qk_head_dim, q_lora]. */
  qA?: WeightMatrix; qANorm?: Float32Array; qB?: WeightMatrix;
  /** q_lora_rank null: q_proj [heads·qk_head_dim, H]. */
  q?: WeightMatrix;
  /** kv_a_proj_with_mqa [kv_lora + rope, H]; rows [c_kv | k_pe]. */
  kvA: WeightMatrix;
  kvANorm: Float32Array;
  /** kv_b_proj [heads·(nope + v), kv_lora]; rows [head][k_nope | v]. */
  kvB: WeightMatrix;
  /** o_proj [H, heads·v]. */
  o: WeightMatrix;
}

/** A layer's routed experts stacked per projection: gate/up [E, moe_inter, H], down [E, H, moe_inter]. */
export interface ExpertWeights { gate: GroupedWeight; up: GroupedWeight; down: GroupedWeight }

export interface MoeWeights {
  /** Router mlp.gate.weight [n_routed_experts, H]. */
  router: WeightMatrix;
  /** mlp.gate.e_score_correction_bias [n_routed_experts] (noaux_tc only). */
  bias?: Float32Array;
  /**
   * Routed experts, stacked (expert e is group e of each projection). Absent when they were not loaded
   * (`routedExperts: false`: an expert-parallel runtime holds them).
   */
  experts?: ExpertWeights;
  /** mlp.shared_experts.* (absent when n_shared_experts is 0/null). */
  shared?: MlpWeights;
}

export interface LayerWeights {
  inputNorm: Float32Array;
  postAttnNorm: Float32Array;
  attn: AttnWeights;
  /** Exactly one of dense / moe. */
  dense?: MlpWeights;
  moe?: MoeWeights;
}

/** Multi-token-prediction module (DeepSeek-V3 §2.2), stored as layer num_hidden_layers + j. */
export interface MtpWeights {
  enorm: Float32Array;
  hnorm: Float32Array;
  /** eh_proj [H, 2H]: projects [enorm(embed) ; hnorm(hidden)]. */
  ehProj: WeightMatrix;
  embed?: WeightMatrix;
  headNorm: Float32Array;
  head?: WeightMatrix;
  block: LayerWeights;
}

export interface ModelWeights {
  embed: WeightMatrix;
  norm: Float32Array;
  /** lm_head.weight, or the embedding when tie_word_embeddings. */
  lmHead: WeightMatrix;
  layers: LayerWeights[];
  mtp: MtpWeights[];
}

// ---------------------------------------------------------------- the table

type Kind = 'linear' | 'vector' | 'embed';
type Scope = 'model' | 'layer' | 'mtp';
type Cfg = DeepseekConfig;

/**
 * One row per tensor name pattern. `{L}` = layer index, `{E}` = expert index. `when` says whether a
 * layer has it; `shape` is [out, in] (vectors: [n]). `path` is where it lands in ModelWeights.
 */
interface Row {
  hf: string;
  scope: Scope;
  kind: Kind;
  shape: (c: Cfg) => number[];
  when?: (c: Cfg, layer: number) => boolean;
  optional?: boolean;
  perExpert?: boolean;
  path: string;
}

const qlora = (c: Cfg) => c.q_lora_rank !== null;
const moe = (c: Cfg, l: number) => isMoeLayer(c, l);
const dense = (c: Cfg, l: number) => !isMoeLayer(c, l);
const shared = (c: Cfg, l: number) => isMoeLayer(c, l) && sharedIntermediate(c) > 0;
const H = (c: Cfg) => c.hidden_size;

export const WEIGHT_TABLE: readonly Row[] = [
  { hf: 'model.embed_tokens.weight', scope: 'model', kind: 'embed', shape: (c) => [c.vocab_size, H(c)], path: 'embed' },
  { hf: 'model.norm.weight', scope: 'model', kind: 'vector', shape: (c) => [H(c)], path: 'norm' },
  { hf: 'lm_head.weight', scope: 'model', kind: 'linear', shape: (c) => [c.vocab_size, H(c)], when: (c) => !c.tie_word_embeddings, path: 'lmHead' },

  { hf: 'model.layers.{L}.input_layernorm.weight', scope: 'layer', kind: 'vector', shape: (c) => [H(c)], path: 'inputNorm' },
  { hf: 'model.layers.{L}.post_attention_layernorm.weight', scope: 'layer', kind: 'vector', shape: (c) => [H(c)], path: 'postAttnNorm' },
  { hf: 'model.layers.{L}.self_attn.q_a_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [c.q_lora_rank!, H(c)], when: qlora, path: 'attn.qA' },
  { hf: 'model.layers.{L}.self_attn.q_a_layernorm.weight', scope: 'layer', kind: 'vector', shape: (c) => [c.q_lora_rank!], when: qlora, path: 'attn.qANorm' },
  { hf: 'model.layers.{L}.self_attn.q_b_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [c.num_attention_heads * qkHeadDim(c), c.q_lora_rank!], when: qlora, path: 'attn.qB' },
  { hf: 'model.layers.{L}.self_attn.q_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [c.num_attention_heads * qkHeadDim(c), H(c)], when: (c) => !qlora(c), path: 'attn.q' },
  { hf: 'model.layers.{L}.self_attn.kv_a_proj_with_mqa.weight', scope: 'layer', kind: 'linear', shape: (c) => [c.kv_lora_rank + c.qk_rope_head_dim, H(c)], path: 'attn.kvA' },
  { hf: 'model.layers.{L}.self_attn.kv_a_layernorm.weight', scope: 'layer', kind: 'vector', shape: (c) => [c.kv_lora_rank], path: 'attn.kvANorm' },
  { hf: 'model.layers.{L}.self_attn.kv_b_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank], path: 'attn.kvB' },
  { hf: 'model.layers.{L}.self_attn.o_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [H(c), c.num_attention_heads * c.v_head_dim], path: 'attn.o' },

  { hf: 'model.layers.{L}.mlp.gate_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [c.intermediate_size, H(c)], when: dense, path: 'dense.gate' },
  { hf: 'model.layers.{L}.mlp.up_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [c.intermediate_size, H(c)], when: dense, path: 'dense.up' },
  { hf: 'model.layers.{L}.mlp.down_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [H(c), c.intermediate_size], when: dense, path: 'dense.down' },

  { hf: 'model.layers.{L}.mlp.gate.weight', scope: 'layer', kind: 'linear', shape: (c) => [c.n_routed_experts!, H(c)], when: moe, path: 'moe.router' },
  { hf: 'model.layers.{L}.mlp.gate.e_score_correction_bias', scope: 'layer', kind: 'vector', shape: (c) => [c.n_routed_experts!], when: (c, l) => moe(c, l) && c.topk_method === 'noaux_tc', path: 'moe.bias' },
  { hf: 'model.layers.{L}.mlp.experts.{E}.gate_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [c.moe_intermediate_size, H(c)], when: moe, perExpert: true, path: 'moe.experts.gate' },
  { hf: 'model.layers.{L}.mlp.experts.{E}.up_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [c.moe_intermediate_size, H(c)], when: moe, perExpert: true, path: 'moe.experts.up' },
  { hf: 'model.layers.{L}.mlp.experts.{E}.down_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [H(c), c.moe_intermediate_size], when: moe, perExpert: true, path: 'moe.experts.down' },
  { hf: 'model.layers.{L}.mlp.shared_experts.gate_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [sharedIntermediate(c), H(c)], when: shared, path: 'moe.shared.gate' },
  { hf: 'model.layers.{L}.mlp.shared_experts.up_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [sharedIntermediate(c), H(c)], when: shared, path: 'moe.shared.up' },
  { hf: 'model.layers.{L}.mlp.shared_experts.down_proj.weight', scope: 'layer', kind: 'linear', shape: (c) => [H(c), sharedIntermediate(c)], when: shared, path: 'moe.shared.down' },

  // MTP module j at layer index L = num_hidden_layers + j (plus a full decoder block, rows above with
  // scope 'layer' applied to L). embed_tokens / shared_head.head may be omitted by some exports (they
  // equal the main ones), hence optional.
  { hf: 'model.layers.{L}.enorm.weight', scope: 'mtp', kind: 'vector', shape: (c) => [H(c)], path: 'enorm' },
  { hf: 'model.layers.{L}.hnorm.weight', scope: 'mtp', kind: 'vector', shape: (c) => [H(c)], path: 'hnorm' },
  { hf: 'model.layers.{L}.eh_proj.weight', scope: 'mtp', kind: 'linear', shape: (c) => [H(c), 2 * H(c)], path: 'ehProj' },
  { hf: 'model.layers.{L}.embed_tokens.weight', scope: 'mtp', kind: 'embed', shape: (c) => [c.vocab_size, H(c)], optional: true, path: 'embed' },
  { hf: 'model.layers.{L}.shared_head.norm.weight', scope: 'mtp', kind: 'vector', shape: (c) => [H(c)], path: 'headNorm' },
  { hf: 'model.layers.{L}.shared_head.head.weight', scope: 'mtp', kind: 'linear', shape: (c) => [c.vocab_size, H(c)], optional: true, path: 'head' },
];

/** One concrete tensor to load. */
export interface TensorSpec {
  name: string;
  kind: Kind;
  shape: number[];
  optional: boolean;
  /** Where it lands, e.g. ['layers', 3, 'moe', 'experts', 'gate']. */
  target: (string | number)[];
  /** Routed experts: slice `index` of a grouped weight of `count` groups at `target`. */
  group?: { index: number; count: number };
}

/** Expands the table for a config: every tensor the model needs, in a stable order. */
export function tensorSpecs(c: Cfg, opts: { mtp?: boolean; routedExperts?: boolean } = {}): TensorSpec[] {
  const out: TensorSpec[] = [];
  const expand = (row: Row, layer: number | null, prefix: (string | number)[]) => {
    if (row.when && !row.when(c, layer ?? -1)) return;
    if (row.perExpert && opts.routedExperts === false && prefix[0] === 'layers') return;
    const experts = row.perExpert ? c.n_routed_experts! : 1;
    for (let e = 0; e < experts; e++) {
      const name = row.hf.replace('{L}', String(layer)).replace('{E}', String(e));
      const path = row.path.split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p));
      const spec: TensorSpec = { name, kind: row.kind, shape: row.shape(c), optional: row.optional ?? false, target: [...prefix, ...path] };
      if (row.perExpert) spec.group = { index: e, count: experts };
      out.push(spec);
    }
  };
  for (const row of WEIGHT_TABLE) if (row.scope === 'model') expand(row, null, []);
  for (let l = 0; l < c.num_hidden_layers; l++) {
    for (const row of WEIGHT_TABLE) if (row.scope === 'layer') expand(row, l, ['layers', l]);
  }
  if (opts.mtp ?? true) {
    for (let j = 0; j < c.num_nextn_predict_layers; j++) {
      const l = c.num_hidden_layers + j;
      for (const row of WEIGHT_TABLE) if (row.scope === 'mtp') expand(row, l, ['mtp', j]);
      for (const row of WEIGHT_TABLE) if (row.scope === 'layer') expand(row, l, ['mtp', j, 'block']);
    }
  }
  return out;
}

/**
 * Whether DeepSeek's FP8 checkpoints store this tensor in FP8 (and `--quantize fp8` converts it): the
 * linear projections inside decoder blocks (attention, dense MLP, shared and routed experts), also the
 * MTP module's decoder block; not embeddings, lm_head, norms, the router (mlp.gate.weight), nor the
 * MTP module's eh_proj / shared_head (DeepSeek-V3's published checkpoint and tiny-v3-fp8 alike).
 */
export function isQuantizable(s: TensorSpec): boolean {
  if (s.kind !== 'linear') return false;
  const inBlock = s.target[0] === 'layers' || (s.target[0] === 'mtp' && s.target[2] === 'block');
  return inBlock && s.target[s.target.length - 1] !== 'router';
}

export class WeightError extends Error {
  override name = 'WeightError';
  readonly exitCode = 2;
  constructor(readonly tensor: string, message: string) {
    super(`${tensor}: ${message}`);
  }
}

const LINEAR_DTYPES: readonly DType[] = ['F32', 'BF16', 'F8_E4M3'];
/** A matrix quantized while loading may also be stored as F16 (it never stays F16). */
const QUANT_LINEAR_DTYPES: readonly DType[] = ['F32', 'BF16', 'F16', 'F8_E4M3'];
const VECTOR_DTYPES: readonly DType[] = ['F32', 'BF16', 'F16'];
const EMBED_DTYPES: readonly DType[] = ['F32', 'BF16'];

/** Which tensors a load takes, and how (the options of loadWeights that decide what is checked). */
export interface WeightSelection {
  /** The MTP modules (default true). */
  mtp?: boolean;
  /** The decoder layers' routed experts (default true). */
  routedExperts?: boolean;
  /** 'fp8': quantizable BF16/F16/F32 projections become FP8 while loading (they may then be F16 too). */
  quantize?: 'fp8';
}

/** One tensor of the table, checked against its header: what the loader will do with it. */
export interface CheckedTensor {
  spec: TensorSpec;
  /** Null for an optional tensor the checkpoint does not have. */
  info: TensorInfo | null;
  /**
   * How it lands in memory: 'vector' (widened to f32), 'quantize' (FP8 while loading), or the stored
   * format of a matrix ('f32' | 'bf16' | 'fp8', the last with its validated `_scale_inv` partner).
   */
  load: 'vector' | 'quantize' | 'f32' | 'bf16' | 'fp8';
  /** FP8 matrices: the weight + block-scale pair (pairing.ts). */
  fp8?: Fp8Pair;
}

/**
 * THE checkpoint rules, from the tensor headers alone (no data is read): every tensor the config needs
 * is present (optional ones may be absent), with an accepted dtype and exactly the config's shape; FP8
 * matrices need `quantization_config` and a valid `_scale_inv` partner; a layer's routed experts share
 * one format per projection. Throws the first violation: WeightError (missing tensor, FP8 without
 * quantization_config, mixed expert formats, unsupported dtype) or SafetensorsError (dtype-mismatch,
 * shape-mismatch, fp8-*), all naming the tensor. loadWeights loads exactly what this returns; `seekd
 * info` runs it too, so both refuse the same checkpoints with the same message.
 */
export function checkWeights(ck: CheckpointLike, c: Cfg, opts: WeightSelection = {}): CheckedTensor[] {
  if (opts.quantize !== undefined && opts.quantize !== 'fp8') throw new TypeError(`unknown quantize format ${JSON.stringify(opts.quantize)} (supported: fp8)`);
  const out: CheckedTensor[] = [];
  /** Format of the first expert of each grouped weight (by target path). */
  const groupFormat = new Map<string, { fmt: string; first: string }>();
  for (const spec of tensorSpecs(c, opts)) {
    if (!ck.has(spec.name)) {
      if (spec.optional) { out.push({ spec, info: null, load: 'vector' }); continue; }
      throw new WeightError(spec.name, `missing from the checkpoint in ${ck.dir}`);
    }
    if (spec.kind === 'vector') {
      out.push({ spec, info: ck.expect(spec.name, VECTOR_DTYPES, spec.shape), load: 'vector' });
      continue;
    }
    const quant = opts.quantize === 'fp8' && isQuantizable(spec);
    const info = ck.expect(spec.name, spec.kind === 'embed' ? EMBED_DTYPES : quant ? QUANT_LINEAR_DTYPES : LINEAR_DTYPES, spec.shape);
    let checked: CheckedTensor;
    if (quant && info.dtype !== 'F8_E4M3') {
      checked = { spec, info, load: 'quantize' };
    } else if (info.dtype === 'F8_E4M3') {
      if (!c.quantization_config) throw new WeightError(spec.name, 'FP8 weight in a checkpoint whose config.json has no quantization_config');
      checked = { spec, info, load: 'fp8', fp8: fp8Pair(ck, spec.name, c.quantization_config.weight_block_size) };
    } else if (info.dtype === 'F32' || info.dtype === 'BF16') {
      checked = { spec, info, load: info.dtype === 'F32' ? 'f32' : 'bf16' };
    } else {
      throw new WeightError(spec.name, `unsupported dtype ${info.dtype}`);
    }
    if (spec.group) {
      const fmt = checked.load === 'quantize' ? 'fp8' : checked.load;
      const key = spec.target.join('.');
      const first = groupFormat.get(key);
      if (!first) groupFormat.set(key, { fmt, first: spec.name });
      else if (first.fmt !== fmt) {
        throw new WeightError(spec.name, `dtype ${info.dtype}, but this layer's other experts are ${first.fmt} (${first.first}): routed experts must share one format`);
      }
    }
    out.push(checked);
  }
  return out;
}

/**
 * Opens `dir` (config.json + safetensors headers) and runs checkWeights on it: what loading would
 * refuse, found without reading a weight. Returns the config.
 */
export function checkModelWeights(dir: string, opts: WeightSelection = {}): Cfg {
  const c = loadConfig(dir);
  const ck = Checkpoint.open(dir);
  try {
    checkWeights(ck, c, opts);
  } finally {
    ck.close();
  }
  return c;
}

/**
 * Loads one matrix straight into backend memory in its stored format (FP8 with its block scales), or,
 * for a tensor checked as 'quantize', as FP8 quantized while reading.
 */
function loadMatrix(ck: CheckpointLike, k: KernelOps, t: CheckedTensor, q: Fp8StreamQuantizer | undefined): WeightMatrix {
  const [rows, cols] = t.spec.shape as [number, number];
  const name = t.spec.name;
  switch (t.load) {
    case 'quantize': {
      const w = k.allocWeight('fp8', rows, cols);
      if (w.dtype !== 'fp8') throw new Error('allocWeight returned the wrong dtype');
      q!.quantizeTensor(ck, name, w.data, w.scaleInv);
      return w;
    }
    case 'f32':
    case 'bf16': {
      const w = k.allocWeight(t.load, rows, cols);
      ck.readInto(name, w.data);
      return w;
    }
    case 'fp8': {
      const w = k.allocWeight('fp8', rows, cols);
      if (w.dtype !== 'fp8') throw new Error('allocWeight returned the wrong dtype');
      ck.readInto(name, w.data);
      ck.readInto(t.fp8!.scale.name, w.scaleInv);
      return w;
    }
    default:
      throw new WeightError(name, `not a matrix (${t.load})`);
  }
}

/**
 * Reads one routed expert's matrix into its slice of the layer's grouped weight (allocated on the first
 * expert, in that expert's format; checkWeights made every expert of a projection share it).
 */
function loadExpertSlice(ck: CheckpointLike, k: KernelOps, t: CheckedTensor, existing: GroupedWeight | undefined,
  q: Fp8StreamQuantizer | undefined): GroupedWeight {
  const [rows, cols] = t.spec.shape as [number, number];
  const { index, count } = t.spec.group!;
  const dtype = t.load === 'quantize' ? 'fp8' : t.load;
  if (dtype === 'vector') throw new WeightError(t.spec.name, 'not a matrix');
  const w = existing ?? k.allocGroupedWeight(dtype, count, rows, cols);
  if (w.dtype !== dtype) throw new WeightError(t.spec.name, `format ${dtype}, but this layer's other experts are ${w.dtype}: routed experts must share one format`);
  const slice = groupSlice(w, index);
  if (t.load === 'quantize' && slice.dtype === 'fp8') {
    q!.quantizeTensor(ck, t.spec.name, slice.data, slice.scaleInv);
  } else if (slice.dtype === 'fp8') {
    ck.readInto(t.spec.name, slice.data);
    ck.readInto(t.fp8!.scale.name, slice.scaleInv);
  } else {
    ck.readInto(t.spec.name, slice.data);
  }
  return w;
}

function getPath(root: Record<string | number, unknown>, path: (string | number)[]): unknown {
  let o: unknown = root;
  for (const key of path) {
    if (o === undefined) return undefined;
    o = (o as Record<string | number, unknown>)[key];
  }
  return o;
}

function setPath(root: Record<string | number, unknown>, path: (string | number)[], value: unknown): void {
  let o = root;
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i]!;
    const next = path[i + 1]!;
    if (o[key] === undefined) o[key] = typeof next === 'number' ? [] : {};
    o = o[key] as Record<string | number, unknown>;
  }
  o[path[path.length - 1]!] = value;
}

/**
 * mtp / routedExperts: what to load (routedExperts false when an expert-parallel runtime holds them).
 * quantize 'fp8': the BF16 / F16 / F32 projections that DeepSeek's FP8 checkpoints store as FP8
 * (isQuantizable) become e4m3fn codes with 128x128 f32 block scales while loading; tensors already FP8
 * stay as stored, everything else is loaded as without it.
 */
export interface LoadWeightsOptions extends WeightSelection {
  onProgress?: (done: number, total: number) => void;
}

/**
 * Loads every tensor of the table from an open checkpoint into backend memory. Every header is checked
 * first (checkWeights), so a bad checkpoint is refused before any weight is read.
 */
export function loadWeights(ck: CheckpointLike, k: KernelOps, c: Cfg, opts: LoadWeightsOptions = {}): ModelWeights {
  const checked = checkWeights(ck, c, opts);
  // One quantizer (one staging buffer, reused by every tensor) for the whole load.
  const q = opts.quantize === 'fp8' ? new Fp8StreamQuantizer() : undefined;
  const root: Record<string | number, unknown> = { layers: [], mtp: [] };
  let done = 0;
  for (const t of checked) {
    const s = t.spec;
    if (t.info === null) { done++; continue; }
    let value: unknown;
    if (t.load === 'vector') value = ck.readF32(s.name);
    else if (s.group) value = loadExpertSlice(ck, k, t, getPath(root, s.target) as GroupedWeight | undefined, q);
    else value = loadMatrix(ck, k, t, q);
    setPath(root, s.target, value);
    opts.onProgress?.(++done, checked.length);
  }
  const w = root as unknown as ModelWeights;
  if (c.tie_word_embeddings) w.lmHead = w.embed;
  return w;
}

/** Parameter counts from the config alone (what `seekd info` reports). */
export function parameterCounts(c: Cfg): { total: number; activePerToken: number; mtp: number } {
  let total = 0, active = 0, mtp = 0;
  for (const s of tensorSpecs(c, { mtp: true })) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (s.target[0] === 'mtp') { mtp += n; continue; }
    total += n;
    // Per token: one embedding row, all attention/dense/shared/router weights, k of the routed experts.
    if (s.kind === 'embed') active += c.hidden_size;
    else if (s.target.includes('experts')) active += n * (c.num_experts_per_tok! / c.n_routed_experts!);
    else active += n;
  }
  // Tied: lm_head reads the whole embedding matrix per token (counted once in total).
  if (c.tie_word_embeddings) active += c.vocab_size * c.hidden_size - c.hidden_size;
  return { total, activePerToken: Math.round(active), mtp };
}
