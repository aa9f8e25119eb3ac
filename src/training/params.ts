// The trainable parameters of a DeepSeek-V2/V3-architecture model as autograd tensors, in the same tree
// as the inference model's ModelWeights (model/weight-map.ts), so the Hugging Face name table
// (tensorSpecs: name → target path, routed experts stacked as [E, out, in]) maps both ways:
// checkpoint → parameters (loadTrainParams) and parameters → HF names (namedParams, for the optimizer
// state and for writing checkpoints).
// Linear weights are [out, in] (HF layout), norms [n], the embedding [V, H]. The router's
// e_score_correction_bias is held here as a tensor that does not require grad: it moves by the
// auxiliary-loss-free step rule (routing.ts), not by gradients.
import { refOps } from '../kernels/ref/index.ts';
import { FP8_BLOCK, type GroupedWeight, type WeightMatrix } from '../kernels/api.ts';
import { Checkpoint } from '../weights/checkpoint.ts';
import { FP8_E4M3_TABLE } from '../tensor/dtypes.ts';
import { loadConfig, type DeepseekConfig } from '../model/config.ts';
import { loadWeights, tensorSpecs, type ModelWeights, type TensorSpec } from '../model/weight-map.ts';
import { Tensor, type FloatArrayCtor } from '../tensor/autograd/index.ts';
import { mulberry32 } from '../tensor/random.ts';

export interface MlpParams { gate: Tensor; up: Tensor; down: Tensor }
export interface AttnParams { qA?: Tensor; qANorm?: Tensor; qB?: Tensor; q?: Tensor; kvA: Tensor; kvANorm: Tensor; kvB: Tensor; o: Tensor }
export interface MoeParams {
  router: Tensor;
  /** e_score_correction_bias [E] (noaux_tc); requiresGrad false. */
  bias?: Tensor;
  /** Stacked routed experts: gate/up [E, I, H], down [E, H, I]. */
  experts: MlpParams;
  shared?: MlpParams;
}
export interface LayerParams { inputNorm: Tensor; postAttnNorm: Tensor; attn: AttnParams; dense?: MlpParams; moe?: MoeParams }
export interface MtpParams {
  enorm: Tensor; hnorm: Tensor;
  /** eh_proj [H, 2H] over [enorm(Emb(t_{i+k})) ; hnorm(h_i)] (the inference model's order). */
  ehProj: Tensor;
  /** Own embedding / head when the checkpoint stores them; absent: shared with the main model (§2.2). */
  embed?: Tensor; head?: Tensor;
  headNorm: Tensor;
  block: LayerParams;
}
export interface TrainParams {
  embed: Tensor; norm: Tensor;
  /** lm_head [V, H]; the embedding tensor itself when tie_word_embeddings. */
  lmHead: Tensor;
  layers: LayerParams[];
  mtp: MtpParams[];
}

type Tree = Record<string | number, unknown>;

function getPath(root: unknown, path: readonly (string | number)[]): unknown {
  let o = root as Tree | undefined;
  for (const p of path) {
    if (o === undefined || o === null) return undefined;
    o = o[p] as Tree | undefined;
  }
  return o;
}

function setPath(root: Tree, path: readonly (string | number)[], value: unknown): void {
  let o = root;
  for (let i = 0; i < path.length - 1; i++) {
    const p = path[i]!;
    o[p] ??= typeof path[i + 1] === 'number' ? [] : {};
    o = o[p] as Tree;
  }
  o[path[path.length - 1]!] = value;
}

/** Whether a spec is the router's correction bias (a buffer, not a trained parameter). */
function isBuffer(s: TensorSpec): boolean {
  return s.target[s.target.length - 1] === 'bias';
}

/** The parameter's full shape: routed experts are one stacked tensor [E, out, in]. */
function paramShape(s: TensorSpec): number[] {
  return s.group ? [s.group.count, ...s.shape] : s.shape;
}

/** Dequantizes/widens a stored matrix (f32, bf16 bits, FP8 codes with 128x128 block scales) into out. */
function widen(w: WeightMatrix, out: Float32Array | Float64Array, off = 0): void {
  const { rows, cols } = w;
  if (w.dtype === 'f32') { for (let i = 0; i < rows * cols; i++) out[off + i] = w.data[i]!; return; }
  if (w.dtype === 'bf16') {
    const bits = new Uint32Array(1), f = new Float32Array(bits.buffer);
    for (let i = 0; i < rows * cols; i++) { bits[0] = w.data[i]! << 16; out[off + i] = f[0]!; }
    return;
  }
  const sc = Math.ceil(cols / FP8_BLOCK);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      out[off + r * cols + c] = Math.fround(FP8_E4M3_TABLE[w.data[r * cols + c]!]! * w.scaleInv[Math.floor(r / FP8_BLOCK) * sc + Math.floor(c / FP8_BLOCK)]!);
    }
  }
}

function groupWidened(w: GroupedWeight, ctor: FloatArrayCtor): Float32Array | Float64Array {
  const out = new ctor(w.groups * w.rows * w.cols);
  const n = w.rows * w.cols;
  for (let g = 0; g < w.groups; g++) {
    const s = Math.ceil(w.rows / FP8_BLOCK) * Math.ceil(w.cols / FP8_BLOCK);
    const m: WeightMatrix = w.dtype === 'fp8'
      ? { dtype: 'fp8', rows: w.rows, cols: w.cols, data: w.data.subarray(g * n, (g + 1) * n), scaleInv: w.scaleInv.subarray(g * s, (g + 1) * s) }
      : w.dtype === 'bf16'
        ? { dtype: 'bf16', rows: w.rows, cols: w.cols, data: w.data.subarray(g * n, (g + 1) * n) }
        : { dtype: 'f32', rows: w.rows, cols: w.cols, data: w.data.subarray(g * n, (g + 1) * n) };
    widen(m, out, g * n);
  }
  return out;
}

/** Parameters from loaded inference weights (values exactly as the inference model computes with them). */
export function paramsFromWeights(c: DeepseekConfig, w: ModelWeights, ctor: FloatArrayCtor = Float32Array): TrainParams {
  const root: Tree = { layers: [], mtp: [] };
  for (const s of tensorSpecs(c, { mtp: true })) {
    if (s.group && s.group.index > 0) continue;
    const v = getPath(w, s.target);
    if (v === undefined) {
      if (s.optional) continue;
      throw new Error(`${s.name}: not in the loaded weights`);
    }
    let data: Float32Array | Float64Array;
    if (v instanceof Float32Array) data = new ctor(v);
    else if (s.group) data = groupWidened(v as GroupedWeight, ctor);
    else {
      const m = v as WeightMatrix;
      data = new ctor(m.rows * m.cols);
      widen(m, data);
    }
    setPath(root, s.target, new Tensor(data, paramShape(s), !isBuffer(s)));
  }
  const p = root as unknown as TrainParams;
  if (c.tie_word_embeddings) p.lmHead = p.embed;
  return p;
}

/** Reads a Hugging Face checkpoint directory into parameters (any stored format the loader accepts). */
export function loadTrainParams(dir: string, ctor: FloatArrayCtor = Float32Array): { config: DeepseekConfig; params: TrainParams } {
  const config = loadConfig(dir);
  const ck = Checkpoint.open(dir);
  try {
    const w = loadWeights(ck, refOps, config, { mtp: true });
    return { config, params: paramsFromWeights(config, w, ctor) };
  } finally {
    ck.close();
  }
}

export interface InitOptions {
  seed?: number;
  /** Standard deviation of linear weights and embeddings (HF initializer_range; default 0.02). */
  std?: number;
}

/** Fresh parameters: N(0, std²) matrices (Box-Muller over mulberry32), norms 1, router bias 0. */
export function initTrainParams(c: DeepseekConfig, opts: InitOptions = {}, ctor: FloatArrayCtor = Float32Array): TrainParams {
  const rnd = mulberry32(opts.seed ?? 0);
  const std = opts.std ?? 0.02;
  const normal = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  const root: Tree = { layers: [], mtp: [] };
  for (const s of tensorSpecs(c, { mtp: true })) {
    if (s.optional || (s.group && s.group.index > 0)) continue; // MTP embed/head: shared with the main model
    const shape = paramShape(s);
    const data = new ctor(shape.reduce((a, b) => a * b, 1));
    if (s.kind === 'vector') data.fill(isBuffer(s) ? 0 : 1);
    else for (let i = 0; i < data.length; i++) data[i] = normal() * std;
    setPath(root, s.target, new Tensor(data, shape, !isBuffer(s)));
  }
  const p = root as unknown as TrainParams;
  if (c.tie_word_embeddings) p.lmHead = p.embed;
  return p;
}

export interface NamedParam {
  /** HF name; routed experts: `model.layers.L.mlp.experts.{E}.gate_proj.weight` with {E} unexpanded. */
  name: string;
  tensor: Tensor;
}

/**
 * Every tensor of the tree once, in the name table's order: trained parameters (requiresGrad) and the
 * router-bias buffers. A tied lm_head appears once (as the embedding).
 */
export function namedParams(c: DeepseekConfig, p: TrainParams): NamedParam[] {
  const out: NamedParam[] = [];
  const seen = new Set<Tensor>();
  for (const s of tensorSpecs(c, { mtp: true })) {
    if (s.group && s.group.index > 0) continue;
    const t = getPath(p, s.target);
    if (!(t instanceof Tensor) || seen.has(t)) continue;
    seen.add(t);
    out.push({ name: s.group ? s.name.replace(/\.experts\.0\./, '.experts.{E}.') : s.name, tensor: t });
  }
  return out;
}

/** The tensors the optimizer updates (requiresGrad), each once. */
export function trainableTensors(c: DeepseekConfig, p: TrainParams): Tensor[] {
  return namedParams(c, p).map((n) => n.tensor).filter((t) => t.requiresGrad);
}
