// A validator for Chrome trace JSON, written from the Trace Event Format spec (Google,
// https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU): the JSON Object
// Format ({traceEvents: [...], displayTimeUnit?, otherData?}) or the bare JSON Array Format.
// Checked per event: required fields and their types (name, ph, pid, tid; ts for all but metadata),
// known phases, complete events ("X") with a finite dur ≥ 0, begin/end ("B"/"E") pairs balanced per
// thread, metadata ("M") names and args, and our writer's conventions (strict mode): every thread that
// carries X events is named by an M thread_name event, and X events on one thread nest properly (either
// disjoint or contained, which Perfetto needs to draw them as a stack).

export class TraceFormatError extends Error {
  override name = 'TraceFormatError';
  constructor(readonly problems: string[]) {
    super(`invalid Chrome trace: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` (+${problems.length - 5} more)` : ''}`);
  }
}

const PHASES = new Set(['B', 'E', 'X', 'i', 'I', 'C', 'b', 'n', 'e', 's', 't', 'f', 'P', 'N', 'O', 'D', 'M', 'V', 'v', 'R', 'c', '(', ')']);
const METADATA = new Set(['process_name', 'process_labels', 'process_sort_index', 'thread_name', 'thread_sort_index']);

export interface ValidateOptions {
  /** Also enforce thread_name for every X track and proper nesting of X events (default true). */
  strict?: boolean;
}

export interface TraceSummary {
  events: number;
  complete: number;
  /** "pid/tid" -> thread name. */
  threads: Map<string, string>;
  processes: Map<number, string>;
  /** Names of all X events. */
  names: Set<string>;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Returns the list of problems (empty when the trace is valid). */
export function checkChromeTrace(trace: unknown, opts: ValidateOptions = {}): string[] {
  const strict = opts.strict ?? true;
  const problems: string[] = [];
  let events: unknown[];
  if (Array.isArray(trace)) events = trace;
  else if (isObj(trace)) {
    if (!Array.isArray(trace.traceEvents)) return ['object format needs a traceEvents array'];
    events = trace.traceEvents;
    if (trace.displayTimeUnit !== undefined && trace.displayTimeUnit !== 'ms' && trace.displayTimeUnit !== 'ns') problems.push(`displayTimeUnit must be "ms" or "ns", got ${JSON.stringify(trace.displayTimeUnit)}`);
    if (trace.otherData !== undefined && !isObj(trace.otherData)) problems.push('otherData must be an object');
  } else return ['a trace is a JSON array of events or an object with traceEvents'];

  const named = new Set<string>();
  const xTracks = new Map<string, Array<{ ts: number; end: number; name: string }>>();
  const stacks = new Map<string, string[]>();
  events.forEach((e, i) => {
    const at = `event ${i}`;
    if (!isObj(e)) { problems.push(`${at}: not an object`); return; }
    const ph = e.ph;
    if (typeof ph !== 'string' || !PHASES.has(ph)) { problems.push(`${at}: unknown phase ${JSON.stringify(ph)}`); return; }
    if (typeof e.name !== 'string' && ph !== 'E') problems.push(`${at} (${ph}): name must be a string`);
    if (!Number.isInteger(e.pid)) problems.push(`${at}: pid must be an integer`);
    if (!Number.isInteger(e.tid)) problems.push(`${at}: tid must be an integer`);
    if (e.cat !== undefined && typeof e.cat !== 'string') problems.push(`${at}: cat must be a string`);
    if (e.args !== undefined && !isObj(e.args)) problems.push(`${at}: args must be an object`);
    if (ph !== 'M' && !isNum(e.ts)) problems.push(`${at} (${ph}): ts must be a finite number (µs)`);
    if (isNum(e.ts) && e.ts < 0) problems.push(`${at}: negative ts`);
    const track = `${String(e.pid)}/${String(e.tid)}`;
    switch (ph) {
      case 'X': {
        if (!isNum(e.dur) || e.dur < 0) { problems.push(`${at} (X ${String(e.name)}): dur must be a finite number ≥ 0`); break; }
        if (e.tdur !== undefined && (!isNum(e.tdur) || e.tdur < 0)) problems.push(`${at}: tdur must be ≥ 0`);
        if (isNum(e.ts)) {
          let l = xTracks.get(track);
          if (!l) xTracks.set(track, (l = []));
          l.push({ ts: e.ts, end: e.ts + e.dur, name: String(e.name) });
        }
        break;
      }
      case 'B': {
        let s = stacks.get(track);
        if (!s) stacks.set(track, (s = []));
        s.push(String(e.name));
        break;
      }
      case 'E': {
        const s = stacks.get(track);
        if (!s || s.length === 0) problems.push(`${at}: E without a matching B on ${track}`);
        else {
          const open = s.pop()!;
          if (typeof e.name === 'string' && e.name !== open) problems.push(`${at}: E "${e.name}" closes B "${open}"`);
        }
        break;
      }
      case 'i':
      case 'I':
        if (e.s !== undefined && e.s !== 'g' && e.s !== 'p' && e.s !== 't') problems.push(`${at}: instant scope must be g, p or t`);
        break;
      case 'C':
        if (!isObj(e.args) || !Object.values(e.args).every(isNum)) problems.push(`${at}: counter args must be numbers`);
        break;
      case 'M': {
        const name = String(e.name);
        if (!METADATA.has(name)) { problems.push(`${at}: unknown metadata event ${name}`); break; }
        if (!isObj(e.args)) { problems.push(`${at}: metadata needs args`); break; }
        if ((name === 'process_name' || name === 'thread_name') && typeof e.args.name !== 'string') problems.push(`${at}: ${name} needs args.name`);
        if (name.endsWith('sort_index') && !Number.isInteger(e.args.sort_index)) problems.push(`${at}: ${name} needs an integer args.sort_index`);
        if (name === 'thread_name') named.add(track);
        break;
      }
    }
  });
  for (const [track, s] of stacks) if (s.length) problems.push(`${s.length} B event(s) never ended on ${track}`);
  if (strict) {
    for (const [track, list] of xTracks) {
      if (!named.has(track)) problems.push(`track ${track} has X events but no thread_name metadata`);
      // Sorted by start, longer first: each event must end within the innermost still-open one.
      list.sort((a, b) => a.ts - b.ts || b.end - a.end);
      const open: Array<{ end: number; name: string }> = [];
      for (const ev of list) {
        while (open.length && open[open.length - 1]!.end <= ev.ts) open.pop();
        const parent = open[open.length - 1];
        if (parent && ev.end > parent.end + 1e-3) {
          problems.push(`track ${track}: "${ev.name}" [${ev.ts}, ${ev.end}] overlaps "${parent.name}" without nesting`);
          continue;
        }
        open.push(ev);
      }
    }
  }
  return problems;
}

/** Throws TraceFormatError listing the problems; returns a summary of a valid trace. */
export function validateChromeTrace(trace: unknown, opts: ValidateOptions = {}): TraceSummary {
  const problems = checkChromeTrace(trace, opts);
  if (problems.length) throw new TraceFormatError(problems);
  const events = (Array.isArray(trace) ? trace : (trace as { traceEvents: unknown[] }).traceEvents) as Array<Record<string, unknown>>;
  const threads = new Map<string, string>();
  const processes = new Map<number, string>();
  const names = new Set<string>();
  let complete = 0;
  for (const e of events) {
    if (e.ph === 'M' && e.name === 'thread_name') threads.set(`${String(e.pid)}/${String(e.tid)}`, String((e.args as { name: string }).name));
    if (e.ph === 'M' && e.name === 'process_name') processes.set(e.pid as number, String((e.args as { name: string }).name));
    if (e.ph === 'X') { complete++; names.add(String(e.name)); }
  }
  return { events: events.length, complete, threads, processes, names };
}
