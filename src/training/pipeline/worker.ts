// Worker-thread body of one training pipeline rank: rebuilds the parameter tree over the shared
// parameter buffers (the main thread's optimizer updates them in place between steps), holds its
// stage modules (two for DualPipe / DualPipeV, one for 1F1B) and runs one step per request through the
// DualPipe executor or the 1F1B loop, then reports per-chunk gradients, stats and compute spans.
// Started by ./runtime.ts through spawnWorker; protocol: TrainRankRequest / TrainRankReply.
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { loadBackend } from '../../kernels/index.ts';
import { parseConfig } from '../../model/config.ts';
import { Tensor, WeightGradStore } from '../../tensor/autograd/index.ts';
import { PortP2P } from '../../parallel/dualpipe/comm.ts';
import { RankExecutor } from '../../parallel/dualpipe/executor.ts';
import { isFirstStage, isLastStage, stageOf, type Mod } from '../../parallel/dualpipe/schedule.ts';
import type { Tracer } from '../../platform/tracer.ts';
import { ChromeTraceRecorder, type TraceEvent } from '../../parallel/trace/chrome-trace.ts';
import { WasmDeepGemm } from '../../kernels/deepgemm/index.ts';
import { Fp8Gemm } from '../fp8.ts';
import { Gemm } from '../gemm.ts';
import { trainableTensors, type TrainParams } from '../params.ts';
import { oneFOneBStep } from './onefoneb.ts';
import { TrainStage, windowsTensor, type ChunkGrads, type ChunkStats, type StageSpec } from './stage.ts';
import type { TrainRankData, TrainRankReply, TrainRankRequest } from './runtime.ts';

const d = (workerData as { data: TrainRankData }).data;
const config = parseConfig(d.configJson);
const kernels = await loadBackend('wasm', { threads: 1 });
const gemm = new Gemm(kernels);
const deepGemm = d.fp8 ? await WasmDeepGemm.create(1) : null;
const fp8 = deepGemm ? new Fp8Gemm(deepGemm) : null;

// The parameter tree over the shared buffers (tied tensors: one Tensor under two paths).
const tensors = d.tensors.map((t) => new Tensor(new Float32Array(t.buffer as unknown as ArrayBuffer), t.shape, t.requiresGrad));
const root: Record<string | number, unknown> = {};
for (const { path, index } of d.paths) {
  let o = root;
  for (let i = 0; i < path.length - 1; i++) {
    const p = path[i]!;
    o[p] ??= typeof path[i + 1] === 'number' ? [] : {};
    o = o[p] as Record<string | number, unknown>;
  }
  o[path[path.length - 1]!] = tensors[index];
}
const params = root as unknown as TrainParams;
params.layers ??= [];
params.mtp ??= [];
const trainable = trainableTensors(config, params);
const store = new WeightGradStore();
const C = d.chunks;
const oneF = d.kind === '1f1b';
const shape = oneF ? null : { kind: d.kind as 'dualpipe' | 'dualpipev', numRanks: d.numRanks, numChunks: C };
const mods: Mod[] = oneF ? [0] : [0, 1];
const specOf = (m: Mod): StageSpec => d.stages[oneF ? d.rank : stageOf(shape!, d.rank, m)]!;
const mbOf = (m: Mod) => (k: number) => (d.kind === 'dualpipe' && m === 1 ? C / 2 + k : k);
const perModule = d.kind === 'dualpipe' ? C / 2 : C;
const stages = mods.map((m) => {
  const s = new TrainStage(config, specOf(m), params, trainable, gemm, oneF ? null : store, mbOf(m), perModule, d.lossOpts, fp8);
  s.layout = d.layout;
  return s;
});
const criterion = (out: Tensor, label: Tensor): Tensor => {
  const s = stages.find((st) => st.owns(out));
  if (!s) throw new Error('criterion: output of no stage');
  return s.criterion(out, label);
};
const ports = new Map<number, MessagePort>(Object.entries(d.ports).map(([k, v]) => [Number(k), v]));
const p2p = new PortP2P(d.rank, ports);
let recorder = new ChromeTraceRecorder({ pid: d.rank, processName: `rank ${d.rank}` });
const tracer: Tracer = { span: (name, cat, fn, args) => recorder.spanOn(cat === 'compute' ? 'compute' : 'communication', name, cat, fn, args) };
const executor = shape ? new RankExecutor({
  shape, rank: d.rank, modules: [stages[0]!, stages[1]!], store, p2p, ctor: Float32Array, p2pShape: d.p2pShape, criterion,
  overlapped: null, tracer: { compute: tracer, comm: tracer },
}) : null;

async function step(windows: Int32Array[][]): Promise<{ stats: Array<ChunkStats & { stage: number }>; grads: ChunkGrads[]; trace: TraceEvent[] }> {
  recorder = new ChromeTraceRecorder({ pid: d.rank, processName: `rank ${d.rank}` });
  for (const s of stages) s.beginStep();
  const tensorOf = (mb: number) => new Tensor(windowsTensor(windows[mb]!), [windows[mb]!.length, windows[mb]![0]!.length]);
  if (executor) {
    const first = mods.find((m) => isFirstStage(shape!, d.rank, m));
    const last = mods.find((m) => isLastStage(shape!, d.rank, m));
    const range = (m: Mod) => Array.from({ length: perModule }, (_, k) => mbOf(m)(k));
    await executor.step({
      inputs: first !== undefined ? range(first).map(tensorOf) : undefined,
      labels: last !== undefined ? range(last).map(tensorOf) : undefined,
    });
  } else {
    const all = Array.from({ length: C }, (_, mb) => tensorOf(mb));
    await oneFOneBStep({ rank: d.rank, numRanks: d.numRanks, module: stages[0]!, p2p, p2pShape: d.p2pShape, criterion, tracer },
      C, d.rank === 0 ? all : null, d.rank === d.numRanks - 1 ? all : null);
  }
  const stats: Array<ChunkStats & { stage: number }> = [];
  const grads: ChunkGrads[] = [];
  for (const s of stages) {
    const r = s.collect();
    for (const st of r.stats) stats.push({ ...st, stage: s.spec.index });
    grads.push(...r.grads);
  }
  return { stats, grads, trace: recorder.getEvents() };
}

async function handle(req: TrainRankRequest): Promise<TrainRankReply> {
  switch (req.cmd) {
    case 'step': {
      const r = await step(req.windows);
      return { id: req.id, ok: true, ...r };
    }
    case 'close':
      p2p.close();
      await kernels.dispose();
      await deepGemm?.dispose();
      return { id: req.id, ok: true };
  }
}

parentPort!.on('message', (req: TrainRankRequest) => {
  handle(req).then(
    (reply) => {
      const transfer = new Set<ArrayBuffer>();
      for (const g of reply.ok ? reply.grads ?? [] : []) for (const [, a] of g.grads) if (a.buffer instanceof ArrayBuffer) transfer.add(a.buffer);
      parentPort!.postMessage(reply, [...transfer]);
      if (req.cmd === 'close') parentPort!.close();
    },
    (e: unknown) => parentPort!.postMessage({ id: req.id, ok: false, error: e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ''}` : String(e) } satisfies TrainRankReply),
  );
});
parentPort!.postMessage({ id: 0, ok: true });
