// Starting a group of ranks that run one module (SPMD): as worker threads sharing memory rings, or as
// child processes connected over loopback TCP. The launcher watches every rank: a rank that exits
// without reporting is marked dead (thread worlds: status word + wake-ups, so its peers fail fast; TCP:
// its sockets close). `close()` terminates whatever still runs and frees the shared buffers.
import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { spawnWorker } from '../../platform/worker.ts';
import { createThreadWorld, markRankExited, SyncThreadCommunicator, ThreadCommunicator, type ThreadWorld, type ThreadWorldOptions } from './shm.ts';
import { PROCESS_ENV_KEY, THREAD_INIT_KEY, type RankMessage, type SerializedError, type ThreadRankInit } from './rank.ts';

export type RankOutcome =
  | { rank: number; ok: true; value: unknown }
  | { rank: number; ok: false; error: SerializedError };

export interface RankGroup extends EventEmitter {
  readonly size: number;
  /** Every rank's outcome, once each has reported or exited. */
  readonly outcomes: Promise<RankOutcome[]>;
  /** Kills rank r abruptly (worker.terminate / SIGKILL). */
  kill(rank: number): void;
  /** Kills what still runs and waits for it to be gone. */
  close(): Promise<void>;
}

export interface LaunchOptions extends ThreadWorldOptions {
  /** Thread worlds only: rank 0 is the calling thread (returned as `comm`), workers are ranks 1..size-1. */
  callerIsRank0?: boolean;
  /** With callerIsRank0: give the caller a blocking SyncThreadCommunicator. */
  syncRank0?: boolean;
  /** Extra execArgv / env for child processes. */
  env?: Record<string, string>;
}

class Group extends EventEmitter implements RankGroup {
  readonly outcomes: Promise<RankOutcome[]>;
  readonly #settled = new Map<number, RankOutcome>();
  #resolve!: (o: RankOutcome[]) => void;
  readonly #pending: Set<number>;

  constructor(readonly size: number, ranks: number[], readonly killRank: (r: number) => void, readonly closeAll: () => Promise<void>) {
    super();
    this.#pending = new Set(ranks);
    this.outcomes = new Promise((res) => (this.#resolve = res));
    if (ranks.length === 0) this.#resolve([]);
  }

  settle(o: RankOutcome): void {
    if (this.#settled.has(o.rank)) return;
    this.#settled.set(o.rank, o);
    this.#pending.delete(o.rank);
    this.emit('outcome', o);
    if (this.#pending.size === 0) this.#resolve([...this.#settled.values()].sort((a, b) => a.rank - b.rank));
  }

  onMessage(rank: number, m: RankMessage): void {
    if (m.type === 'signal') this.emit('signal', rank, m.value);
    else if (m.type === 'done') this.settle(m.ok ? { rank, ok: true, value: m.value } : { rank, ok: false, error: m.error });
  }

  kill(rank: number): void {
    this.killRank(rank);
  }

  close(): Promise<void> {
    return this.closeAll();
  }
}

const exitedError = (code: number | null, signal?: string | null): SerializedError =>
  ({ name: 'RankExitedError', message: `rank exited without reporting (code ${code}${signal ? `, signal ${signal}` : ''})` });

/** Worker-thread ranks sharing memory. With callerIsRank0 the caller is rank 0 and gets `comm`. */
export function launchThreadRanks(moduleUrl: URL, size: number, data: unknown, opts: LaunchOptions = {}): { group: RankGroup; comm: ThreadCommunicator | null; world: ThreadWorld } {
  const world = createThreadWorld(size, opts);
  const first = opts.callerIsRank0 ? 1 : 0;
  const ranks = Array.from({ length: size - first }, (_, i) => i + first);
  const workers = new Map<number, Worker>();
  const exited = new Map<number, Promise<void>>();
  const group: Group = new Group(size, ranks, (r) => void workers.get(r)?.terminate(), async () => {
    await Promise.all([...workers.values()].map((w) => w.terminate()));
    await Promise.all(exited.values());
  });
  const commOpts = { timeoutMs: opts.timeoutMs ?? world.timeoutMs };
  const comm = !opts.callerIsRank0 ? null : opts.syncRank0 ? new SyncThreadCommunicator(world, 0, commOpts) : new ThreadCommunicator(world, 0, commOpts);
  for (const r of ranks) {
    const init: ThreadRankInit = { world, rank: r, timeoutMs: opts.timeoutMs ?? world.timeoutMs };
    const w = spawnWorker(moduleUrl, { [THREAD_INIT_KEY]: init, user: data });
    workers.set(r, w);
    w.on('message', (m: RankMessage) => group.onMessage(r, m));
    w.on('error', (e) => group.settle({ rank: r, ok: false, error: { name: e.name, message: e.message } }));
    exited.set(r, new Promise((res) => w.once('exit', (code) => {
      markRankExited(world, r);
      group.settle({ rank: r, ok: false, error: exitedError(code) });
      res();
    })));
  }
  return { group, comm, world };
}

/** Child-process ranks over loopback TCP (node --import tsx). Rendezvous of ports goes through IPC. */
export function launchProcessRanks(moduleUrl: URL, size: number, data: unknown, opts: LaunchOptions = {}): { group: RankGroup } {
  const ranks = Array.from({ length: size }, (_, i) => i);
  const children = new Map<number, ChildProcess>();
  const exited = new Map<number, Promise<void>>();
  const group: Group = new Group(size, ranks, (r) => void children.get(r)?.kill('SIGKILL'), async () => {
    for (const c of children.values()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.all(exited.values());
  });
  const addresses: (string | null)[] = new Array(size).fill(null);
  const file = fileURLToPath(moduleUrl);
  for (const r of ranks) {
    const env = { ...process.env, ...opts.env, [PROCESS_ENV_KEY]: JSON.stringify({ rank: r, size, timeoutMs: opts.timeoutMs ?? 30_000, host: '127.0.0.1' }) };
    const c = fork(file, [], { execArgv: ['--import', 'tsx'], env, serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.set(r, c);
    c.on('message', (m: RankMessage) => {
      if (m.type === 'addr') {
        addresses[r] = m.address;
        if (addresses.every((a) => a !== null)) for (const ch of children.values()) if (ch.connected) ch.send({ type: 'peers', addresses, data }, (e) => e && ch.kill('SIGKILL'));
        return;
      }
      group.onMessage(r, m);
    });
    c.on('error', (e) => group.settle({ rank: r, ok: false, error: { name: e.name, message: e.message } }));
    exited.set(r, new Promise((res) => c.once('exit', (code, signal) => {
      group.settle({ rank: r, ok: false, error: exitedError(code, signal) });
      res();
    })));
  }
  return { group };
}
