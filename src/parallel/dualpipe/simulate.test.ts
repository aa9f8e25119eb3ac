import { test } from 'node:test';
import assert from 'node:assert/strict';
import { simulate, closedFormBubble, type SimKind, type Costs } from './simulate.ts';
import { renderSvg } from './svg.ts';
import { rankSchedule, countOps } from './schedule.ts';
import { PipelineConfigError } from './errors.ts';

const KINDS: SimKind[] = ['1f1b', 'zb1p', 'dualpipe', 'dualpipev'];
const maxBubble = (k: SimKind, pp: number, chunks: number, c: Costs) => Math.max(...simulate(k, pp, chunks, c).bubbles);

test('PP 8, 20 chunks: the measured bubble of each schedule equals its closed form', () => {
  const c = { F: 1, B: 2, W: 1, FB: 2.5 };
  const got = Object.fromEntries(KINDS.map((k) => [k, maxBubble(k, 8, 20, c)]));
  assert.deepEqual(got, { '1f1b': 21, zb1p: 7, dualpipe: 4.5, dualpipev: 4.5 });
  for (const k of KINDS) assert.equal(got[k], closedFormBubble(k, 8, c));
});

test('closed forms hold for other PP and costs (W = B/2, the regime of the DualPipe table)', () => {
  for (const pp of [4, 6, 8]) {
    for (const c of [{ F: 1, B: 2, W: 1, FB: 3 }, { F: 1.5, B: 3, W: 1.5, FB: 3.75 }, { F: 2, B: 4, W: 2, FB: 5.5 }]) {
      for (const k of KINDS) {
        const m = maxBubble(k, pp, 2 * pp + 4, c);
        assert.ok(Math.abs(m - closedFormBubble(k, pp, c)) < 1e-9, `${k} PP${pp} ${JSON.stringify(c)}: ${m}`);
      }
    }
  }
  // 1F1B and ZB1P match their closed forms for any W.
  for (const c of [{ F: 1.3, B: 2.1, W: 0.7, FB: 3 }, { F: 1, B: 2, W: 0.25, FB: 2 }]) {
    for (const k of ['1f1b', 'zb1p'] as const) assert.ok(Math.abs(maxBubble(k, 8, 20, c) - closedFormBubble(k, 8, c)) < 1e-9, k);
  }
});

test('simulated timelines respect dependencies and do all the work', () => {
  for (const kind of KINDS) {
    for (const pp of [2, 4, 8]) {
      const chunks = 2 * pp + 2;
      const t = simulate(kind, pp, chunks, { F: 1, B: 2, W: 0.5, FB: 2.5, comm: 0.1 });
      // No overlap within a rank.
      for (let r = 0; r < t.numRanks; r++) {
        const bs = t.blocks.filter((b) => b.rank === r).sort((a, b) => a.start - b.start);
        for (let i = 1; i < bs.length; i++) assert.ok(bs[i]!.start >= bs[i - 1]!.end - 1e-12, `${kind} rank ${r} overlap`);
      }
      // Data dependencies: micro-batch c's forward on stage s starts after its forward on stage s−1 ended
      // (+ latency when on another rank); its backward on s after the backward on s+1 (or, on the last
      // stage, after its own forward). An F&B block needs both inputs at its start.
      const stage = (rank: number, mod: 0 | 1) => (mod === 0 ? rank : pp - 1 - rank);
      const fwd = new Map<string, { start: number; end: number; rank: number }>();
      const bwd = new Map<string, { start: number; end: number; rank: number }>();
      for (const b of t.blocks) {
        if (b.kind === 'F' || b.kind === 'FB') fwd.set(`${b.chunk}@${stage(b.rank, b.mod)}`, { start: b.start, end: b.end, rank: b.rank });
        if (b.kind === 'B') bwd.set(`${b.chunk}@${stage(b.rank, b.mod)}`, { start: b.start, end: b.end, rank: b.rank });
        if (b.kind === 'FB') bwd.set(`${b.bchunk}@${stage(b.rank, b.bmod!)}`, { start: b.start, end: b.end, rank: b.rank });
      }
      for (let c = 0; c < chunks; c++) {
        // Every micro-batch runs stages 0..PP−1 in order (DualPipe's reverse direction too: model stage s
        // is module 1 of rank PP−1−s).
        for (let s2 = 0; s2 < pp; s2++) {
          const f = fwd.get(`${c}@${s2}`)!;
          const b = bwd.get(`${c}@${s2}`)!;
          assert.ok(f && b, `${kind} PP${pp}: micro-batch ${c} stage ${s2} missing`);
          if (s2 > 0) {
            const p = fwd.get(`${c}@${s2 - 1}`)!;
            assert.ok(f.start >= p.end + (p.rank === f.rank ? 0 : 0.1) - 1e-9, `${kind} PP${pp} F ${c}@${s2}`);
          }
          const after = s2 < pp - 1 ? bwd.get(`${c}@${s2 + 1}`)! : f;
          const lat = s2 < pp - 1 && after.rank !== b.rank ? 0.1 : 0;
          assert.ok(b.start >= after.end + lat - 1e-9, `${kind} PP${pp} B ${c}@${s2}`);
        }
      }
      for (const m of t.messages) assert.ok(Math.abs(m.arrived - m.sent - 0.1) < 1e-9);
      // Work: every stage does every micro-batch's forward and backward once (per direction).
      const perStage = chunks; // every stage sees every micro-batch once
      assert.equal(t.blocks.filter((b) => b.kind === 'F' || b.kind === 'FB').length, pp * perStage, `${kind} PP${pp} forwards`);
      assert.equal(t.blocks.filter((b) => b.kind === 'B' || b.kind === 'FB').length, pp * perStage, `${kind} PP${pp} backwards`);
      const zb = t.blocks.filter((b) => b.kind === 'B' && b.zb).length;
      assert.equal(t.blocks.filter((b) => b.kind === 'W').length, zb);
    }
  }
});

test('schedules are deadlock-free over a range of shapes; refused shapes throw PipelineConfigError', () => {
  for (const pp of [2, 4, 6, 8, 10]) for (let chunks = 2 * pp; chunks <= 2 * pp + 6; chunks += 2) {
    for (const k of KINDS) simulate(k, pp, chunks, { F: 1, B: 2, W: 1, FB: 2.5 });
  }
  assert.throws(() => simulate('dualpipe', 7, 20, { F: 1, B: 2, W: 1, FB: 3 }), PipelineConfigError);
  assert.throws(() => simulate('dualpipe', 8, 14, { F: 1, B: 2, W: 1, FB: 3 }), PipelineConfigError);
  assert.throws(() => simulate('dualpipe', 8, 21, { F: 1, B: 2, W: 1, FB: 3 }), PipelineConfigError);
  assert.throws(() => simulate('dualpipev', 8, 7, { F: 1, B: 2, W: 1, FB: 3 }), PipelineConfigError);
  assert.throws(() => simulate('dualpipe', 8, 20, { F: 1, B: 2, W: 3, FB: 3 }), PipelineConfigError);
  // The DualPipe step counts of the notes (§4) for PP 8, 20 chunks on rank r: F + FB forwards = 20.
  for (let r = 0; r < 8; r++) {
    const c = countOps(rankSchedule({ kind: 'dualpipe', numRanks: 8, numChunks: 20 }, r));
    const h = Math.min(r, 7 - r);
    assert.equal(c.FB, 2 * (10 - 8 + h + 1) + (4 - h - 1) - (h === 3 ? 1 : 0), `rank ${r} F&B blocks`);
    assert.equal(c.F + c.FB, 20);
    assert.equal(c.B + c.FB, 20);
  }
});

test('SVG: one row per rank, legend, both direction colours, time axis', () => {
  const t = simulate('dualpipe', 8, 20, { F: 1, B: 2, W: 1, FB: 2.5 });
  const svg = renderSvg([t], { captions: [['bubble 4.5']] });
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  for (let r = 0; r < 8; r++) assert.ok(svg.includes(`>rank ${r}<`));
  assert.ok(svg.includes('Legend') && svg.includes('F&amp;B overlapped block') && svg.includes('>time<'));
  assert.ok(svg.includes('#1f5fa8') && svg.includes('#c2410c')); // blue and orange backwards both drawn
  assert.ok(svg.includes('bubble 4.5'));
});
