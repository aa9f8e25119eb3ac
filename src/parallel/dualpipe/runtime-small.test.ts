// Small-stage runtime checks (hidden 16 keeps them fast): the Chrome trace (one process per rank,
// compute and communication tracks, one span per F / B / W / F&B block) and Float32Array stages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DualPipeRuntime } from './runtime.ts';
import { rankSchedule, countOps } from './schedule.ts';
import { validateChromeTrace } from '../trace/validate.ts';
import { Tensor } from '../../tensor/autograd/index.ts';
import { referenceStep } from './reference.ts';
import { MlpStage, mseCriterion } from './stage.ts';

test('DualPipe runtime trace: per-rank F/B/W spans and p2p waits, valid Chrome trace', async () => {
  const pp = 4;
  const chunks = 8;
  const hidden = 16;
  const ffn = 64;
  const mk = (n: number, seed: number) => Float64Array.from({ length: n }, (_, i) => Math.sin(seed * 1000 + i) * 0.2);
  const weights = Array.from({ length: pp }, (_, s) => ({ w1: mk(ffn * hidden, 2 * s), w2: mk(ffn * hidden, 2 * s + 1) }));
  const rt = await DualPipeRuntime.create({ kind: 'dualpipe', numStages: pp, numChunks: chunks, microBatch: 2, seqLen: 1, hidden, ffn, trace: true }, weights);
  try {
    const n = chunks * 2 * hidden;
    await rt.step(mk(n, 99), mk(n, 98));
    const events = rt.traceEvents();
    const s = validateChromeTrace({ traceEvents: events, displayTimeUnit: 'ms' });
    for (let r = 0; r < pp; r++) {
      assert.equal(s.processes.get(r), `rank ${r}`);
      const tracks = [...s.threads].filter(([k]) => k.startsWith(`${r}/`)).map(([, v]) => v).sort();
      assert.deepEqual(tracks, ['communication', 'compute']);
      const want = countOps(rankSchedule({ kind: 'dualpipe', numRanks: pp, numChunks: chunks }, r));
      const mine = events.filter((e) => e.pid === r && e.ph === 'X');
      const count = (re: RegExp) => mine.filter((e) => re.test(e.name)).length;
      assert.equal(count(/^F[01]$/), want.F, `rank ${r} F`);
      assert.equal(count(/^B[01]( \(zb\))?$/), want.B, `rank ${r} B`);
      assert.equal(count(/ \(zb\)$/), want.zbB, `rank ${r} zero-bubble B`);
      assert.equal(count(/^W$/), want.W, `rank ${r} W`);
      assert.equal(count(/^F[01]&B[01]$/), want.FB, `rank ${r} F&B`);
      assert.ok(count(/^p2p wait$/) > 0, `rank ${r} communication spans`);
    }
  } finally {
    await rt.close();
  }
});

test('Float32Array stages: DualPipe losses and outputs bit-identical to the float32 loop, gradients close', async () => {
  const pp = 4;
  const chunks = 8;
  const hidden = 16;
  const ffn = 64;
  const mk = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 977 + i * 1.3) * 0.3);
  const weights = Array.from({ length: pp }, (_, s) => ({ w1: mk(ffn * hidden, 2 * s), w2: mk(ffn * hidden, 2 * s + 1) }));
  const n = chunks * 2 * hidden;
  const x = mk(n, 50);
  const labels = mk(n, 51);
  const stages = weights.map((w) => new MlpStage(new Tensor(w.w1, [ffn, hidden], true), new Tensor(w.w2, [hidden, ffn], true)));
  const ref = referenceStep(stages, x, labels, chunks, [2, 1, hidden], mseCriterion);
  const rt = await DualPipeRuntime.create({ kind: 'dualpipe', numStages: pp, numChunks: chunks, microBatch: 2, seqLen: 1, hidden, ffn, dtype: 'f32' }, weights);
  try {
    const r = await rt.step(x, labels);
    r.losses.forEach((l, i) => assert.ok(Object.is(l, ref.losses[i]), `loss ${i}: ${l} vs ${ref.losses[i]}`));
    const grads = await rt.gradients();
    grads.forEach((g, s) => {
      const want = stages[s]!.parameters().map((p) => p.grad!);
      assert.ok(g.w1 instanceof Float32Array);
      for (const [k, got] of [g.w1, g.w2].entries()) {
        let dot = 0, nn = 0;
        for (let i = 0; i < got.length; i++) { dot += got[i]! * want[k]![i]!; nn += got[i]! ** 2 + want[k]![i]! ** 2; }
        assert.ok(1 - (2 * dot) / nn < 1e-10, `stage ${s} grad ${k}`);
      }
    });
    await rt.zeroGrad();
    const inf = await rt.step(x, labels, { forwardOnly: true, returnOutputs: true });
    inf.outputs!.forEach((o, i) => assert.deepEqual(o, ref.outputs[i]));
  } finally {
    await rt.close();
  }
});
