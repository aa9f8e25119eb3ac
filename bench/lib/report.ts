// Benchmark output: one JSON object with --json, a readable table otherwise.
// Shape: {"bench", "baseline": {...same-run reference figures...}, "rows": [{case, threads, metric, value, unit, ratio}]}

export interface BenchRow {
  case: string;
  threads: number;
  metric: string;
  value: number;
  unit: string;
  /** value over its baseline, where a goal is stated; null otherwise. */
  ratio: number | null;
}

export interface BenchReport {
  bench: string;
  baseline: Record<string, number | string>;
  rows: BenchRow[];
  notes?: string[];
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

/** Runs fn `reps` times after `warmup` runs; returns per-run seconds. */
export function timeRuns(fn: () => void, reps: number, warmup = 1): number[] {
  for (let i = 0; i < warmup; i++) fn();
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    out.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return out;
}

export async function timeRunsAsync(fn: () => Promise<void>, reps: number, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    out.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return out;
}

function fmt(v: number | string | null): string {
  if (v === null) return '-';
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 0.01 || a >= 1e6) ? v.toExponential(3) : v.toFixed(a < 10 ? 3 : a < 1000 ? 2 : 1);
}

export function printReport(r: BenchReport, json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }
  const lines: string[] = [`bench ${r.bench}`];
  for (const [k, v] of Object.entries(r.baseline)) lines.push(`  baseline ${k}: ${fmt(v)}`);
  const head = ['case', 'threads', 'metric', 'value', 'unit', 'ratio'];
  const body = r.rows.map((x) => [x.case, String(x.threads), x.metric, fmt(x.value), x.unit, fmt(x.ratio)]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cols: string[]) => '  ' + cols.map((c, i) => (i >= 3 && i !== 4 ? c.padStart(w[i]!) : c.padEnd(w[i]!))).join('  ');
  lines.push(line(head), line(w.map((n) => '-'.repeat(n))), ...body.map(line));
  for (const n of r.notes ?? []) lines.push(`  note: ${n}`);
  process.stdout.write(lines.join('\n') + '\n');
}
