// Soak sampling for `seekd bench serve`: scrapes the server's /metrics every few seconds for its resident
// memory, V8 heap and KV-cache usage, and summarizes the curves (start, min, max, end, and a least-squares
// slope per minute after a warm-up), so that a leak shows as a slope and a block leak as KV usage left
// above 0 once the server is idle.
import { writeFileSync } from 'node:fs';

export interface SoakSample {
  /** Seconds since sampling started. */
  t: number;
  rssBytes: number;
  heapUsedBytes: number;
  /** V8 heap reserved, and memory outside it held by JS objects (ArrayBuffers): NaN where /metrics lacks them. */
  heapTotalBytes: number;
  externalBytes: number;
  /** KV blocks in use, 0..1. */
  kvUsage: number;
  running: number;
  waiting: number;
}

export interface CurveSummary { start: number; min: number; max: number; end: number; slopePerMin: number }

export interface SoakSummary {
  samples: number;
  warmupS: number;
  rssBytes: CurveSummary;
  heapUsedBytes: CurveSummary;
  kvUsage: CurveSummary;
  /** KV usage once the server was idle after the load (must be 0). */
  kvUsageIdle: number;
}

export class MetricsError extends Error {
  override readonly name = 'MetricsError';
}

/** First sample value of each metric family in a Prometheus text exposition (labels ignored). */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[3]);
    if (!out.has(m[1]!) && !Number.isNaN(v)) out.set(m[1]!, v);
  }
  return out;
}

const KV_NAMES = ['vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc'];

function pick(m: Map<string, number>, names: string[], what: string): number {
  for (const n of names) { const v = m.get(n); if (v !== undefined) return v; }
  throw new MetricsError(`/metrics has no ${what} (${names.join(' or ')})`);
}

export async function scrape(url: string, apiKey?: string | null): Promise<Omit<SoakSample, 't'>> {
  const res = await fetch(`${url}/metrics`, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} });
  if (!res.ok) throw new MetricsError(`GET /metrics: HTTP ${res.status}`);
  const m = parsePrometheus(await res.text());
  return {
    rssBytes: pick(m, ['process_resident_memory_bytes'], 'resident memory'),
    heapUsedBytes: pick(m, ['nodejs_heap_size_used_bytes'], 'V8 heap size'),
    heapTotalBytes: m.get('nodejs_heap_size_total_bytes') ?? NaN,
    externalBytes: m.get('nodejs_external_memory_bytes') ?? NaN,
    kvUsage: pick(m, KV_NAMES, 'KV-cache usage'),
    running: pick(m, ['vllm:num_requests_running'], 'running requests'),
    waiting: pick(m, ['vllm:num_requests_waiting'], 'waiting requests'),
  };
}

/** Samples /metrics every intervalMs until stop(); a failed scrape is an error (the server must answer). */
export class SoakSampler {
  readonly samples: SoakSample[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly t0 = performance.now();
  private pending: Promise<unknown> = Promise.resolve();
  private failure: Error | null = null;

  constructor(private readonly url: string, private readonly apiKey: string | null | undefined, private readonly intervalMs: number) {}

  start(): this {
    this.pending = this.sample();
    this.timer = setInterval(() => { this.pending = this.pending.then(() => this.sample()); }, this.intervalMs);
    return this;
  }

  async sample(): Promise<SoakSample | null> {
    try {
      const s = { t: (performance.now() - this.t0) / 1000, ...(await scrape(this.url, this.apiKey)) };
      this.samples.push(s);
      return s;
    } catch (e) {
      this.failure ??= e as Error;
      return null;
    }
  }

  /** Stops the timer (no final sample). */
  dispose(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * Stops the timer, waits until the server has no running or waiting request (at most idleTimeoutMs),
   * then takes the final sample. Throws if any scrape failed.
   */
  async stop(idleTimeoutMs = 30_000): Promise<SoakSample> {
    this.dispose();
    await this.pending;
    const until = performance.now() + idleTimeoutMs;
    for (;;) {
      const s = await this.sample();
      if (this.failure) throw this.failure;
      if ((s!.running === 0 && s!.waiting === 0) || performance.now() > until) return s!;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Least-squares slope of y over x. */
export function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0, sxx = 0;
  for (let i = 0; i < n; i++) { sxy += (xs[i]! - mx) * (ys[i]! - my); sxx += (xs[i]! - mx) ** 2; }
  return sxx === 0 ? 0 : sxy / sxx;
}

function curve(samples: SoakSample[], get: (s: SoakSample) => number, warmupS: number): CurveSummary {
  const ys = samples.map(get);
  const after = samples.filter((s) => s.t >= warmupS);
  return {
    start: ys[0]!, min: Math.min(...ys), max: Math.max(...ys), end: ys[ys.length - 1]!,
    slopePerMin: slope(after.map((s) => s.t / 60), after.map(get)),
  };
}

export function summarize(samples: SoakSample[], warmupS: number): SoakSummary {
  if (samples.length === 0) throw new MetricsError('no soak samples');
  return {
    samples: samples.length, warmupS,
    rssBytes: curve(samples, (s) => s.rssBytes, warmupS),
    heapUsedBytes: curve(samples, (s) => s.heapUsedBytes, warmupS),
    kvUsage: curve(samples, (s) => s.kvUsage, warmupS),
    kvUsageIdle: samples[samples.length - 1]!.kvUsage,
  };
}

/** Writes the curve: CSV when the file name ends in .csv, else JSON (samples + summary + extra). */
export function writeSoak(file: string, samples: SoakSample[], summary: SoakSummary, extra: Record<string, unknown>): void {
  if (file.toLowerCase().endsWith('.csv')) {
    const rows = ['t_s,rss_bytes,heap_used_bytes,heap_total_bytes,external_bytes,kv_usage,running,waiting',
      ...samples.map((s) => [s.t.toFixed(3), s.rssBytes, s.heapUsedBytes, s.heapTotalBytes, s.externalBytes, s.kvUsage, s.running, s.waiting].join(','))];
    writeFileSync(file, rows.join('\n') + '\n');
  } else {
    writeFileSync(file, JSON.stringify({ ...extra, summary, samples }, null, 2) + '\n');
  }
}
