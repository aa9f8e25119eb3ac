// SVG rendering of simulated pipeline timelines: one row per rank, time to the right, the two data
// directions in two colour families (blue: module 0 / forward direction, orange: module 1 / reverse
// direction), forward light, backward dark, deferred weight-gradient steps hatched, overlapped F&B
// blocks drawn as one outlined block split into its forward (top) and backward (bottom) halves.
import type { Block, Timeline } from './simulate.ts';

const COLORS = {
  F: ['#a6cee3', '#fdbf6f'],
  B: ['#1f5fa8', '#c2410c'],
  W: ['#5b9bd5', '#f28e2b'],
};
const TEXT_ON = { F: '#0b2545', B: '#ffffff', W: '#ffffff' } as const;

const TITLES: Record<Timeline['kind'], string> = {
  '1f1b': '1F1B',
  zb1p: 'ZB1P (zero-bubble ZB-H1)',
  dualpipe: 'DualPipe',
  dualpipev: 'DualPipeV',
};

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function directionNames(t: Timeline): [string, string] {
  if (t.kind === 'dualpipe') return ['forward direction (enters at rank 0)', `reverse direction (enters at rank ${t.numRanks - 1})`];
  if (t.kind === 'dualpipev') return [`stages 0–${t.numRanks - 1} (down)`, `stages ${t.numRanks}–${2 * t.numRanks - 1} (up)`];
  return ['micro-batches', 'unused'];
}

export interface SvgOptions {
  /** Pixels per unit of time; by default the widest timeline is fit into ~1400 px. */
  scale?: number;
  /** Draw point-to-point messages as thin lines (default true). */
  p2p?: boolean;
  /** Extra lines under each timeline's title (e.g. bubble figures). */
  captions?: string[][];
}

/** Renders one or more timelines stacked vertically into one SVG document. */
export function renderSvg(timelines: Timeline[], opts: SvgOptions = {}): string {
  const left = 92;
  const right = 24;
  const rowH = 30;
  const rowGap = 6;
  const maxSpan = Math.max(...timelines.map((t) => t.makespan));
  const scale = opts.scale ?? 1400 / maxSpan;
  const width = Math.ceil(left + maxSpan * scale + right);
  const parts: string[] = [];
  let y = 16;

  // Legend (shared).
  const legend: Array<[string, string, boolean]> = [
    ['F  forward, module 0 / direction 0', COLORS.F[0], false],
    ['B  backward, direction 0', COLORS.B[0], false],
    ['W  deferred weight grad, direction 0', COLORS.W[0], true],
    ['F  forward, module 1 / direction 1', COLORS.F[1], false],
    ['B  backward, direction 1', COLORS.B[1], false],
    ['W  deferred weight grad, direction 1', COLORS.W[1], true],
  ];
  parts.push(`<text x="${left}" y="${y + 12}" font-size="13" font-weight="bold">Legend</text>`);
  legend.forEach(([label, color, hatch], i) => {
    const lx = left + 70 + (i % 3) * 300;
    const ly = y + Math.floor(i / 3) * 20;
    parts.push(`<rect x="${lx}" y="${ly}" width="26" height="14" fill="${color}" stroke="#333" stroke-width="0.5"/>`);
    if (hatch) parts.push(`<rect x="${lx}" y="${ly}" width="26" height="14" fill="url(#hatch)"/>`);
    parts.push(`<text x="${lx + 32}" y="${ly + 11}" font-size="12">${esc(label)}</text>`);
  });
  const lx = left + 70 + 3 * 300;
  parts.push(`<rect x="${lx}" y="${y}" width="26" height="14" fill="${COLORS.F[0]}" stroke="#000" stroke-width="1.5"/><rect x="${lx}" y="${y + 7}" width="26" height="7" fill="${COLORS.B[1]}"/>`);
  parts.push(`<text x="${lx + 32}" y="${y + 11}" font-size="12">F&amp;B overlapped block (top: F, bottom: B)</text>`);
  parts.push(`<line x1="${lx}" y1="${y + 27}" x2="${lx + 26}" y2="${y + 27}" stroke="#555" stroke-width="1" stroke-dasharray="3,2"/>`);
  parts.push(`<text x="${lx + 32}" y="${y + 31}" font-size="12">p2p message (sender → receiver)</text>`);
  y += 56;

  timelines.forEach((t, ti) => {
    const [d0, d1] = directionNames(t);
    parts.push(`<text x="8" y="${y + 14}" font-size="15" font-weight="bold">${esc(TITLES[t.kind])}: ${t.numStages} stages on ${t.numRanks} ranks, ${t.numChunks} micro-batches — F=${t.costs.F} B=${t.costs.B} W=${t.costs.W} F&amp;B=${t.costs.FB}</text>`);
    y += 20;
    const dirs = t.kind === 'dualpipe' || t.kind === 'dualpipev' ? `colours: blue = ${d0}, orange = ${d1}` : 'single direction (blue)';
    for (const line of [dirs, ...(opts.captions?.[ti] ?? [])]) {
      parts.push(`<text x="8" y="${y + 12}" font-size="12" fill="#333">${esc(line)}</text>`);
      y += 16;
    }
    y += 4;
    const top = y;
    const rowY = (r: number) => top + r * (rowH + rowGap);
    for (let r = 0; r < t.numRanks; r++) {
      parts.push(`<rect x="${left}" y="${rowY(r)}" width="${(t.makespan * scale).toFixed(1)}" height="${rowH}" fill="#f3f3f3"/>`);
      parts.push(`<text x="${left - 8}" y="${rowY(r) + rowH / 2 + 4}" font-size="12" text-anchor="end">rank ${r}</text>`);
    }
    const X = (time: number) => (left + time * scale).toFixed(1);
    const label = (b: Block, x: number, w: number, yy: number, h: number, kind: 'F' | 'B' | 'W', chunk: number) => {
      if (w < 11) return '';
      const txt = kind === 'W' ? `W${chunk}` : String(chunk);
      const fs = Math.min(11, h - 3);
      return `<text x="${(x + w / 2).toFixed(1)}" y="${(yy + h / 2 + fs / 2 - 1).toFixed(1)}" font-size="${fs}" text-anchor="middle" fill="${TEXT_ON[kind]}">${txt}</text>`;
    };
    for (const b of t.blocks) {
      const x = left + b.start * scale;
      const w = (b.end - b.start) * scale;
      const yy = rowY(b.rank);
      if (b.kind === 'FB') {
        const h2 = rowH / 2;
        parts.push(`<rect x="${x.toFixed(1)}" y="${yy}" width="${w.toFixed(1)}" height="${h2}" fill="${COLORS.F[b.mod]}"/>`);
        parts.push(`<rect x="${x.toFixed(1)}" y="${yy + h2}" width="${w.toFixed(1)}" height="${h2}" fill="${COLORS.B[b.bmod!]}"/>`);
        parts.push(`<rect x="${x.toFixed(1)}" y="${yy}" width="${w.toFixed(1)}" height="${rowH}" fill="none" stroke="#000" stroke-width="1.5"/>`);
        parts.push(label(b, x, w, yy, h2, 'F', b.chunk), label(b, x, w, yy + h2, h2, 'B', b.bchunk!));
      } else {
        const kind = b.kind;
        parts.push(`<rect x="${x.toFixed(1)}" y="${yy}" width="${w.toFixed(1)}" height="${rowH}" fill="${COLORS[kind][b.mod]}" stroke="#fff" stroke-width="0.75"/>`);
        if (kind === 'W') parts.push(`<rect x="${x.toFixed(1)}" y="${yy}" width="${w.toFixed(1)}" height="${rowH}" fill="url(#hatch)"/>`);
        if (kind === 'B' && b.zb) parts.push(`<rect x="${x.toFixed(1)}" y="${yy + rowH - 4}" width="${w.toFixed(1)}" height="3" fill="#fff" opacity="0.6"/>`);
        parts.push(label(b, x, w, yy, rowH, kind, b.chunk));
      }
    }
    if (opts.p2p ?? true) {
      for (const m of t.messages) {
        const down = m.to > m.from;
        const y1 = down ? rowY(m.from) + rowH : rowY(m.from);
        const y2 = down ? rowY(m.to) : rowY(m.to) + rowH;
        const color = m.tag.endsWith('0') ? COLORS.B[0] : COLORS.B[1];
        parts.push(`<line x1="${X(m.sent)}" y1="${y1}" x2="${X(m.arrived)}" y2="${y2}" stroke="${color}" stroke-width="1" stroke-dasharray="3,2" opacity="0.7"/>`);
      }
    }
    // Time axis.
    const axisY = rowY(t.numRanks) + 2;
    const step = niceStep(t.makespan / 12);
    parts.push(`<line x1="${left}" y1="${axisY}" x2="${X(t.makespan)}" y2="${axisY}" stroke="#000"/>`);
    for (let v = 0; v <= t.makespan + 1e-9; v += step) {
      parts.push(`<line x1="${X(v)}" y1="${axisY}" x2="${X(v)}" y2="${axisY + 5}" stroke="#000"/>`);
      parts.push(`<text x="${X(v)}" y="${axisY + 17}" font-size="11" text-anchor="middle">${+v.toFixed(2)}</text>`);
    }
    parts.push(`<text x="${left - 8}" y="${axisY + 17}" font-size="11" text-anchor="end">time</text>`);
    parts.push(`<line x1="${X(t.makespan)}" y1="${top - 4}" x2="${X(t.makespan)}" y2="${axisY}" stroke="#b00" stroke-dasharray="4,3"/>`);
    parts.push(`<text x="${X(t.makespan)}" y="${top - 6}" font-size="11" text-anchor="end" fill="#b00">makespan ${+t.makespan.toFixed(3)}</text>`);
    y = axisY + 40;
  });

  const height = Math.ceil(y);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2" opacity="0.7"/></pattern></defs>',
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    ...parts.filter(Boolean),
    '</svg>',
  ].join('\n');
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}
