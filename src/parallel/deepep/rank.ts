// The rank side of a launched group (see launch.ts): `runRank(main)` joins the group the launcher set
// up, whether this code runs as a worker thread (shared-memory rings) or as a child process (TCP), runs
// `main`, reports its value or its error to the launcher and releases the communicator.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { Communicator } from './comm.ts';
import { ThreadCommunicator, type ThreadWorld } from './shm.ts';
import { TcpCommunicator } from './tcp.ts';

export interface RankContext<D = unknown> {
  readonly comm: Communicator;
  readonly rank: number;
  readonly size: number;
  readonly transport: 'thread' | 'process';
  /** The `data` given to the launcher (structured-cloned). */
  readonly data: D;
  /** Sends a progress message to the launcher (its 'signal' event). */
  signal(value: unknown): void;
}

/** What travels from a rank to the launcher. */
export type RankMessage =
  | { type: 'signal'; value: unknown }
  | { type: 'done'; ok: true; value: unknown }
  | { type: 'done'; ok: false; error: SerializedError }
  | { type: 'addr'; address: string };

export interface SerializedError {
  name: string;
  message: string;
  rank?: number;
  op?: string;
  reason?: string;
}

export interface ThreadRankInit {
  world: ThreadWorld;
  rank: number;
  timeoutMs: number;
}

export const THREAD_INIT_KEY = '__deepepThread';
export const PROCESS_ENV_KEY = 'SEEKD_EP_RANK';

export function serializeError(e: unknown): SerializedError {
  const err = e as { name?: string; message?: string; rank?: number; op?: string; reason?: string };
  const out: SerializedError = { name: String(err?.name ?? 'Error'), message: String(err?.message ?? e) };
  if (typeof err?.rank === 'number') out.rank = err.rank;
  if (typeof err?.op === 'string') out.op = err.op;
  if (typeof err?.reason === 'string') out.reason = err.reason;
  return out;
}

async function joinThread(): Promise<{ comm: Communicator; data: unknown; post: (m: RankMessage) => void }> {
  const wd = (workerData as { data: Record<string, unknown> }).data;
  const init = wd[THREAD_INIT_KEY] as ThreadRankInit;
  const comm = new ThreadCommunicator(init.world, init.rank, { timeoutMs: init.timeoutMs });
  return { comm, data: wd.user, post: (m) => parentPort!.postMessage(m) };
}

async function joinProcess(): Promise<{ comm: Communicator; data: unknown; post: (m: RankMessage) => void }> {
  const { rank, size, timeoutMs, host } = JSON.parse(process.env[PROCESS_ENV_KEY]!) as { rank: number; size: number; timeoutMs: number; host: string };
  const post = (m: RankMessage): void => void process.send!(m);
  const comm = await TcpCommunicator.listen({ rank, size, host, port: 0, timeoutMs });
  const peers = new Promise<{ addresses: string[]; data: unknown }>((res) => {
    const on = (m: { type?: string; addresses?: string[]; data?: unknown }): void => {
      if (m?.type !== 'peers') return;
      process.off('message', on);
      res({ addresses: m.addresses!, data: m.data });
    };
    process.on('message', on);
  });
  post({ type: 'addr', address: comm.address });
  const { addresses, data } = await peers;
  await comm.connect(addresses);
  return { comm, data, post };
}

/** Joins the launcher's group, runs `main`, reports the outcome. Call once at the top of a rank module. */
export async function runRank<D, T>(main: (ctx: RankContext<D>) => Promise<T>): Promise<void> {
  const inThread = !isMainThread && (workerData as { data?: Record<string, unknown> } | null)?.data?.[THREAD_INIT_KEY] !== undefined;
  if (!inThread && !process.env[PROCESS_ENV_KEY]) throw new Error('runRank: not started by launchThreadRanks/launchProcessRanks');
  const { comm, data, post } = inThread ? await joinThread() : await joinProcess();
  const ctx: RankContext<D> = {
    comm, rank: comm.rank, size: comm.size, transport: inThread ? 'thread' : 'process', data: data as D,
    signal: (value) => post({ type: 'signal', value }),
  };
  let msg: RankMessage;
  try {
    msg = { type: 'done', ok: true, value: await main(ctx) };
  } catch (e) {
    msg = { type: 'done', ok: false, error: serializeError(e) };
  }
  await comm.close();
  post(msg);
  if (!inThread) process.disconnect?.();
}
