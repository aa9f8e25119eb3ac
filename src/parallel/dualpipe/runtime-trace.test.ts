// The DualPipe runtime's Chrome trace: one process per rank, compute and communication tracks, one
// span per F / B / W / F&B block of the schedule. Small stages (hidden 16) keep this fast.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DualPipeRuntime } from './runtime.ts';
import { rankSchedule, countOps } from './schedule.ts';
import { validateChromeTrace } from '../trace/validate.ts';

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
