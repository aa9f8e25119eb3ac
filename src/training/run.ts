// A training run: parameters (fresh from the seed, or the run state in the output directory on
// resume), the step engine (PP 1 or a pipeline), the optimizer loop with the warm-up + cosine
// schedule, held-out evaluation, the JSON log, the loss-curve SVG and checkpoints.
// Output directory (a Hugging Face model directory `seekd serve --model DIR` loads, plus the trainer's files):
//   config.json, model.safetensors (F32), tokenizer.json, tokenizer_config.json, generation_config.json
//   trainer/optimizer.safetensors, trainer/state.json    AdamW moments, step, this run's options
//   train-log.jsonl                                      one JSON object per step / evaluation
//   loss.svg                                             training and held-out loss per step
// Resume continues bit for bit: the state holds everything a step reads (parameters, router biases,
// AdamW moments and step), the data position is a function of the step (trainer.ts WindowSampler), and
// log lines after the saved step are dropped and recomputed.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { parseConfig, type DeepseekConfig } from '../model/config.ts';
import { noGrad } from '../tensor/autograd/index.ts';
import { loadTrainData } from './data.ts';
import { gemmPeak, trainFlopsPerWindow } from './flops.ts';
import { WasmDeepGemm } from '../kernels/deepgemm/index.ts';
import { Fp8Gemm } from './fp8.ts';
import { Gemm } from './gemm.ts';
import { TrainModel } from './model.ts';
import { AdamW } from './optim.ts';
import { initTrainParams, trainableTensors, type TrainParams } from './params.ts';
import { LocalEngine, PipelineEngine, stagesFor, type ScheduleKind, type StepEngine } from './pipeline/runtime.ts';
import { lossCurveSvg, measureBubble, type BubbleReport } from './report.ts';
import { loadTrainState, saveTrainState } from './state.ts';
import { trainStepChunks, WindowSampler } from './trainer.ts';

export interface RunOptions {
  /** The model's config.json. */
  configJson: Record<string, unknown>;
  /** Data directory (data.ts). */
  data: string;
  /** Total optimizer steps (the schedule's length). */
  steps: number;
  /** Pipeline ranks; 1 = this thread. */
  pp: number;
  schedule: ScheduleKind;
  chunks: number;
  microBatch: number;
  seqLen: number;
  lr: number;
  minLr: number;
  warmup: number;
  clip: number;
  weightDecay: number;
  biasSpeed: number;
  mtpLambda: number;
  balanceAlpha: number;
  seed: number;
  initStd: number;
  /** Save the run state every N steps (and at the end); 0: only at the end. */
  saveEvery: number;
  /** Held-out loss every N steps (and at the end); 0: only at the end. */
  evalEvery: number;
  /** Held-out windows evaluated (the first ones of val, in order). */
  evalWindows: number;
  /** FP8 mixed precision (fp8.ts) for the projections' and experts' products. */
  fp8: boolean;
}

export const DEFAULT_RUN: Omit<RunOptions, 'configJson' | 'data' | 'steps'> = {
  pp: 1, schedule: 'dualpipev', chunks: 4, microBatch: 4, seqLen: 128, lr: 3e-3, minLr: 3e-4, warmup: 20, clip: 1, weightDecay: 0.1,
  biasSpeed: 1e-3, mtpLambda: 0.3, balanceAlpha: 1e-4, seed: 1, initStd: 0.02, saveEvery: 0, evalEvery: 0, evalWindows: 32, fp8: false,
};

export interface StepLog {
  step: number;
  loss: number;
  mainLoss: number;
  mtpLoss: number[];
  balanceLoss: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  seconds: number;
  tokensPerSec: number;
  /** Model FLOPs per second over (the GEMM peak × ranks). */
  mfu: number;
  bubble?: BubbleReport;
}

export interface EvalLog { step: number; evalLoss: number; evalTokens: number }

export interface RunHooks {
  onStart?(info: { startStep: number; steps: number; params: number; peakGflops: number; ranks: number; stages: number; trainTokens: number; valTokens: number }): void;
  onStep?(log: StepLog): void;
  onEval?(log: EvalLog): void;
  onSave?(step: number): void;
}

export interface RunSummary {
  steps: number;
  lastLoss: number;
  evalLoss: number | null;
  peakGflops: number;
  meanTokensPerSec: number;
  meanMfu: number;
  /** Pipelines: means over the timed steps of the step's makespan, its largest rank bubble and the closed form (ms). */
  bubble: { makespanMs: number; maxBubbleMs: number; closedFormMs: number } | null;
}

export class RunOptionsError extends Error {
  override name = 'RunOptionsError';
  readonly exitCode = 2;
}

const LOG = 'train-log.jsonl';

/** Mean main cross-entropy of the first `windows` held-out windows (n + 1 tokens, stride n). */
export function evalLoss(model: TrainModel, val: Int32Array, seqLen: number, windows: number): { loss: number; tokens: number } {
  const count = Math.min(windows, Math.floor((val.length - 1) / seqLen));
  if (count < 1) return { loss: NaN, tokens: 0 };
  let sum = 0;
  for (let i = 0; i < count; i++) {
    const w = val.subarray(i * seqLen, i * seqLen + seqLen + 1);
    sum += noGrad(() => model.forward([w], { mtp: false })).mainLoss;
  }
  return { loss: sum / count, tokens: count * seqLen };
}

function checkOptions(o: RunOptions, c: DeepseekConfig): void {
  const int = (k: keyof RunOptions, min: number) => {
    const v = o[k] as number;
    if (!Number.isInteger(v) || v < min) throw new RunOptionsError(`${k} must be an integer >= ${min}, got ${v}`);
  };
  int('steps', 1); int('pp', 1); int('chunks', 1); int('microBatch', 1); int('seqLen', 2); int('warmup', 0); int('saveEvery', 0); int('evalEvery', 0); int('evalWindows', 0);
  if (o.seqLen + 1 > c.max_position_embeddings) throw new RunOptionsError(`seqLen ${o.seqLen} + 1 exceeds max_position_embeddings ${c.max_position_embeddings}`);
  for (const k of ['lr', 'minLr', 'clip', 'weightDecay', 'biasSpeed', 'mtpLambda', 'balanceAlpha', 'initStd'] as const) {
    if (!(Number.isFinite(o[k]) && o[k] >= 0)) throw new RunOptionsError(`${k} must be a finite number >= 0, got ${o[k]}`);
  }
  if (!['dualpipev', 'dualpipe', '1f1b'].includes(o.schedule)) throw new RunOptionsError(`schedule must be dualpipev, dualpipe or 1f1b, got ${o.schedule}`);
}

/**
 * Trains into `out` up to step `until` (default: all steps) of the schedule. With resume, the options
 * come from the saved state (the schedule and data order must not change mid-run); `data` may be
 * given again if the directory moved.
 */
export async function runTraining(out: string, given: RunOptions | null, opts: { resume?: boolean; until?: number; data?: string } = {}, hooks: RunHooks = {}): Promise<RunSummary> {
  let o: RunOptions;
  let params: TrainParams;
  let opt: AdamW;
  let c: DeepseekConfig;
  let startStep = 0;
  if (opts.resume) {
    if (!existsSync(join(out, 'trainer', 'state.json'))) throw new RunOptionsError(`${out}: no run state to resume (trainer/state.json)`);
    const s = loadTrainState(out);
    const saved = s.extra.run as RunOptions | undefined;
    if (!saved) throw new RunOptionsError(`${out}: the run state has no run options`);
    o = { ...saved, data: resolve(opts.data ?? saved.data) };
    c = s.config;
    params = s.params;
    opt = s.opt;
    startStep = opt.state.step;
  } else {
    if (!given) throw new RunOptionsError('no run options');
    o = { ...given, data: resolve(given.data) }; // saved with the state: resume may run from elsewhere
    try {
      c = parseConfig(o.configJson);
    } catch (e) {
      throw new RunOptionsError(`config: ${(e as Error).message}`);
    }
    checkOptions(o, c);
    params = initTrainParams(c, { seed: o.seed, std: o.initStd });
    // FP8 runs keep the AdamW moments in BF16 (DeepSeek-V3 §3.3.3); resume restores it from state.json.
    opt = new AdamW(trainableTensors(c, params), o.fp8 ? { weightDecay: o.weightDecay, moments: 'bf16' } : { weightDecay: o.weightDecay });
  }
  const until = Math.min(opts.until ?? o.steps, o.steps);
  const data = loadTrainData(o.data);
  if (data.tokenizer.vocabSize > c.vocab_size) throw new RunOptionsError(`the tokenizer has ${data.tokenizer.vocabSize} ids, the model's vocabulary ${c.vocab_size}`);
  const sampler = new WindowSampler(data.train, o.seqLen, o.seed);
  const shape = { chunks: o.chunks, microBatch: o.microBatch, seqLen: o.seqLen };
  mkdirSync(out, { recursive: true });

  // Keep the log up to the state's step (a resumed run recomputes what came after its last save).
  const logPath = join(out, LOG);
  const kept: Array<Record<string, number | unknown>> = [];
  if (opts.resume && existsSync(logPath)) {
    for (const line of readFileSync(logPath, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      const r = JSON.parse(line) as { step: number };
      if (r.step <= startStep) kept.push(r);
    }
  }
  writeFileSync(logPath, kept.map((r) => JSON.stringify(r) + '\n').join(''));
  const log = (r: object) => { kept.push(r as Record<string, unknown>); writeFileSync(logPath, JSON.stringify(r) + '\n', { flag: 'a' }); };

  const k: Kernels = await loadBackend('wasm', { threads: 1 });
  const gemm = new Gemm(k);
  const deepGemm = o.fp8 && o.pp === 1 ? await WasmDeepGemm.create(1) : null;
  const peak = gemmPeak(k);
  const ranks = o.pp;
  const stages = o.pp === 1 ? 1 : stagesFor(o.schedule, o.pp);
  let engine: StepEngine | null = null;
  const evalModel = new TrainModel(c, params, gemm, { mtpLambda: o.mtpLambda, balanceAlpha: o.balanceAlpha });
  const files: Record<string, string> = {
    ...data.files,
    'generation_config.json': JSON.stringify({ bos_token_id: c.bos_token_id ?? 0, eos_token_id: c.eos_token_id ?? 1, do_sample: true, temperature: 0.7, top_p: 0.95 }, null, 2) + '\n',
  };
  const save = (step: number) => {
    saveTrainState(out, o.configJson, c, params, opt, { run: o }, files);
    writePlot(out, kept);
    hooks.onSave?.(step);
  };
  const doEval = (step: number): number | null => {
    if (!data.val || o.evalWindows === 0) return null;
    const r = evalLoss(evalModel, data.val, o.seqLen, o.evalWindows);
    if (r.tokens === 0) return null;
    const e: EvalLog = { step, evalLoss: r.loss, evalTokens: r.tokens };
    log(e);
    hooks.onEval?.(e);
    return r.loss;
  };
  let lastLoss = NaN, lastEval: number | null = null, tps = 0, mfu = 0, timed = 0;
  const bub = { makespanMs: 0, maxBubbleMs: 0, closedFormMs: 0, n: 0 };
  try {
    engine = o.pp === 1
      ? new LocalEngine(c, params, gemm, o.chunks, { mtpLambda: o.mtpLambda, balanceAlpha: o.balanceAlpha }, deepGemm ? new Fp8Gemm(deepGemm) : null)
      : await PipelineEngine.create(c, o.configJson, params, { kind: o.schedule, pp: o.pp, ...shape, lossOpts: { mtpLambda: o.mtpLambda, balanceAlpha: o.balanceAlpha }, fp8: o.fp8 });
    hooks.onStart?.({ startStep, steps: o.steps, params: opt.params.reduce((a, p) => a + p.size, 0), peakGflops: peak, ranks, stages, trainTokens: data.train.length, valTokens: data.val?.length ?? 0 });
    const flopsPerWindow = trainFlopsPerWindow(c, o.seqLen);
    const schedule = { lr: o.lr, minLr: o.minLr, warmupSteps: o.warmup, totalSteps: o.steps };
    for (let step = startStep + 1; step <= until; step++) {
      const batch = sampler.batch(step, shape);
      const t0 = performance.now();
      const st = await trainStepChunks(engine, c, params, opt, batch, { schedule, clip: o.clip, biasSpeed: o.biasSpeed, mtpLambda: o.mtpLambda });
      const seconds = (performance.now() - t0) / 1000;
      const flops = o.chunks * o.microBatch * flopsPerWindow;
      const entry: StepLog = {
        step, loss: st.loss, mainLoss: st.mainLoss, mtpLoss: st.mtpLosses, balanceLoss: st.balanceLoss, lr: st.lr, gradNorm: st.gradNorm,
        tokens: st.tokens, seconds, tokensPerSec: st.tokens / seconds, mfu: flops / seconds / 1e9 / (peak * ranks),
      };
      if (o.pp > 1) {
        const b = measureBubble(st.raw.trace, o.schedule, ranks, stages);
        if (b) entry.bubble = b;
      }
      log(entry);
      lastLoss = st.mainLoss;
      // The first step of a process warms up (compilation, allocation): left out of the means when there are others.
      if (step > startStep + 1 || until - startStep === 1) {
        tps += entry.tokensPerSec; mfu += entry.mfu; timed++;
        if (entry.bubble) {
          bub.makespanMs += entry.bubble.makespanMs; bub.maxBubbleMs += Math.max(...entry.bubble.bubblesMs); bub.closedFormMs += entry.bubble.closedFormMs; bub.n++;
        }
      }
      hooks.onStep?.(entry);
      if (o.evalEvery > 0 && step % o.evalEvery === 0 && step !== until) lastEval = doEval(step);
      if (o.saveEvery > 0 && step % o.saveEvery === 0 && step !== until) save(step);
    }
    if (until > startStep || !existsSync(join(out, 'model.safetensors'))) {
      lastEval = doEval(until);
      save(until);
    }
  } finally {
    await engine?.close();
    await deepGemm?.dispose();
    await k.dispose();
  }
  return {
    steps: until, lastLoss, evalLoss: lastEval, peakGflops: peak, meanTokensPerSec: timed ? tps / timed : 0, meanMfu: timed ? mfu / timed : 0,
    bubble: bub.n ? { makespanMs: bub.makespanMs / bub.n, maxBubbleMs: bub.maxBubbleMs / bub.n, closedFormMs: bub.closedFormMs / bub.n } : null,
  };
}

function writePlot(out: string, entries: ReadonlyArray<Record<string, unknown>>): void {
  const train: Array<[number, number]> = [], val: Array<[number, number]> = [];
  for (const e of entries) {
    if (typeof e.mainLoss === 'number') train.push([e.step as number, e.mainLoss]);
    if (typeof e.evalLoss === 'number') val.push([e.step as number, e.evalLoss]);
  }
  writeFileSync(join(out, 'loss.svg'), lossCurveSvg([
    { name: 'train (main CE)', color: '#1f5fa8', points: train },
    { name: 'held-out', color: '#c2410c', points: val },
  ], 'seekd train: loss per step'));
}
