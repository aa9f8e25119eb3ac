// DualPipe / DualPipeV training runtime: one worker thread per rank, stages exchanging activations and
// gradients point to point over MessagePorts, deferred weight gradients, the overlapped F&B hook.
// Reference: https://github.com/deepseek-ai/DualPipe (dualpipe/dualpipe.py, dualpipe/dualpipev.py,
// examples/example_dualpipe.py), commit 3da1bbe.
//
// Data layout: the step's inputs and labels are [numChunks·microBatch, seq, hidden] row-major; micro-batch
// i is rows i·microBatch..(i+1)·microBatch. DualPipe gives rank 0 the first half of the micro-batches (its
// module 0, forward direction) with the labels of the second half, and rank PP−1 the second half with the
// labels of the first half; losses come back on the opposite end. DualPipeV gives everything to rank 0.
import { MessageChannel, type Worker, type MessagePort } from 'node:worker_threads';
import { spawnWorker } from '../../platform/worker.ts';
import type { FloatArray, GeluApproximate } from '../../tensor/autograd/index.ts';
import type { TraceEvent } from '../trace/chrome-trace.ts';
import { PipelineConfigError, PipelineRankError } from './errors.ts';
import { checkSchedule, stageOf, type Mod, type PipeKind, type ScheduleShape } from './schedule.ts';
import type { RankReply, RankRequest, RankWorkerData } from './rank-worker.ts';

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export interface DualPipeConfig {
  kind: PipeKind;
  /** Pipeline stages (PP). DualPipe runs them on PP ranks (each holding two mirror copies), DualPipeV on PP/2. */
  numStages: number;
  numChunks: number;
  microBatch: number;
  seqLen: number;
  hidden: number;
  /** Inner width of the Linear-GELU-Linear stage; 4·hidden by default. */
  ffn?: number;
  dtype?: 'f64' | 'f32';
  approximate?: GeluApproximate;
  /** Use the stage's overlapped forward-backward hook for F&B blocks (default true). */
  overlapped?: boolean;
  /** Record per-rank Chrome-trace spans (F/B/W compute, p2p waits). */
  trace?: boolean;
}

export interface StageWeights {
  /** [ffn, hidden] */
  w1: FloatArray;
  /** [hidden, ffn] */
  w2: FloatArray;
}

export interface PipelineStepResult {
  /** Loss of each micro-batch, in micro-batch order. */
  losses: number[];
  /** Output of each micro-batch's last stage, when requested. */
  outputs: FloatArray[] | null;
}

/** Ranks used for a configuration. */
export function ranksFor(cfg: Pick<DualPipeConfig, 'kind' | 'numStages'>): number {
  return cfg.kind === 'dualpipe' ? cfg.numStages : cfg.numStages / 2;
}

export function scheduleShapeOf(cfg: DualPipeConfig): ScheduleShape {
  if (!Number.isInteger(cfg.numStages) || cfg.numStages < 2 || cfg.numStages % 2 !== 0) {
    throw new PipelineConfigError(`${cfg.kind === 'dualpipe' ? 'DualPipe' : 'DualPipeV'} needs an even number of pipeline stages (PP ≥ 2), got ${cfg.numStages}`, 'numStages', cfg.numStages);
  }
  const shape: ScheduleShape = { kind: cfg.kind, numRanks: ranksFor(cfg), numChunks: cfg.numChunks };
  checkSchedule(shape);
  return shape;
}

function toShared(a: FloatArray): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(a.byteLength);
  new (a.constructor as Float64ArrayConstructor)(sab).set(a);
  return sab;
}

export class DualPipeRuntime {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: RankReply) => void; reject: (e: Error) => void; rank: number }>();
  private failed: Error | null = null;
  private traceParts: TraceEvent[][] = [];

  private constructor(
    readonly cfg: Required<DualPipeConfig>,
    readonly shape: ScheduleShape,
    private readonly workers: Worker[],
  ) {
    workers.forEach((w, rank) => {
      w.on('message', (r: RankReply) => {
        const p = this.pending.get(r.id);
        if (!p) return;
        this.pending.delete(r.id);
        if (r.ok) p.resolve(r);
        else this.fail(new PipelineRankError(r.error, rank));
      });
      w.on('error', (e) => this.fail(new PipelineRankError(e.message, rank)));
      w.on('exit', (code) => { if (code !== 0) this.fail(new PipelineRankError(`worker exited with code ${code}`, rank)); });
    });
  }

  /** Validates the configuration, starts one worker per rank and hands each its two stages' weights. */
  static async create(config: DualPipeConfig, stages: StageWeights[]): Promise<DualPipeRuntime> {
    const cfg: Required<DualPipeConfig> = { ffn: 4 * config.hidden, dtype: 'f64', approximate: 'none', overlapped: true, trace: false, ...config };
    const shape = scheduleShapeOf(cfg);
    if (stages.length !== cfg.numStages) throw new PipelineConfigError(`${stages.length} stage weights for ${cfg.numStages} stages`, 'numStages', stages.length);
    const ctor = cfg.dtype === 'f32' ? Float32Array : Float64Array;
    for (const s of stages) {
      if (!(s.w1 instanceof ctor) || !(s.w2 instanceof ctor) || s.w1.length !== cfg.ffn * cfg.hidden || s.w2.length !== cfg.ffn * cfg.hidden) {
        throw new PipelineConfigError(`stage weights must be ${ctor.name}s of ${cfg.ffn}×${cfg.hidden}`, 'hidden', cfg.hidden);
      }
    }
    const shared = stages.map((s) => ({ w1: toShared(s.w1), w2: toShared(s.w2) }));
    const n = shape.numRanks;
    // Channels between neighbours r and r+1.
    const ports: Array<Record<string, MessagePort>> = Array.from({ length: n }, () => ({}));
    for (let r = 0; r + 1 < n; r++) {
      const ch = new MessageChannel();
      ports[r]![String(r + 1)] = ch.port1;
      ports[r + 1]![String(r)] = ch.port2;
    }
    const workers: Worker[] = [];
    for (let rank = 0; rank < n; rank++) {
      const data: RankWorkerData = {
        rank, shape, p2pShape: [cfg.microBatch, cfg.seqLen, cfg.hidden], dtype: cfg.dtype, hidden: cfg.hidden, ffn: cfg.ffn,
        approximate: cfg.approximate, overlapped: cfg.overlapped, trace: cfg.trace,
        params: [0, 1].map((m) => shared[stageOf(shape, rank, m as Mod)]!) as RankWorkerData['params'],
        ports: ports[rank]!,
      };
      workers.push(spawnWorker(new URL('./rank-worker.ts', import.meta.url), data, { transferList: Object.values(ports[rank]!) }));
    }
    return new DualPipeRuntime(cfg, shape, workers);
  }

  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    for (const w of this.workers) void w.terminate();
  }

  private request(rank: number, req: DistributiveOmit<RankRequest, 'id'>): Promise<RankReply & { ok: true }> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: RankReply) => void, reject, rank });
      this.workers[rank]!.postMessage({ ...req, id });
    });
  }

  /** Micro-batches whose inputs / labels a rank holds (empty for middle ranks). */
  private assignment(rank: number): { inputMbs: number[]; labelMbs: number[] } {
    const { numChunks } = this.cfg;
    const n = this.shape.numRanks;
    const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
    const half = numChunks / 2;
    if (this.shape.kind === 'dualpipev') return rank === 0 ? { inputMbs: range(0, numChunks), labelMbs: range(0, numChunks) } : { inputMbs: [], labelMbs: [] };
    if (rank === 0) return { inputMbs: range(0, half), labelMbs: range(half, numChunks) };
    if (rank === n - 1) return { inputMbs: range(half, numChunks), labelMbs: range(0, half) };
    return { inputMbs: [], labelMbs: [] };
  }

  /**
   * One training step (or, with forwardOnly, an inference step) over all micro-batches.
   * x and labels: [numChunks·microBatch, seq, hidden] of the runtime's dtype.
   */
  async step(x: FloatArray, labels: FloatArray, opts: { forwardOnly?: boolean; returnOutputs?: boolean } = {}): Promise<PipelineStepResult> {
    const { numChunks, microBatch, seqLen, hidden } = this.cfg;
    const total = numChunks * microBatch * seqLen * hidden;
    if (x.length !== total || labels.length !== total) throw new PipelineConfigError(`inputs and labels need ${total} elements ([${numChunks}·${microBatch}, ${seqLen}, ${hidden}])`, 'numChunks', numChunks);
    const xs = toShared(x);
    const ls = toShared(labels);
    const replies = await Promise.all(this.workers.map((_, rank) => {
      const a = this.assignment(rank);
      return this.request(rank, {
        cmd: 'step', forwardOnly: opts.forwardOnly ?? false, returnOutputs: opts.returnOutputs ?? false,
        x: a.inputMbs.length ? xs : null, labels: a.labelMbs.length ? ls : null, inputMbs: a.inputMbs, labelMbs: a.labelMbs,
      });
    }));
    const losses = new Array<number>(numChunks).fill(NaN);
    const outputs: FloatArray[] | null = opts.returnOutputs ? new Array<FloatArray>(numChunks) : null;
    replies.forEach((r, rank) => {
      const { labelMbs } = this.assignment(rank);
      r.losses?.forEach((l, i) => { losses[labelMbs[i]!] = l; });
      r.outputs?.forEach((o, i) => { outputs![labelMbs[i]!] = o; });
    });
    this.traceParts = replies.map((r) => (r.trace ?? []) as TraceEvent[]);
    return { losses, outputs };
  }

  /** Gradients per pipeline stage, mirror copies summed (DualPipe) — [stage] {w1, w2}. */
  async gradients(): Promise<StageWeights[]> {
    const replies = await Promise.all(this.workers.map((_, rank) => this.request(rank, { cmd: 'grads' })));
    const out: Array<StageWeights | null> = new Array(this.cfg.numStages).fill(null);
    replies.forEach((r, rank) => {
      for (const m of [0, 1] as Mod[]) {
        const s = stageOf(this.shape, rank, m);
        const [g1, g2] = r.grads![m]!;
        const prev = out[s];
        if (!prev) out[s] = { w1: g1!, w2: g2! };
        else {
          for (let i = 0; i < g1!.length; i++) prev.w1[i]! += g1![i]!;
          for (let i = 0; i < g2!.length; i++) prev.w2[i]! += g2![i]!;
        }
      }
    });
    return out as StageWeights[];
  }

  async zeroGrad(): Promise<void> {
    await Promise.all(this.workers.map((_, rank) => this.request(rank, { cmd: 'zeroGrad' })));
  }

  /** Chrome-trace events of the last step (all ranks), when created with trace: true. */
  traceEvents(): TraceEvent[] {
    return this.traceParts.flat();
  }

  async close(): Promise<void> {
    if (!this.failed) await Promise.all(this.workers.map((_, rank) => this.request(rank, { cmd: 'close' }).catch(() => undefined)));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
