// What a training run shows and writes besides checkpoints: the progress line (stderr), the loss-curve
// SVG (no dependencies: polylines on linear axes), and the pipeline bubble of a step measured from the
// ranks' compute spans, next to the schedule's closed form at the measured costs
// (parallel/dualpipe/simulate.ts closedFormBubble; DeepSeek-V3 report Table 2).
import { closedFormBubble } from '../parallel/dualpipe/simulate.ts';
import type { TraceEvent } from '../parallel/trace/chrome-trace.ts';
import type { ScheduleKind } from './pipeline/runtime.ts';

export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '--';
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** One progress line: bar, step, loss, tokens/s, ETA. */
export function progressLine(p: { step: number; steps: number; loss: number; tokensPerSec: number; etaSec: number; evalLoss?: number | null }, width = 24): string {
  const f = Math.min(1, p.step / p.steps);
  const done = Math.round(f * width);
  const bar = '='.repeat(Math.max(0, done - 1)) + (done > 0 ? (done === width ? '=' : '>') : '') + ' '.repeat(width - done);
  const ev = p.evalLoss != null ? ` val ${p.evalLoss.toFixed(4)}` : '';
  return `[${bar}] ${String(p.step).padStart(String(p.steps).length)}/${p.steps} loss ${p.loss.toFixed(4)}${ev} ${p.tokensPerSec.toFixed(0)} tok/s ETA ${formatDuration(p.etaSec)}`;
}

export interface Series {
  name: string;
  color: string;
  points: Array<[number, number]>;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/** A nice tick step for a span (1, 2 or 5 × 10^k). */
function tickStep(span: number, n = 6): number {
  const raw = span / n;
  const p = 10 ** Math.floor(Math.log10(raw || 1));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

/** Loss curves as a standalone SVG (x: step, y: loss). */
export function lossCurveSvg(series: readonly Series[], title: string): string {
  const W = 720, H = 400, L = 60, R = 20, T = 36, B = 44;
  const pts = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y));
  const x0 = 0, x1 = Math.max(1, ...pts.map(([x]) => x));
  let y0 = Math.min(...pts.map(([, y]) => y)), y1 = Math.max(...pts.map(([, y]) => y));
  if (!Number.isFinite(y0)) { y0 = 0; y1 = 1; }
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const X = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const Y = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`];
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`, `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`);
  const xs = tickStep(x1 - x0), ys = tickStep(y1 - y0);
  for (let v = Math.ceil(y0 / ys) * ys; v <= y1 + 1e-9; v += ys) {
    out.push(`<line x1="${L}" x2="${W - R}" y1="${Y(v).toFixed(1)}" y2="${Y(v).toFixed(1)}" stroke="#e5e7eb"/>`, `<text x="${L - 6}" y="${(Y(v) + 4).toFixed(1)}" text-anchor="end">${+v.toFixed(6)}</text>`);
  }
  for (let v = Math.ceil(x0 / xs) * xs; v <= x1 + 1e-9; v += xs) {
    out.push(`<line x1="${X(v).toFixed(1)}" x2="${X(v).toFixed(1)}" y1="${T}" y2="${H - B}" stroke="#f3f4f6"/>`, `<text x="${X(v).toFixed(1)}" y="${H - B + 16}" text-anchor="middle">${+v.toFixed(6)}</text>`);
  }
  out.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#6b7280"/>`);
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 8}" text-anchor="middle">step</text>`, `<text x="14" y="${(T + H - B) / 2}" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">loss (nats/token)</text>`);
  series.forEach((s, i) => {
    const p = s.points.filter(([, y]) => Number.isFinite(y));
    if (p.length === 1) out.push(`<circle cx="${X(p[0]![0]).toFixed(1)}" cy="${Y(p[0]![1]).toFixed(1)}" r="3" fill="${s.color}"/>`);
    else if (p.length > 1) out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${p.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ')}"/>`);
    out.push(`<rect x="${W - R - 150}" y="${T + 8 + i * 18}" width="12" height="3" fill="${s.color}"/>`, `<text x="${W - R - 132}" y="${T + 13 + i * 18}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export interface BubbleReport {
  /** Wall time from the first compute span's start to the last one's end (ms). */
  makespanMs: number;
  /** Per rank: makespan − compute time (ms). */
  bubblesMs: number[];
  /** Mean span durations (ms) of forward, backward, deferred weight-gradient and F&B blocks. */
  costs: { F: number; B: number; W: number; FB: number };
  /** The schedule's closed-form bubble at these costs (ms). */
  closedFormMs: number;
}

/** Bubbles of one pipeline step from its compute spans (executor span names: F0, B1, "B0 (zb)", W, F0&B1). */
export function measureBubble(events: readonly TraceEvent[], kind: ScheduleKind, numRanks: number, numStages: number): BubbleReport | null {
  const spans = events.filter((e) => e.ph === 'X' && e.cat === 'compute' && e.ts !== undefined && e.dur !== undefined);
  if (spans.length === 0) return null;
  const t0 = Math.min(...spans.map((e) => e.ts!));
  const t1 = Math.max(...spans.map((e) => e.ts! + e.dur!));
  const busy = new Array<number>(numRanks).fill(0);
  for (const e of spans) busy[e.pid]! += e.dur!;
  const mean = (re: RegExp, zb?: boolean) => {
    const l = spans.filter((e) => re.test(e.name) && (zb === undefined || e.name.includes('(zb)') === zb));
    return l.length ? l.reduce((a, e) => a + e.dur!, 0) / l.length / 1000 : 0;
  };
  const costs = { F: mean(/^F[01]$/), B: mean(/^B[01]/, false), W: mean(/^W$/), FB: mean(/^F[01]&B[01]$/) };
  // A DualPipe run with no overlapped blocks (PP 2 has none) uses F + B for F&B.
  const c = { ...costs, FB: costs.FB || costs.F + costs.B };
  const closedFormMs = closedFormBubble(kind, numStages, { ...c, W: Math.min(c.W, c.B) });
  const makespanMs = (t1 - t0) / 1000;
  return { makespanMs, bubblesMs: busy.map((b) => makespanMs - b / 1000), costs, closedFormMs };
}
