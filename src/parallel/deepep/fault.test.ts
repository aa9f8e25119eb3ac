// Faults: a rank that dies (worker.terminate / SIGKILL) or stops answering while the others are inside
// a dispatch makes the survivors reject with RankFailedError {rank, op} within the configured timeout;
// nothing hangs and every worker, socket and process is released (the test runner would time out or
// keep the process alive otherwise).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Buffer } from './buffer.ts';
import { CommClosedError, RankFailedError } from './errors.ts';
import { launchProcessRanks, launchThreadRanks, type RankGroup } from './launch.ts';
import type { FaultParams } from './testing/fault-rank.ts';

const RANK = new URL('./testing/fault-rank.ts', import.meta.url);
const TIMEOUT_MS = 2_000;

function whenSignalled(group: RankGroup, rank: number, value: string): Promise<void> {
  return new Promise((res) => {
    const on = (r: number, v: unknown): void => {
      if (r === rank && v === value) {
        group.off('signal', on);
        res();
      }
    };
    group.on('signal', on);
  });
}

async function mainRank0Dispatch(comm: import('./comm.ts').Communicator, T: number, H: number): Promise<void> {
  const buf = new Buffer(comm);
  const E = 4 * comm.size;
  const idx = new Int32Array(T).map((_, t) => t % E);
  await buf.dispatch({ dtype: 'f32', hidden: H, data: new Float32Array(T * H).fill(1) }, idx, new Float32Array(T).fill(1), buf.getDispatchLayout(idx, E, 1));
}

test('a worker-thread rank killed mid-dispatch: survivors reject with RankFailedError', { timeout: 30_000 }, async () => {
  const R = 4;
  const victim = 2;
  const data: FaultParams = { victim, T: 16, H: 64 };
  // Long timeout: the death itself (not a timeout) must end the wait.
  const { group, comm } = launchThreadRanks(RANK, R, data, { callerIsRank0: true, timeoutMs: 20_000 });
  try {
    await whenSignalled(group, victim, 'victim-ready');
    const t0 = Date.now();
    const hasData = whenSignalled(group, victim, 'victim-has-data');
    const mine = mainRank0Dispatch(comm!, 16, 64);
    // Killed once it holds every survivor's dispatch message: all of them are inside the dispatch.
    await hasData;
    group.kill(victim);
    const err = await mine.then(() => null, (e: unknown) => e);
    assert.ok(err instanceof RankFailedError, `rank 0 got ${String(err)}`);
    assert.equal(err.rank, victim);
    assert.equal(err.op, 'dispatch');
    assert.equal(err.reason, 'exited');
    const outcomes = await group.outcomes;
    const elapsed = Date.now() - t0;
    // The death ended the wait, not the 20 s timeout (reason 'exited' says so too).
    assert.ok(elapsed < 20_000, `survivors took ${elapsed} ms`);
    for (const o of outcomes) {
      if (o.rank === victim) continue;
      assert.equal(o.ok, false);
      if (!o.ok) {
        assert.equal(o.error.name, 'RankFailedError', o.error.message);
        assert.equal(o.error.rank, victim);
        assert.equal(o.error.op, 'dispatch');
      }
    }
  } finally {
    await comm!.close();
    await group.close();
  }
});

test('a thread rank that stops answering: survivors time out with RankFailedError(reason timeout)', { timeout: 30_000 }, async () => {
  const R = 2;
  const { group, comm } = launchThreadRanks(RANK, R, { victim: 1, T: 8, H: 32 } satisfies FaultParams, { callerIsRank0: true, timeoutMs: TIMEOUT_MS });
  try {
    await whenSignalled(group, 1, 'victim-ready');
    const t0 = Date.now();
    const err = await mainRank0Dispatch(comm!, 8, 32).then(() => null, (e: unknown) => e);
    const elapsed = Date.now() - t0;
    assert.ok(err instanceof RankFailedError, String(err));
    assert.deepEqual([err.rank, err.op, err.reason], [1, 'dispatch', 'timeout']);
    assert.ok(elapsed >= TIMEOUT_MS - 50 && elapsed < TIMEOUT_MS + 2_000, `failed after ${elapsed} ms`);
    // A closed communicator fails later calls with a typed error instead of hanging.
    await comm!.close();
    await assert.rejects(comm!.barrier(), CommClosedError);
  } finally {
    await comm!.close();
    await group.close();
  }
});

test('a process rank killed mid-dispatch over TCP: the survivor rejects with RankFailedError', { timeout: 30_000 }, async () => {
  const R = 3;
  const victim = 1;
  const { group } = launchProcessRanks(RANK, R, { victim, T: 16, H: 64 } satisfies FaultParams, { timeoutMs: 20_000 });
  try {
    // The victim holds both survivors' dispatch messages: they have sent everything and wait on it. (Killing
    // on their own 'in-dispatch' signal, sent just before dispatch, left the order of their sends and the
    // death to the scheduler.)
    await whenSignalled(group, victim, 'victim-has-data');
    const t0 = Date.now();
    group.kill(victim);
    const outcomes = await group.outcomes;
    // Detected through the closed connections (reason 'closed' below), not the 20 s timeout.
    assert.ok(Date.now() - t0 < 20_000);
    for (const o of outcomes) {
      if (o.rank === victim) {
        assert.equal(o.ok, false);
        continue;
      }
      assert.equal(o.ok, false, `rank ${o.rank} should have failed`);
      if (!o.ok) assert.deepEqual([o.error.name, o.error.rank, o.error.op, o.error.reason], ['RankFailedError', victim, 'dispatch', 'closed'], o.error.message);
    }
  } finally {
    await group.close();
  }
});
