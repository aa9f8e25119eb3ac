// Turns the runtime's Chrome-trace spans back into a Timeline (the simulator's shape), so a measured
// run can be drawn with the same SVG renderer and its bubbles compared with the simulation.
// Span names written by executor.ts: "F0", "B1", "B0 (zb)", "W", "F0&B1"; args.chunk / fchunk / bchunk
// are per-module chunk counters.
import type { TraceEvent } from '../trace/chrome-trace.ts';
import type { Block, Costs, Timeline } from './simulate.ts';
import type { Mod, PipeKind } from './schedule.ts';

export function timelineFromTrace(events: readonly TraceEvent[], kind: PipeKind, numStages: number, numChunks: number): Timeline {
  const numRanks = kind === 'dualpipe' ? numStages : numStages / 2;
  const spans = events.filter((e) => e.ph === 'X' && e.cat === 'compute' && e.pid < numRanks);
  const t0 = Math.min(...spans.map((e) => e.ts!));
  const mb = (mod: Mod, i: number) => (kind === 'dualpipe' && mod === 1 ? numChunks / 2 + i : i);
  const blocks: Block[] = [];
  const pendingW: Array<Array<{ mod: Mod; chunk: number }>> = Array.from({ length: numRanks }, () => []);
  const ordered = [...spans].sort((a, b) => a.pid - b.pid || a.ts! - b.ts!);
  for (const e of ordered) {
    const start = (e.ts! - t0) / 1000;
    const end = start + e.dur! / 1000;
    const args = (e.args ?? {}) as { chunk?: number; fchunk?: number; bchunk?: number };
    let m: RegExpMatchArray | null;
    if ((m = /^F([01])&B([01])$/.exec(e.name))) {
      const fm = Number(m[1]) as Mod;
      const bm = Number(m[2]) as Mod;
      blocks.push({ rank: e.pid, kind: 'FB', mod: fm, bmod: bm, chunk: mb(fm, args.fchunk ?? 0), bchunk: mb(bm, args.bchunk ?? 0), start, end });
    } else if ((m = /^F([01])$/.exec(e.name))) {
      const mod = Number(m[1]) as Mod;
      blocks.push({ rank: e.pid, kind: 'F', mod, chunk: mb(mod, args.chunk ?? 0), start, end });
    } else if ((m = /^B([01])( \(zb\))?$/.exec(e.name))) {
      const mod = Number(m[1]) as Mod;
      const zb = Boolean(m[2]);
      blocks.push({ rank: e.pid, kind: 'B', mod, chunk: mb(mod, args.chunk ?? 0), zb, start, end });
      if (zb) pendingW[e.pid]!.push({ mod, chunk: mb(mod, args.chunk ?? 0) });
    } else if (e.name === 'W') {
      const g = pendingW[e.pid]!.shift() ?? { mod: 0 as Mod, chunk: -1 };
      blocks.push({ rank: e.pid, kind: 'W', mod: g.mod, chunk: g.chunk, start, end });
    }
  }
  const makespan = Math.max(...blocks.map((b) => b.end));
  const busy = Array.from({ length: numRanks }, (_, r) => blocks.filter((b) => b.rank === r).reduce((a, b) => a + b.end - b.start, 0));
  const avg = (k: Block['kind'], zb = false) => {
    const l = blocks.filter((b) => b.kind === k && (k !== 'B' || Boolean(b.zb) === zb));
    return l.length ? l.reduce((a, b) => a + b.end - b.start, 0) / l.length : 0;
  };
  const costs: Costs = { F: +avg('F').toFixed(3), B: +avg('B').toFixed(3), W: +avg('W').toFixed(3), FB: +avg('FB').toFixed(3) };
  return { kind, numRanks, numStages, numChunks, costs, blocks, messages: [], makespan, busy, bubbles: busy.map((b) => makespan - b) };
}
