// Chrome trace (Trace Event Format) recorder: the JSON that chrome://tracing and Perfetto open, the
// format of DeepSeek's profile-data traces (https://github.com/deepseek-ai/profile-data).
// Spec: "Trace Event Format" (Google, https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU).
//
// What is written: complete events (ph "X") with µs timestamps `ts` and durations `dur`, on tracks
// identified by (pid, tid), plus metadata events (ph "M") naming each process (process_name) and each
// thread/track (thread_name). One process per rank or worker, one track per stream of work (compute,
// communication, ...). Timestamps are absolute µs since the Unix epoch (performance.timeOrigin +
// performance.now()), so events recorded in different worker threads line up when merged.
import { writeFileSync } from 'node:fs';
import type { Tracer } from '../../platform/tracer.ts';

export interface TraceEvent {
  name: string;
  cat?: string;
  ph: string;
  ts?: number;
  dur?: number;
  pid: number;
  tid: number;
  args?: Record<string, unknown>;
}

export interface ChromeTrace {
  traceEvents: TraceEvent[];
  displayTimeUnit: 'ms' | 'ns';
  otherData?: Record<string, unknown>;
}

/** Wall-clock µs since the Unix epoch, sub-µs resolution; comparable across worker threads. */
export function nowMicros(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/** Collects events for one process (rank/worker); tracks are created on demand. */
export class ChromeTraceRecorder implements Tracer {
  private readonly events: TraceEvent[] = [];
  private readonly tracks = new Map<string, number>();
  readonly pid: number;

  constructor(opts: { pid?: number; processName?: string } = {}) {
    this.pid = opts.pid ?? 0;
    this.events.push({ name: 'process_name', ph: 'M', pid: this.pid, tid: 0, args: { name: opts.processName ?? `process ${this.pid}` } });
  }

  /** tid of the named track, creating it (with its thread_name metadata event) on first use. */
  tid(track: string): number {
    let tid = this.tracks.get(track);
    if (tid === undefined) {
      tid = this.tracks.size + 1;
      this.tracks.set(track, tid);
      this.events.push({ name: 'thread_name', ph: 'M', pid: this.pid, tid, args: { name: track } });
      this.events.push({ name: 'thread_sort_index', ph: 'M', pid: this.pid, tid, args: { sort_index: tid } });
    }
    return tid;
  }

  /** Adds a finished complete event. */
  complete(track: string, name: string, cat: string, ts: number, dur: number, args?: Record<string, unknown>): void {
    const ev: TraceEvent = { name, cat, ph: 'X', ts, dur: Math.max(0, dur), pid: this.pid, tid: this.tid(track) };
    if (args) ev.args = args;
    this.events.push(ev);
  }

  /** Times fn (sync, or until its promise settles) as a complete event on `track`. */
  spanOn<T>(track: string, name: string, cat: string, fn: () => T, args?: Record<string, unknown>): T {
    const t0 = nowMicros();
    const done = () => this.complete(track, name, cat, t0, nowMicros() - t0, args);
    let r: T;
    try {
      r = fn();
    } catch (e) {
      done();
      throw e;
    }
    if (isThenable(r)) {
      return (r as unknown as Promise<unknown>).then(
        (v) => { done(); return v; },
        (e: unknown) => { done(); throw e; },
      ) as unknown as T;
    }
    done();
    return r;
  }

  /** Tracer interface: spans land on the "compute" track unless `cat` names communication. */
  span<T>(name: string, cat: string, fn: () => T, args?: Record<string, unknown>): T {
    return this.spanOn(trackForCategory(cat), name, cat, fn, args);
  }

  /** A Tracer whose spans all land on one named track of this recorder. */
  onTrack(track: string): Tracer {
    return { span: (name, cat, fn, args) => this.spanOn(track, name, cat, fn, args) };
  }

  /** Appends events recorded elsewhere (e.g. another worker's recorder). */
  merge(events: readonly TraceEvent[]): void {
    for (const e of events) this.events.push(e);
  }

  getEvents(): TraceEvent[] {
    return this.events.slice();
  }

  toJSON(otherData?: Record<string, unknown>): ChromeTrace {
    const t: ChromeTrace = { traceEvents: this.getEvents(), displayTimeUnit: 'ms' };
    if (otherData) t.otherData = otherData;
    return t;
  }

  writeFile(path: string, otherData?: Record<string, unknown>): void {
    writeFileSync(path, JSON.stringify(this.toJSON(otherData)));
  }
}

/** Communication categories go on their own track, everything else on "compute". */
export function trackForCategory(cat: string): string {
  return /^(comm|communication|p2p|all2all|alltoall|dispatch|combine|nccl)/i.test(cat) ? 'communication' : 'compute';
}

/** Merges several recorders' events into one trace (one process per recorder). */
export function mergeTraces(parts: ReadonlyArray<readonly TraceEvent[]>, otherData?: Record<string, unknown>): ChromeTrace {
  const t: ChromeTrace = { traceEvents: parts.flat(), displayTimeUnit: 'ms' };
  if (otherData) t.otherData = otherData;
  return t;
}
