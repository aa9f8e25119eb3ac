// `seekd dualpipe`: schedule explorer. Simulates DualPipe / DualPipeV (and 1F1B, ZB1P for comparison)
// with given F, B, W and F&B costs, prints the bubble measured on each simulated timeline next to its
// closed form, and optionally draws the timeline as SVG.
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from '../errors.ts';
import { simulate, closedFormBubble, type Costs, type SimKind, type Timeline } from '../../parallel/dualpipe/simulate.ts';
import { renderSvg } from '../../parallel/dualpipe/svg.ts';
import { PipelineConfigError } from '../../parallel/dualpipe/errors.ts';
import { DualPipeRuntime } from '../../parallel/dualpipe/runtime.ts';
import { referenceStep } from '../../parallel/dualpipe/reference.ts';
import { MlpStage, mseCriterion } from '../../parallel/dualpipe/stage.ts';
import { randomMlpProblem } from '../../parallel/dualpipe/problem.ts';
import { timelineFromTrace } from '../../parallel/dualpipe/measured.ts';
import { mergeTraces } from '../../parallel/trace/chrome-trace.ts';
import { Tensor } from '../../tensor/autograd/index.ts';

function num(name: string, v: string, opts: { int?: boolean; min?: number } = {}): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || (opts.int && !Number.isInteger(n)) || n < (opts.min ?? 0)) {
    throw new UsageError(`--${name} must be ${opts.int ? 'an integer' : 'a number'} ≥ ${opts.min ?? 0}, got '${v}'`);
  }
  return n;
}

const NAMES: Record<SimKind, string> = { '1f1b': '1F1B', zb1p: 'ZB1P', dualpipe: 'DualPipe', dualpipev: 'DualPipeV' };
const FORMULAS: Record<SimKind, string> = {
  '1f1b': '(PP−1)(F+B)',
  zb1p: '(PP−1)(F+B−2W)',
  dualpipe: '(PP/2−1)(F&B+B−3W)',
  dualpipev: '(PP/2−1)(F&B+B−3W)',
};

export interface BubbleRow {
  schedule: SimKind;
  stages: number;
  ranks: number;
  makespan: number;
  /** Largest per-rank idle time (makespan − busy). */
  bubble: number;
  perRank: number[];
  closedForm: number;
  formula: string;
}

export function bubbleRow(t: Timeline): BubbleRow {
  return {
    schedule: t.kind, stages: t.numStages, ranks: t.numRanks, makespan: t.makespan,
    bubble: Math.max(...t.bubbles), perRank: t.bubbles, closedForm: closedFormBubble(t.kind, t.numStages, t.costs), formula: FORMULAS[t.kind],
  };
}

const fmt = (v: number) => String(+v.toFixed(6));

export function register(program: Command): void {
  program
    .command('dualpipe')
    .description('simulate DualPipe / DualPipeV schedules (with 1F1B and ZB1P for comparison): bubbles and an SVG timeline')
    .option('--pp <n>', 'pipeline stages (PP); DualPipe uses PP ranks, DualPipeV PP/2', '8')
    .option('--chunks <n>', 'micro-batches per step', '20')
    .option('--v', 'draw DualPipeV instead of DualPipe')
    .option('--all', 'draw all four schedules (1F1B, ZB1P, DualPipe, DualPipeV) in the SVG')
    .option('--svg <file>', 'write the timeline as SVG')
    .option('--f <t>', 'cost of a forward chunk F', '1')
    .option('--b <t>', 'cost of a full backward chunk B (input + weight gradients)', '2')
    .option('--w <t>', 'cost of the weight-gradient part W of a backward', '1')
    .option('--fb <t>', 'cost of an overlapped forward+backward block F&B (default F+B: no overlap gain)')
    .option('--comm <t>', 'point-to-point latency (the closed forms assume 0)', '0')
    .option('--json', 'print the measurements as JSON')
    .option('--run', 'train one real step on worker-thread ranks (Linear-GELU-Linear stages, MSE) instead of simulating')
    .option('--hidden <n>', 'with --run: hidden size of the stages', '64')
    .option('--seq <n>', 'with --run: tokens per sequence', '4')
    .option('--mb <n>', 'with --run: micro-batch size', '3')
    .option('--trace <file>', 'with --run: write the per-rank Chrome trace (F/B/W compute, p2p waits)')
    .action(async (opts: { pp: string; chunks: string; v?: boolean; all?: boolean; svg?: string; f: string; b: string; w: string; fb?: string; comm: string; json?: boolean; run?: boolean; hidden: string; seq: string; mb: string; trace?: string }) => {
      if (opts.run) return runReal(opts);
      if (opts.trace) throw new UsageError('--trace records a real run: add --run');
      const pp = num('pp', opts.pp, { int: true, min: 2 });
      const chunks = num('chunks', opts.chunks, { int: true, min: 1 });
      const F = num('f', opts.f);
      const B = num('b', opts.b);
      const W = num('w', opts.w);
      const FB = opts.fb === undefined ? F + B : num('fb', opts.fb);
      const comm = num('comm', opts.comm);
      if (W > B) throw new UsageError(`--w (${W}) cannot exceed --b (${B}): W is part of the full backward`);
      const costs: Costs = { F, B, W, FB, comm };
      let timelines: Timeline[];
      try {
        timelines = (['1f1b', 'zb1p', 'dualpipe', 'dualpipev'] as SimKind[]).map((k) => simulate(k, pp, chunks, costs));
      } catch (e) {
        if (e instanceof PipelineConfigError) throw new UsageError(e.message);
        throw e;
      }
      const rows = timelines.map(bubbleRow);
      if (opts.svg) {
        const drawn = opts.all ? timelines : timelines.filter((t) => t.kind === (opts.v ? 'dualpipev' : 'dualpipe'));
        const captions = drawn.map((t) => {
          const r = bubbleRow(t);
          return [`bubble measured (max over ranks of makespan − busy): ${fmt(r.bubble)}; closed form ${r.formula} = ${fmt(r.closedForm)}; per rank: ${r.perRank.map(fmt).join(', ')}`];
        });
        writeFileSync(opts.svg, renderSvg(drawn, { captions }));
      }
      if (opts.json) {
        process.stdout.write(JSON.stringify({ pp, chunks, costs, schedules: rows }) + '\n');
        return;
      }
      const lines = [`PP ${pp}, ${chunks} micro-batches, F=${fmt(F)} B=${fmt(B)} W=${fmt(W)} F&B=${fmt(FB)}${comm ? ` comm=${fmt(comm)}` : ''}`, ''];
      lines.push(`${'schedule'.padEnd(10)} ${'ranks'.padStart(5)} ${'makespan'.padStart(9)} ${'bubble'.padStart(8)} ${'closed form'.padStart(12)}  formula`);
      for (const r of rows) {
        lines.push(`${NAMES[r.schedule].padEnd(10)} ${String(r.ranks).padStart(5)} ${fmt(r.makespan).padStart(9)} ${fmt(r.bubble).padStart(8)} ${fmt(r.closedForm).padStart(12)}  ${r.formula}`);
      }
      lines.push('', 'bubble = largest per-rank idle time (makespan − busy) on the simulated timeline');
      if (opts.svg) lines.push(`timeline written to ${opts.svg}`);
      process.stdout.write(lines.join('\n') + '\n');
    });
}

/** `--run`: one training step of DualPipe(V) on worker threads, checked against the single-process loop. */
async function runReal(opts: { pp: string; chunks: string; v?: boolean; svg?: string; json?: boolean; hidden: string; seq: string; mb: string; trace?: string }): Promise<void> {
  const pp = num('pp', opts.pp, { int: true, min: 2 });
  const chunks = num('chunks', opts.chunks, { int: true, min: 1 });
  const hidden = num('hidden', opts.hidden, { int: true, min: 1 });
  const seq = num('seq', opts.seq, { int: true, min: 1 });
  const mb = num('mb', opts.mb, { int: true, min: 1 });
  const kind = opts.v ? 'dualpipev' : 'dualpipe';
  const ffn = 4 * hidden;
  const { weights, x, labels } = randomMlpProblem({ stages: pp, chunks, microBatch: mb, seq, hidden, seed: 233 });
  let rt: DualPipeRuntime;
  try {
    rt = await DualPipeRuntime.create({ kind, numStages: pp, numChunks: chunks, microBatch: mb, seqLen: seq, hidden, trace: true }, weights);
  } catch (e) {
    if (e instanceof PipelineConfigError) throw new UsageError(e.message);
    throw e;
  }
  let losses: number[];
  let events;
  try {
    await rt.step(x, labels); // warm-up (JIT, worker start-up)
    await rt.zeroGrad();
    losses = (await rt.step(x, labels)).losses;
    events = rt.traceEvents();
  } finally {
    await rt.close();
  }
  const stages = weights.map((w) => new MlpStage(new Tensor(w.w1, [ffn, hidden], true), new Tensor(w.w2, [hidden, ffn], true)));
  const ref = referenceStep(stages, x, labels, chunks, [mb, seq, hidden], mseCriterion);
  const identical = losses.every((l, i) => Object.is(l, ref.losses[i]));
  const t = timelineFromTrace(events, kind, pp, chunks);
  if (opts.trace) writeFileSync(opts.trace, JSON.stringify(mergeTraces([events], { command: 'dualpipe --run', kind, pp, chunks, hidden, seq, mb })));
  if (opts.svg) {
    writeFileSync(opts.svg, renderSvg([t], { p2p: false, captions: [[`measured on worker threads (ms); mean costs F=${t.costs.F} B=${t.costs.B} W=${t.costs.W} F&B=${t.costs.FB}; idle per rank: ${t.bubbles.map((b) => b.toFixed(1)).join(', ')}`]] }));
  }
  const row = { schedule: kind, stages: pp, ranks: t.numRanks, makespanMs: t.makespan, idleMsPerRank: t.bubbles, meanCostsMs: t.costs, lossesBitIdenticalToLoop: identical };
  if (opts.json) {
    process.stdout.write(JSON.stringify(row) + '\n');
  } else {
    process.stdout.write([
      `${NAMES[kind]}: ${pp} stages on ${t.numRanks} worker-thread ranks, ${chunks} micro-batches of ${mb}×${seq}×${hidden}`,
      `step ${t.makespan.toFixed(1)} ms; idle per rank (ms): ${t.bubbles.map((b) => b.toFixed(1)).join(', ')}`,
      `mean block times (ms): F ${t.costs.F}, B ${t.costs.B}, W ${t.costs.W}, F&B ${t.costs.FB}`,
      `losses bit-identical to the single-process loop: ${identical ? 'yes' : 'NO'}`,
      ...(opts.trace ? [`trace written to ${opts.trace}`] : []),
      ...(opts.svg ? [`timeline written to ${opts.svg}`] : []),
    ].join('\n') + '\n');
  }
  if (!identical) process.exitCode = 1;
}
