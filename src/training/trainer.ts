// One optimizer step of a training run over micro-batches, on any step engine (PP 1 on this thread,
// or a DualPipe / DualPipeV / 1F1B pipeline on worker threads): the engine runs forward and backward of
// every micro-batch, reduce.ts sums the chunks' gradients in micro-batch order (so every engine gives
// the same bits), then global-norm clipping, AdamW at the scheduled rate and the auxiliary-loss-free
// bias step from the step's expert loads (arXiv 2412.19437 §2.1.2, §4.2) — the rules of step.ts,
// with the batch cut into C micro-batches whose gradients are averaged.
// Data: a token stream cut into windows of n + 1 tokens at stride n; each epoch visits every window
// once in an order drawn from the run's seed; step s takes windows [s·B, (s + 1)·B) of that sequence
// (B = chunks × microBatch), so the data position of a resumed run is a function of the step alone.
import { isMoeLayer, type DeepseekConfig } from '../model/config.ts';
import { mulberry32 } from '../tensor/random.ts';
import { AdamW, clipGradNorm, learningRate, type ScheduleOptions } from './optim.ts';
import type { TrainParams } from './params.ts';
import { reduceGradients, reduceStats, type StepReport } from './pipeline/reduce.ts';
import type { StepEngine, StepResult } from './pipeline/runtime.ts';
import { updateRoutingBias } from './routing.ts';

export interface BatchShape {
  /** Micro-batches per step (C). */
  chunks: number;
  /** Windows per micro-batch. */
  microBatch: number;
  /** Positions per window (n); a window holds n + 1 tokens. */
  seqLen: number;
}

/** Windows of n + 1 tokens at stride n over a token stream, visited in seeded epoch orders. */
export class WindowSampler {
  readonly count: number;
  readonly #orders = new Map<number, Uint32Array>();

  constructor(readonly tokens: Int32Array, readonly seqLen: number, readonly seed: number) {
    this.count = Math.floor((tokens.length - 1) / seqLen);
    if (this.count < 1) throw new RangeError(`${tokens.length} tokens hold no window of ${seqLen + 1}`);
  }

  #order(epoch: number): Uint32Array {
    let o = this.#orders.get(epoch);
    if (!o) {
      o = Uint32Array.from({ length: this.count }, (_, i) => i);
      const r = mulberry32((this.seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0);
      for (let i = o.length - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1));
        const t = o[i]!; o[i] = o[j]!; o[j] = t;
      }
      this.#orders.clear();
      this.#orders.set(epoch, o);
    }
    return o;
  }

  /** The i-th window of the run (0-based over all epochs). */
  window(i: number): Int32Array {
    const w = this.#order(Math.floor(i / this.count))[i % this.count]!;
    return this.tokens.subarray(w * this.seqLen, w * this.seqLen + this.seqLen + 1);
  }

  /** Micro-batches of 1-based step `step`. */
  batch(step: number, s: BatchShape): Int32Array[][] {
    const B = s.chunks * s.microBatch;
    const base = (step - 1) * B;
    return Array.from({ length: s.chunks }, (_, c) => Array.from({ length: s.microBatch }, (_, j) => this.window(base + c * s.microBatch + j)));
  }
}

export interface TrainStepOptions {
  schedule: ScheduleOptions;
  /** Max global gradient norm; 0: no clipping. */
  clip: number;
  /** Bias update speed γ. */
  biasSpeed: number;
  mtpLambda: number;
}

export interface TrainStepStats extends StepReport {
  step: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  /** The engine's result (per-rank compute spans for the bubble report). */
  raw: StepResult;
}

/** One optimizer step of `chunks` (micro-batches of windows) on `engine`. */
export async function trainStepChunks(engine: StepEngine, c: DeepseekConfig, params: TrainParams, opt: AdamW, chunks: Int32Array[][], o: TrainStepOptions): Promise<TrainStepStats> {
  opt.zeroGrad();
  const raw = await engine.run(chunks);
  reduceGradients(opt.params, raw.grads, chunks.length);
  const rep = reduceStats(raw.stats, chunks.length, o.mtpLambda, params.mtp.length);
  const gradNorm = clipGradNorm(opt.params, o.clip > 0 ? o.clip : Infinity);
  const step = opt.state.step + 1;
  const lr = learningRate(o.schedule, step);
  opt.step(lr);
  for (const [l, load] of rep.loads) {
    const moe = l < c.num_hidden_layers ? (isMoeLayer(c, l) ? params.layers[l]!.moe : undefined) : params.mtp[l - c.num_hidden_layers]!.block.moe;
    if (moe?.bias) updateRoutingBias(moe.bias.data, load, o.biasSpeed);
  }
  opt.zeroGrad();
  const tokens = chunks.reduce((a, ch) => a + ch.reduce((b, w) => b + w.length - 1, 0), 0);
  return { ...rep, step, lr, gradNorm, tokens, raw };
}
