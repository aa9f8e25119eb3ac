// A pipeline stage of the DeepSeek-V3 training model: a contiguous piece of TrainModel (embedding on
// the first stage, decoder layers [from, to), final norm + lm_head + MTP modules on the last), driven by
// the DualPipe executor (parallel/dualpipe/executor.ts) or the 1F1B executor (./onefoneb.ts) as a
// StageModule, or in-process for PP 1 (./local.ts). Reference: DeepSeek-V3 technical report, arXiv
// 2412.19437 §3.2.1 (DualPipe: "the MTP module on the last stage"); DualPipe, github.com/deepseek-ai/DualPipe.
//
// Exactness: every micro-batch (chunk) runs on its own shadow leaves (new leaf tensors over the shared
// parameter data), so each chunk's gradient is kept apart, whatever order the schedule runs backwards
// and deferred weight gradients (W) in. The trainer then sums the chunks' gradients in micro-batch
// order (reduce.ts): the same sums for PP 1 and any pipeline, so losses and parameters agree bit for bit.
//
// Tensors crossing stages: the hidden residual stream [T, H] (T = windows·n tokens of the chunk).
// A first stage takes the chunk's token windows as a float tensor [windows, n + 1] (ids < 2^24 are
// exact); the last stage's "label" is the same tensor (targets, MTP tokens).
import { makeResult, type FloatArray, type Tensor, type WeightGradStore } from '../../tensor/autograd/index.ts';
import type { DeepseekConfig } from '../../model/config.ts';
import type { Gemm } from '../gemm.ts';
import { TrainModel, type LayerAux, type TrainBatch, type TrainLossOptions } from '../model.ts';
import { sumScalars } from '../ops.ts';
import type { TrainParams } from '../params.ts';

/** Which part of the model a stage holds. */
export interface StageSpec {
  index: number;
  first: boolean;
  last: boolean;
  /** Decoder layers [from, to). */
  from: number;
  to: number;
}

/**
 * Splits the L decoder layers over S stages, contiguously, balancing cost units: a layer is 1, the
 * last stage's head counts `headCost` (lm_head + the MTP modules' blocks), the embedding 0.
 */
export function planStages(c: DeepseekConfig, S: number): StageSpec[] {
  const L = c.num_hidden_layers;
  if (!Number.isInteger(S) || S < 1) throw new RangeError(`stages must be a positive integer, got ${S}`);
  const headCost = 0.5 + c.num_nextn_predict_layers;
  const total = L + headCost;
  const specs: StageSpec[] = [];
  let from = 0;
  for (let s = 0; s < S; s++) {
    let to: number;
    if (s === S - 1) to = L;
    else {
      // End this stage where the running cost passes (s + 1)/S of the total, leaving the rest a layer each if possible.
      const target = ((s + 1) * total) / S;
      to = Math.max(from, Math.min(L, Math.round(target)));
    }
    specs.push({ index: s, first: s === 0, last: s === S - 1, from, to });
    from = to;
  }
  return specs;
}

/** A leaf copy of every tensor of the tree over the same data (tied tensors stay tied). */
export function shadowParams(p: TrainParams): TrainParams {
  const seen = new Map<Tensor, Tensor>();
  const walk = (o: unknown): unknown => {
    if (o === null || typeof o !== 'object') return o;
    if (isTensor(o)) {
      let s = seen.get(o);
      if (!s) seen.set(o, (s = o.detach(o.requiresGrad)));
      return s;
    }
    if (Array.isArray(o)) return o.map(walk);
    return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, walk(v)]));
  };
  return walk(p) as TrainParams;
}

function isTensor(o: object): o is Tensor {
  return 'data' in o && 'shape' in o && 'gradFn' in o;
}

/**
 * y = x, with `aux` (one element) riding along: backward gives x the output gradient and aux a gradient
 * of 1. A stage that does not compute the loss sends its output on and back-propagates its balance-loss
 * terms (which enter the total loss with weight 1) together with it.
 */
export function withAux(x: Tensor, aux: Tensor): Tensor {
  return makeResult(x.data, x.shape, {
    name: 'withAux',
    inputs: [x, aux],
    backward: (dy) => [dy, new (aux.ctor)(1).fill(1)],
  });
}

/** y = x, and a zero gradient for `input` (the token-id tensor a first stage is given). */
function touch(x: Tensor, input: Tensor): Tensor {
  return makeResult(x.data, x.shape, {
    name: 'touch',
    inputs: [x, input],
    backward: (dy) => [dy, new (input.ctor)(input.size)],
  });
}

/** What one chunk reported: its micro-batch, loads, balance terms, and (last stage) its losses. */
export interface ChunkStats {
  mb: number;
  /** Routed tokens per expert of each MoE layer of this stage (MTP blocks at L + j). */
  loads: Array<[number, Int32Array]>;
  /** Balance-loss values of this stage's MoE layers, in layer order. */
  balance: number[];
  mainLoss?: number;
  mtpLosses?: number[];
}

/** One chunk's gradients on a stage: trainable index (trainableTensors order) → gradient. */
export interface ChunkGrads {
  mb: number;
  stage: number;
  grads: Array<[number, FloatArray]>;
}

interface ChunkCtx {
  slot: number;
  batch: TrainBatch;
  aux: LayerAux;
  model: TrainModel;
}

/** Token windows [windows, n + 1] as a float tensor, and back. */
export function windowsTensor(windows: readonly Int32Array[], ctor: Float32ArrayConstructor | Float64ArrayConstructor = Float32Array): FloatArray {
  const n = windows[0]!.length;
  const out = new ctor(windows.length * n);
  windows.forEach((w, i) => {
    if (w.length !== n) throw new RangeError('all windows of a chunk must have the same length');
    out.set(w, i * n);
  });
  return out;
}

function windowsOf(t: Tensor): Int32Array[] {
  const [W, n] = t.shape as [number, number];
  return Array.from({ length: W }, (_, i) => Int32Array.from(t.data.subarray(i * n, (i + 1) * n)));
}

/**
 * One stage module (StageModule of the DualPipe executor). Forward calls within a step are the
 * module's chunks in order; `mbOf(k)` names the micro-batch of its k-th chunk. Call beginStep() before
 * each step and collect() after it.
 */
export class TrainStage {
  readonly #models: TrainModel[] = [];
  readonly #trainables: Tensor[][] = [];
  readonly #ctx = new WeakMap<Tensor, ChunkCtx>();
  #k = 0;
  #stats: ChunkStats[] = [];

  constructor(
    readonly config: DeepseekConfig,
    readonly spec: StageSpec,
    readonly params: TrainParams,
    /** Indices (trainableTensors order) → the run's trainable parameters, to name shadow gradients. */
    readonly trainable: readonly Tensor[],
    readonly gemm: Gemm,
    readonly store: WeightGradStore | null,
    readonly mbOf: (k: number) => number,
    readonly chunks: number,
    readonly lossOpts: TrainLossOptions = {},
    /** FP8 mixed precision's products (fp8.ts), or null for f32. */
    readonly fp8: Gemm | null = null,
  ) {}

  /** The model of chunk slot k (shadow leaves), created on first use and reused every step. */
  #model(k: number): TrainModel {
    while (this.#models.length <= k) {
      const sp = shadowParams(this.params);
      const m = new TrainModel(this.config, sp, this.gemm, this.lossOpts);
      m.store = this.store;
      m.fp8 = this.fp8;
      this.#models.push(m);
      // The shadow of trainable i is found by walking both trees in the same order.
      const map = new Map<Tensor, Tensor>();
      pairLeaves(this.params, sp, map);
      this.#trainables.push(this.trainable.map((t) => map.get(t)!));
    }
    return this.#models[k]!;
  }

  /** Whether `out` is an output of this stage's forward in the current step. */
  owns(out: Tensor): boolean {
    return this.#ctx.has(out);
  }

  beginStep(): void {
    this.#k = 0;
    this.#stats = [];
    for (let k = 0; k < Math.min(this.chunks, this.#models.length); k++) for (const t of this.#trainables[k]!) if (t) t.grad = null;
  }

  parameters(): Tensor[] {
    return [];
  }

  forward(x: Tensor): Tensor {
    const k = this.#k++;
    const model = this.#model(k);
    const { spec } = this;
    const aux: LayerAux = { loads: new Map(), balance: [] };
    let batch: TrainBatch;
    let h: Tensor;
    if (spec.first) {
      batch = model.batch(windowsOf(x));
      h = touch(model.embed(batch), x);
    } else {
      batch = this.#pendingBatch(k);
      h = x;
    }
    h = model.layers(batch, h, spec.from, spec.to, aux);
    const stats: ChunkStats = { mb: this.mbOf(k), loads: [], balance: aux.balance.map((b) => b.item()) };
    this.#stats.push(stats);
    if (!spec.last && aux.balance.length > 0) h = withAux(h, sumScalars(aux.balance));
    this.#ctx.set(h, { slot: k, batch, aux, model });
    stats.loads = [...aux.loads];
    return h;
  }

  /**
   * Middle and last stages get only the hidden state; the layers need the windows' lengths and
   * positions. All windows of a run have the same length, so the layout is rebuilt from the shape.
   */
  #pendingBatch(k: number): TrainBatch {
    const model = this.#model(k);
    const { windows, n } = this.layout!;
    return model.batch(Array.from({ length: windows }, () => new Int32Array(n + 1)));
  }

  /** Windows per chunk and tokens per window (n + 1 = window length), for stages that see no tokens. */
  layout: { windows: number; n: number } | null = null;

  /** The last stage's loss: main CE + λ/D Σ MTP CE + this stage's balance terms (criterion of the executor). */
  criterion = (out: Tensor, label: Tensor): Tensor => {
    const ctx = this.#ctx.get(out);
    if (!ctx) throw new Error('criterion on a tensor this stage did not produce');
    const windows = windowsOf(label);
    // The layers only needed lengths and positions; the head needs the tokens themselves.
    const batch = ctx.model.batch(windows);
    const res = ctx.model.head(batch, out, ctx.aux);
    const st = this.#stats.find((s) => s.mb === this.mbOf(ctx.slot))!;
    st.mainLoss = res.mainLoss;
    st.mtpLosses = res.mtpLosses;
    st.balance = ctx.aux.balance.map((b) => b.item());
    st.loads = [...res.loads];
    return res.loss;
  };

  /** Stats and gradients of this step's chunks (clears the shadow gradients' references). */
  collect(): { stats: ChunkStats[]; grads: ChunkGrads[] } {
    const grads: ChunkGrads[] = [];
    for (let k = 0; k < this.#k; k++) {
      const list: Array<[number, FloatArray]> = [];
      this.#trainables[k]!.forEach((t, i) => {
        if (t.grad) list.push([i, t.grad]);
        t.grad = null;
      });
      grads.push({ mb: this.mbOf(k), stage: this.spec.index, grads: list });
    }
    return { stats: this.#stats, grads };
  }
}

function pairLeaves(a: unknown, b: unknown, map: Map<Tensor, Tensor>): void {
  if (a === null || typeof a !== 'object') return;
  if (isTensor(a)) { map.set(a, b as Tensor); return; }
  if (Array.isArray(a)) { a.forEach((v, i) => pairLeaves(v, (b as unknown[])[i], map)); return; }
  for (const [k, v] of Object.entries(a)) pairLeaves(v, (b as Record<string, unknown>)[k], map);
}
