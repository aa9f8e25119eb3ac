// Step engines of a training run: what computes the forward and backward passes of one optimizer
// step's micro-batches and reports per-chunk gradients and stats (reduce.ts makes the step of them).
//   LocalEngine     PP 1: the whole model as one stage, chunks in order on this thread.
//   PipelineEngine  PP ranks on worker threads: DualPipe (PP ranks, stages mirrored), DualPipeV (PP
//                   ranks, 2·PP stages in a V) on the DualPipe executor, or 1F1B (PP ranks, PP stages).
// The parameters live on SharedArrayBuffers (shareParams): the workers read the values the main
// thread's optimizer writes between steps; nothing else is copied per step except the chunks' tokens,
// the hidden states between ranks and the gradients coming back.
import { MessageChannel, type MessagePort, type Worker } from 'node:worker_threads';
import { spawnWorker } from '../../platform/worker.ts';
import type { DeepseekConfig } from '../../model/config.ts';
import { backward, Tensor } from '../../tensor/autograd/index.ts';
import { PipelineRankError } from '../../parallel/dualpipe/errors.ts';
import { checkSchedule } from '../../parallel/dualpipe/schedule.ts';
import type { TraceEvent } from '../../parallel/trace/chrome-trace.ts';
import type { Gemm } from '../gemm.ts';
import type { TrainLossOptions } from '../model.ts';
import { trainableTensors, type TrainParams } from '../params.ts';
import { planStages, TrainStage, windowsTensor, type ChunkGrads, type ChunkStats, type StageSpec } from './stage.ts';

export type ScheduleKind = 'dualpipev' | 'dualpipe' | '1f1b';

export interface StepResult {
  stats: Array<ChunkStats & { stage: number }>;
  grads: ChunkGrads[];
  /** Compute spans of every rank (pipeline engines). */
  trace: TraceEvent[];
}

export interface StepEngine {
  /** chunks[mb] = the windows (equal lengths) of micro-batch mb. */
  run(chunks: Int32Array[][]): Promise<StepResult>;
  close(): Promise<void>;
  readonly stages: readonly StageSpec[];
}

/** Moves every tensor's data onto a SharedArrayBuffer (in place; tied tensors are one tensor). */
export function shareParams(p: TrainParams): void {
  for (const { tensor } of leafPaths(p).unique) {
    if (tensor.data.buffer instanceof SharedArrayBuffer) continue;
    const v = new Float32Array(new SharedArrayBuffer(tensor.data.length * 4) as unknown as ArrayBuffer);
    v.set(tensor.data);
    tensor.data = v;
  }
}

function leafPaths(p: TrainParams): { unique: Array<{ tensor: Tensor }>; paths: Array<{ path: Array<string | number>; index: number }> } {
  const index = new Map<Tensor, number>();
  const unique: Array<{ tensor: Tensor }> = [];
  const paths: Array<{ path: Array<string | number>; index: number }> = [];
  const walk = (o: unknown, path: Array<string | number>) => {
    if (o instanceof Tensor) {
      let i = index.get(o);
      if (i === undefined) { index.set(o, (i = unique.length)); unique.push({ tensor: o }); }
      paths.push({ path, index: i });
    } else if (Array.isArray(o)) o.forEach((v, k) => walk(v, [...path, k]));
    else if (o && typeof o === 'object') for (const [k, v] of Object.entries(o)) walk(v, [...path, k]);
  };
  walk(p, []);
  return { unique, paths };
}

/** PP 1: one stage with every layer, on this thread. */
export class LocalEngine implements StepEngine {
  readonly stages: StageSpec[];
  readonly #stage: TrainStage;

  constructor(c: DeepseekConfig, params: TrainParams, gemm: Gemm, chunks: number, lossOpts: TrainLossOptions = {}, fp8: Gemm | null = null) {
    this.stages = planStages(c, 1);
    this.#stage = new TrainStage(c, this.stages[0]!, params, trainableTensors(c, params), gemm, null, (k) => k, chunks, lossOpts, fp8);
  }

  async run(chunks: Int32Array[][]): Promise<StepResult> {
    const s = this.#stage;
    s.beginStep();
    for (const w of chunks) {
      const x = new Tensor(windowsTensor(w), [w.length, w[0]!.length], true);
      backward([s.criterion(s.forward(x), x)], [null]);
    }
    const r = s.collect();
    return { stats: r.stats.map((st) => ({ ...st, stage: 0 })), grads: r.grads, trace: [] };
  }

  async close(): Promise<void> {}
}

export interface TrainRankData {
  rank: number;
  numRanks: number;
  kind: ScheduleKind;
  chunks: number;
  configJson: Record<string, unknown>;
  stages: StageSpec[];
  tensors: Array<{ buffer: SharedArrayBuffer; shape: number[]; requiresGrad: boolean }>;
  paths: Array<{ path: Array<string | number>; index: number }>;
  p2pShape: number[];
  layout: { windows: number; n: number };
  lossOpts: TrainLossOptions;
  fp8: boolean;
  ports: Record<string, MessagePort>;
}

export type TrainRankRequest =
  | { id: number; cmd: 'step'; windows: Int32Array[][] }
  | { id: number; cmd: 'close' };

export type TrainRankReply =
  | { id: number; ok: true; stats?: Array<ChunkStats & { stage: number }>; grads?: ChunkGrads[]; trace?: TraceEvent[] }
  | { id: number; ok: false; error: string };

/** A pipeline the options describe cannot run (exit code 2); a rank failing at run time is a PipelineRankError. */
export class PipelineError extends Error {
  override name = 'PipelineError';
  readonly exitCode = 2;
}

export interface PipelineOptions {
  kind: ScheduleKind;
  /** Pipeline ranks (worker threads). */
  pp: number;
  chunks: number;
  /** Windows per micro-batch and tokens per window minus one. */
  microBatch: number;
  seqLen: number;
  lossOpts?: TrainLossOptions;
  /** FP8 mixed precision (fp8.ts) on every rank. */
  fp8?: boolean;
}

/** Stages a schedule runs on `pp` ranks: DualPipeV cuts the model in 2·PP, the others in PP. */
export function stagesFor(kind: ScheduleKind, pp: number): number {
  return kind === 'dualpipev' ? 2 * pp : pp;
}

/** Refuses what a schedule cannot run (DualPipe: even PP and chunks; chunks ≥ 2·PP; 1F1B: PP ≥ 2). */
export function checkPipeline(kind: ScheduleKind, pp: number, chunks: number): void {
  if (!Number.isInteger(pp) || pp < 2) throw new PipelineError(`--pp must be at least 2 for a pipeline (got ${pp}); PP 1 trains on this thread`);
  if (!Number.isInteger(chunks) || chunks < 1) throw new PipelineError(`--chunks must be a positive integer (got ${chunks})`);
  if (kind === '1f1b') return;
  try {
    checkSchedule({ kind, numRanks: pp, numChunks: chunks });
  } catch (e) {
    throw new PipelineError((e as Error).message);
  }
}

export class PipelineEngine implements StepEngine {
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (r: TrainRankReply & { ok: true }) => void; reject: (e: Error) => void }>();
  #failed: Error | null = null;

  private constructor(readonly opts: PipelineOptions, readonly stages: StageSpec[], private readonly workers: Worker[]) {
    workers.forEach((w, rank) => {
      w.on('message', (r: TrainRankReply) => {
        const p = this.#pending.get(r.id);
        if (!p) return;
        this.#pending.delete(r.id);
        if (r.ok) p.resolve(r);
        else this.#fail(new PipelineRankError(r.error, rank));
      });
      w.on('error', (e) => this.#fail(new PipelineRankError(e.message, rank)));
      w.on('exit', (code) => { if (code !== 0) this.#fail(new PipelineRankError(`worker exited with code ${code}`, rank)); });
    });
  }

  static async create(c: DeepseekConfig, configJson: Record<string, unknown>, params: TrainParams, o: PipelineOptions): Promise<PipelineEngine> {
    checkPipeline(o.kind, o.pp, o.chunks);
    const stages = planStages(c, stagesFor(o.kind, o.pp));
    shareParams(params);
    const { unique, paths } = leafPaths(params);
    const tensors = unique.map(({ tensor }) => ({ buffer: tensor.data.buffer as SharedArrayBuffer, shape: [...tensor.shape], requiresGrad: tensor.requiresGrad }));
    const ports: Array<Record<string, MessagePort>> = Array.from({ length: o.pp }, () => ({}));
    for (let r = 0; r + 1 < o.pp; r++) {
      const ch = new MessageChannel();
      ports[r]![String(r + 1)] = ch.port1;
      ports[r + 1]![String(r)] = ch.port2;
    }
    const ready: Array<Promise<void>> = [];
    const workers: Worker[] = [];
    for (let rank = 0; rank < o.pp; rank++) {
      const data: TrainRankData = {
        rank, numRanks: o.pp, kind: o.kind, chunks: o.chunks, configJson, stages, tensors, paths,
        p2pShape: [o.microBatch * o.seqLen, c.hidden_size], layout: { windows: o.microBatch, n: o.seqLen }, lossOpts: o.lossOpts ?? {}, fp8: o.fp8 ?? false,
        ports: ports[rank]!,
      };
      const w = spawnWorker(new URL('./worker.ts', import.meta.url), data, { transferList: Object.values(ports[rank]!) });
      ready.push(new Promise((resolve, reject) => {
        const onMsg = (m: TrainRankReply) => { if (m.id === 0) { w.off('message', onMsg); resolve(); } };
        w.on('message', onMsg);
        w.once('error', reject);
        w.once('exit', (code) => reject(new PipelineError(`rank ${rank}: worker exited with code ${code} while starting`)));
      }));
      workers.push(w);
    }
    try {
      await Promise.all(ready);
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
    return new PipelineEngine(o, stages, workers);
  }

  #fail(e: Error): void {
    if (this.#failed) return;
    this.#failed = e;
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
    for (const w of this.workers) void w.terminate();
  }

  #request(rank: number, req: { cmd: 'step'; windows: Int32Array[][] } | { cmd: 'close' }): Promise<TrainRankReply & { ok: true }> {
    if (this.#failed) return Promise.reject(this.#failed);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.workers[rank]!.postMessage({ ...req, id });
    });
  }

  async run(chunks: Int32Array[][]): Promise<StepResult> {
    if (chunks.length !== this.opts.chunks) throw new PipelineError(`${chunks.length} micro-batches for a pipeline of ${this.opts.chunks}`);
    const replies = await Promise.all(this.workers.map((_, rank) => this.#request(rank, { cmd: 'step', windows: chunks })));
    return {
      stats: replies.flatMap((r) => r.stats ?? []),
      grads: replies.flatMap((r) => r.grads ?? []),
      trace: replies.flatMap((r) => r.trace ?? []),
    };
  }

  async close(): Promise<void> {
    if (!this.#failed) await Promise.all(this.workers.map((_, rank) => this.#request(rank, { cmd: 'close' }).catch(() => undefined)));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
