// DualPipe / DualPipeV training step on worker-thread ranks vs the single-process micro-batch loop,
// with the simulated bubble for reference. Options: --pp N (default 4), --chunks N (2·PP), --hidden N
// (256), --seq N (4), --mb N (3), --reps N (3), --trace FILE (Chrome trace of the last DualPipe step).
// ratio = speed-up over the single-process loop (which uses 1 thread); with 2 cores the ceiling is ~2.
import { Tensor } from '../src/tensor/autograd/index.ts';
import { DualPipeRuntime } from '../src/parallel/dualpipe/runtime.ts';
import { referenceStep } from '../src/parallel/dualpipe/reference.ts';
import { MlpStage, mseCriterion } from '../src/parallel/dualpipe/stage.ts';
import { randomMlpProblem } from '../src/parallel/dualpipe/problem.ts';
import { mergeTraces } from '../src/parallel/trace/chrome-trace.ts';
import { median, timeRuns, timeRunsAsync, type BenchReport, type BenchRow } from './lib/report.ts';
import { writeFileSync } from 'node:fs';

function opt(args: string[], name: string, def: number): number {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = Number(args[i + 1]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer`);
  return v;
}

export default async function dualpipeBench(args: string[]): Promise<BenchReport> {
  const pp = opt(args, 'pp', 4);
  const chunks = opt(args, 'chunks', 2 * pp);
  const hidden = opt(args, 'hidden', 256);
  const seq = opt(args, 'seq', 4);
  const mb = opt(args, 'mb', 3);
  const reps = opt(args, 'reps', 3);
  const ti = args.indexOf('--trace');
  const traceFile = ti >= 0 ? args[ti + 1] : undefined;
  const ffn = 4 * hidden;
  const { weights, x, labels } = randomMlpProblem({ stages: pp, chunks, microBatch: mb, seq, hidden, seed: 1 });

  const stages = weights.map((w) => new MlpStage(new Tensor(w.w1, [ffn, hidden], true), new Tensor(w.w2, [hidden, ffn], true)));
  const refTimes = timeRuns(() => {
    for (const s of stages) for (const p of s.parameters()) p.grad = null;
    referenceStep(stages, x, labels, chunks, [mb, seq, hidden], mseCriterion);
  }, reps);
  const ref = median(refTimes);
  const rows: BenchRow[] = [{ case: `loop PP${pp} ${chunks} chunks`, threads: 1, metric: 'step time', value: ref, unit: 's', ratio: null }];
  for (const kind of ['dualpipe', 'dualpipev'] as const) {
    const rt = await DualPipeRuntime.create({ kind, numStages: pp, numChunks: chunks, microBatch: mb, seqLen: seq, hidden, trace: Boolean(traceFile) && kind === 'dualpipe' }, weights);
    try {
      const t = median(await timeRunsAsync(async () => { await rt.zeroGrad(); await rt.step(x, labels); }, reps));
      rows.push({ case: `${kind} PP${pp} ${chunks} chunks`, threads: rt.shape.numRanks, metric: 'step time', value: t, unit: 's', ratio: ref / t });
      if (traceFile && kind === 'dualpipe') writeFileSync(traceFile, JSON.stringify(mergeTraces([rt.traceEvents()], { bench: 'dualpipe', pp, chunks, hidden, seq, mb })));
    } finally {
      await rt.close();
    }
  }
  return {
    bench: 'dualpipe',
    baseline: { loop_step_s: ref, pp, chunks, hidden, seq, micro_batch: mb },
    rows,
    notes: ['ratio = single-process loop time / pipeline time (worker threads share the machine\'s cores)'],
  };
}
