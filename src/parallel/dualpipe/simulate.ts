// Timeline simulation of pipeline schedules: DualPipe, DualPipeV (from the exact per-rank instruction
// lists of schedule.ts), 1F1B and ZB1P (zero-bubble ZB-H1), with given costs for a forward chunk F, a
// full backward chunk B, its weight part W (a zero-bubble backward costs B − W, the later W costs W)
// and an overlapped forward+backward block F&B. Point-to-point messages carry every dependency: a rank
// blocks at a "wait" until the messages it posted receives for have arrived (sent at the sender's
// wait + latency). Bubble of a rank = makespan − its busy time.
// Closed forms: DeepSeek-V3 technical report, Table 2 / https://github.com/deepseek-ai/DualPipe README.
import { PipelineConfigError } from './errors.ts';
import { rankSchedule, type Instr, type Mod, type PipeKind } from './schedule.ts';

export type SimKind = PipeKind | '1f1b' | 'zb1p';

export interface Costs {
  F: number;
  B: number;
  W: number;
  /** Overlapped forward + backward block. */
  FB: number;
  /** Point-to-point latency (0: free communication, as the closed forms assume). */
  comm?: number;
}

export interface Block {
  rank: number;
  kind: 'F' | 'B' | 'W' | 'FB';
  /** Module (DualPipe: 0 = forward direction, 1 = reverse; DualPipeV: 0 = down, 1 = up; others: 0). */
  mod: Mod;
  /** For FB: the backward's module. */
  bmod?: Mod;
  /** Micro-batch id (FB: the forward's). */
  chunk: number;
  /** For FB: the backward's micro-batch. */
  bchunk?: number;
  /** Backward with deferred weight gradient. */
  zb?: boolean;
  start: number;
  end: number;
}

export interface Message {
  from: number;
  to: number;
  tag: string;
  chunk: number;
  sent: number;
  arrived: number;
}

export interface Timeline {
  kind: SimKind;
  numRanks: number;
  /** Pipeline stages. */
  numStages: number;
  numChunks: number;
  costs: Costs;
  blocks: Block[];
  messages: Message[];
  makespan: number;
  /** Per rank: makespan − busy time. */
  bubbles: number[];
  busy: number[];
}

/** The closed-form bubble of each schedule (PP = pipeline stages). */
export function closedFormBubble(kind: SimKind, pp: number, c: Costs): number {
  switch (kind) {
    case '1f1b':
      return (pp - 1) * (c.F + c.B);
    case 'zb1p':
      return (pp - 1) * (c.F + c.B - 2 * c.W);
    case 'dualpipe':
    case 'dualpipev':
      return (pp / 2 - 1) * (c.FB + c.B - 3 * c.W);
  }
}

/** 1F1B on one direction: warm-up forwards, steady one-forward-one-backward, cool-down backwards. */
function oneFOneB(rank: number, p: number, m: number, zbDelay: number | null): Instr[] {
  const out: Instr[] = [];
  const first = rank === 0;
  const last = rank === p - 1;
  const F = () => {
    if (!first) out.push({ op: 'recvF', mod: 0, peer: rank - 1 });
    out.push({ op: 'wait' }, { op: 'F', mod: 0 });
    if (!last) out.push({ op: 'sendF', mod: 0, peer: rank + 1 });
  };
  let bDone = 0;
  let wDone = 0;
  const B = () => {
    if (!last) out.push({ op: 'recvB', mod: 0, peer: rank + 1 });
    out.push({ op: 'wait' }, { op: 'B', mod: 0, zb: zbDelay !== null });
    if (!first) out.push({ op: 'sendB', mod: 0, peer: rank - 1 });
    bDone++;
    // ZB-H1: the weight gradient of a micro-batch waits until `zbDelay` later backwards have run.
    if (zbDelay !== null) while (bDone - wDone > zbDelay) { out.push({ op: 'wait' }, { op: 'W' }); wDone++; }
  };
  const warm = Math.min(p - rank - 1, m);
  for (let i = 0; i < warm; i++) F();
  for (let i = warm; i < m; i++) { F(); B(); }
  for (let i = 0; i < warm; i++) B();
  while (zbDelay !== null && wDone < m) { out.push({ op: 'wait' }, { op: 'W' }); wDone++; }
  out.push({ op: 'wait' });
  return out;
}

/** Instruction lists for every rank of a schedule. */
export function scheduleLists(kind: SimKind, numStages: number, numChunks: number): Instr[][] {
  if (!Number.isInteger(numStages) || numStages < 1) throw new PipelineConfigError(`pipeline stages must be a positive integer, got ${numStages}`, 'numStages', numStages);
  if (kind === '1f1b' || kind === 'zb1p') {
    if (!Number.isInteger(numChunks) || numChunks < 1) throw new PipelineConfigError(`chunks must be a positive integer, got ${numChunks}`, 'numChunks', numChunks);
    // ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism", 2023): stage r keeps r weight-gradient
    // steps pending, which fills its cool-down bubble; the backward chain then only pays B − W per hop.
    return Array.from({ length: numStages }, (_, r) => oneFOneB(r, numStages, numChunks, kind === 'zb1p' ? r : null));
  }
  if (numStages % 2 !== 0) throw new PipelineConfigError(`${kind === 'dualpipe' ? 'DualPipe' : 'DualPipeV'} needs an even number of pipeline stages, got ${numStages}`, 'numStages', numStages);
  const numRanks = kind === 'dualpipe' ? numStages : numStages / 2;
  const shape = { kind, numRanks, numChunks };
  return Array.from({ length: numRanks }, (_, r) => rankSchedule(shape, r));
}

/** Micro-batch id of the i-th chunk a module processes (both DualPipe directions share ids 0..chunks−1). */
function chunkId(kind: SimKind, rank: number, numRanks: number, mod: Mod, i: number, numChunks: number): number {
  if (kind !== 'dualpipe') return i;
  const dir = mod; // module index = direction of travel
  void rank; void numRanks;
  return dir === 0 ? i : numChunks / 2 + i;
}

export function simulate(kind: SimKind, numStages: number, numChunks: number, costs: Costs): Timeline {
  for (const k of ['F', 'B', 'W', 'FB'] as const) {
    if (!Number.isFinite(costs[k]) || costs[k] < 0) throw new PipelineConfigError(`cost ${k} must be a finite non-negative number, got ${costs[k]}`, k, costs[k]);
  }
  if (costs.W > costs.B) throw new PipelineConfigError(`W (${costs.W}) cannot exceed the full backward B (${costs.B})`, 'W', costs.W);
  const lists = scheduleLists(kind, numStages, numChunks);
  const n = lists.length;
  const latency = costs.comm ?? 0;
  const clock = new Array<number>(n).fill(0);
  const busy = new Array<number>(n).fill(0);
  const pc = new Array<number>(n).fill(0);
  const blocks: Block[] = [];
  const messages: Message[] = [];
  // Per rank: queued sends (posted at the next wait) and receives awaited at the next wait.
  const queuedSends: Array<Array<{ to: number; tag: string; chunk: number }>> = Array.from({ length: n }, () => []);
  const awaited: Array<Array<{ key: string }>> = Array.from({ length: n }, () => []);
  const inbox = new Map<string, number>(); // "from>to:tag#k" -> arrival time
  const sentCount = new Map<string, number>();
  const recvCount = new Map<string, number>();
  const fCount = Array.from({ length: n }, () => [0, 0]);
  const bCount = Array.from({ length: n }, () => [0, 0]);
  const sendFCount = Array.from({ length: n }, () => [0, 0]);
  const sendBCount = Array.from({ length: n }, () => [0, 0]);
  const cid = (r: number, mod: Mod, i: number) => chunkId(kind, r, n, mod, i, numChunks);
  // Deferred weight-gradient groups (FIFO, as WeightGradStore): which backward each W belongs to.
  const wQueue: Array<Array<{ mod: Mod; chunk: number }>> = Array.from({ length: n }, () => []);

  const compute = (r: number, b: Omit<Block, 'rank' | 'start' | 'end'>, dur: number) => {
    blocks.push({ ...b, rank: r, start: clock[r]!, end: clock[r]! + dur });
    clock[r]! += dur;
    busy[r]! += dur;
  };

  // Runs rank r until it blocks on a message not yet sent; returns whether it made progress.
  const advance = (r: number): boolean => {
    const list = lists[r]!;
    let progressed = false;
    while (pc[r]! < list.length) {
      const ins = list[pc[r]!]!;
      switch (ins.op) {
        case 'recvF':
        case 'recvB': {
          const tag = `${ins.op === 'recvF' ? 'F' : 'B'}${ins.mod}`;
          const base = `${ins.peer}>${r}:${tag}`;
          const k = recvCount.get(base) ?? 0;
          recvCount.set(base, k + 1);
          awaited[r]!.push({ key: `${base}#${k}` });
          break;
        }
        case 'sendF':
        case 'sendB': {
          const isF = ins.op === 'sendF';
          const counter = isF ? sendFCount : sendBCount;
          const i = counter[r]![ins.mod]!++;
          queuedSends[r]!.push({ to: ins.peer, tag: `${isF ? 'F' : 'B'}${ins.mod}`, chunk: cid(r, ins.mod, i) });
          break;
        }
        case 'wait': {
          // Post queued sends (once: they are cleared), then wait for every awaited message.
          for (const s of queuedSends[r]!) {
            const base = `${r}>${s.to}:${s.tag}`;
            const k = sentCount.get(base) ?? 0;
            sentCount.set(base, k + 1);
            inbox.set(`${base}#${k}`, clock[r]! + latency);
            messages.push({ from: r, to: s.to, tag: s.tag, chunk: s.chunk, sent: clock[r]!, arrived: clock[r]! + latency });
          }
          queuedSends[r] = [];
          let t = clock[r]!;
          for (const a of awaited[r]!) {
            const at = inbox.get(a.key);
            if (at === undefined) return progressed; // blocked: retry this wait later
            t = Math.max(t, at);
          }
          awaited[r] = [];
          clock[r] = t;
          break;
        }
        case 'F': {
          const i = fCount[r]![ins.mod]!++;
          compute(r, { kind: 'F', mod: ins.mod, chunk: cid(r, ins.mod, i) }, costs.F);
          break;
        }
        case 'B': {
          const i = bCount[r]![ins.mod]!++;
          compute(r, { kind: 'B', mod: ins.mod, chunk: cid(r, ins.mod, i), zb: ins.zb }, ins.zb ? costs.B - costs.W : costs.B);
          if (ins.zb) wQueue[r]!.push({ mod: ins.mod, chunk: cid(r, ins.mod, i) });
          break;
        }
        case 'FB': {
          const i = fCount[r]![ins.fmod]!++;
          const j = bCount[r]![ins.bmod]!++;
          compute(r, { kind: 'FB', mod: ins.fmod, bmod: ins.bmod, chunk: cid(r, ins.fmod, i), bchunk: cid(r, ins.bmod, j) }, costs.FB);
          break;
        }
        case 'W': {
          const g = wQueue[r]!.shift();
          if (!g) throw new Error(`${kind}: rank ${r} runs W with no deferred backward`);
          compute(r, { kind: 'W', mod: g.mod, chunk: g.chunk }, costs.W);
          break;
        }
      }
      pc[r]!++;
      progressed = true;
    }
    return progressed;
  };

  // Round-robin until every rank finishes. Message arrival times only depend on the sender's clock, so
  // the order in which ranks are advanced does not change the result.
  for (;;) {
    let any = false;
    for (let r = 0; r < n; r++) any = advance(r) || any;
    if (pc.every((p, r) => p === lists[r]!.length)) break;
    if (!any) throw new Error(`${kind}: schedule deadlocked (ranks stuck at ${pc.join(',')})`);
  }
  const makespan = Math.max(...clock);
  return {
    kind, numRanks: n, numStages, numChunks, costs, blocks, messages, makespan,
    busy, bubbles: busy.map((b) => makespan - b),
  };
}
