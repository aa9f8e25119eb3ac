// Worker-thread body of one pipeline rank: builds its two stages from shared weights, wires the
// MessagePorts to its neighbours and runs RankExecutor steps on request from the main thread.
// Started through spawnWorker (src/platform/worker.ts) by runtime.ts; protocol in RankRequest/RankReply.
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { Tensor, WeightGradStore, type FloatArray, type FloatArrayCtor, type GeluApproximate } from '../../tensor/autograd/index.ts';
import { ChromeTraceRecorder } from '../trace/chrome-trace.ts';
import { PortP2P } from './comm.ts';
import { RankExecutor } from './executor.ts';
import { MlpStage, mseCriterion } from './stage.ts';
import type { ScheduleShape } from './schedule.ts';

export interface RankWorkerData {
  rank: number;
  shape: ScheduleShape;
  p2pShape: number[];
  dtype: 'f64' | 'f32';
  hidden: number;
  ffn: number;
  approximate: GeluApproximate;
  overlapped: boolean;
  trace: boolean;
  /** Weights of module 0 and module 1: w1 [ffn, hidden], w2 [hidden, ffn], on SharedArrayBuffers. */
  params: [{ w1: SharedArrayBuffer; w2: SharedArrayBuffer }, { w1: SharedArrayBuffer; w2: SharedArrayBuffer }];
  ports: Record<string, MessagePort>;
}

export type RankRequest =
  | { id: number; cmd: 'step'; forwardOnly: boolean; returnOutputs: boolean; x: SharedArrayBuffer | null; labels: SharedArrayBuffer | null; inputMbs: number[]; labelMbs: number[] }
  | { id: number; cmd: 'grads' }
  | { id: number; cmd: 'zeroGrad' }
  | { id: number; cmd: 'close' };

export type RankReply =
  | { id: number; ok: true; losses?: number[] | null; outputs?: FloatArray[] | null; grads?: FloatArray[][]; trace?: unknown[] }
  | { id: number; ok: false; error: string };

const d = (workerData as { data: RankWorkerData }).data;
const ctor: FloatArrayCtor = d.dtype === 'f32' ? Float32Array : Float64Array;
const store = new WeightGradStore();
// Typed-array constructors accept SharedArrayBuffers at run time; the lib typings only list ArrayBuffer.
const view = (sab: SharedArrayBuffer, offset = 0, length?: number): FloatArray => new ctor(sab as unknown as ArrayBuffer, offset, length);
const mk = (sab: SharedArrayBuffer, shape: number[]) => new Tensor(view(sab), shape, true);
const modules: [MlpStage, MlpStage] = [0, 1].map((m) => new MlpStage(
  mk(d.params[m]!.w1, [d.ffn, d.hidden]), mk(d.params[m]!.w2, [d.hidden, d.ffn]), store, d.approximate,
)) as [MlpStage, MlpStage];
const ports = new Map<number, MessagePort>(Object.entries(d.ports).map(([k, v]) => [Number(k), v]));
const p2p = new PortP2P(d.rank, ports);
const recorder = d.trace ? new ChromeTraceRecorder({ pid: d.rank, processName: `rank ${d.rank}` }) : null;
const executor = new RankExecutor({
  shape: d.shape, rank: d.rank, modules, store, p2p, ctor, p2pShape: d.p2pShape, criterion: mseCriterion,
  overlapped: d.overlapped ? MlpStage.overlappedForwardBackward : null,
  tracer: recorder ? { compute: recorder.onTrack('compute'), comm: recorder.onTrack('communication') } : null,
});
const mbSize = d.p2pShape.reduce((a, b) => a * b, 1);
const microBatches = (sab: SharedArrayBuffer, mbs: number[]) => mbs.map((i) => new Tensor(view(sab, i * mbSize * ctor.BYTES_PER_ELEMENT, mbSize), d.p2pShape));

async function handle(req: RankRequest): Promise<RankReply> {
  switch (req.cmd) {
    case 'step': {
      const r = await executor.step({
        inputs: req.x ? microBatches(req.x, req.inputMbs) : undefined,
        labels: req.labels ? microBatches(req.labels, req.labelMbs) : undefined,
        forwardOnly: req.forwardOnly,
        returnOutputs: req.returnOutputs,
      });
      return { id: req.id, ok: true, losses: r.losses, outputs: r.outputs, trace: recorder?.getEvents() };
    }
    case 'grads':
      return { id: req.id, ok: true, grads: modules.map((m) => m.parameters().map((p) => p.grad ?? new ctor(p.size))) };
    case 'zeroGrad':
      for (const m of modules) for (const p of m.parameters()) p.grad = null;
      return { id: req.id, ok: true };
    case 'close':
      p2p.close();
      return { id: req.id, ok: true };
  }
}

parentPort!.on('message', (req: RankRequest) => {
  handle(req).then(
    (reply) => {
      parentPort!.postMessage(reply);
      if (req.cmd === 'close') parentPort!.close();
    },
    (e: unknown) => parentPort!.postMessage({ id: req.id, ok: false, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) } satisfies RankReply),
  );
});
