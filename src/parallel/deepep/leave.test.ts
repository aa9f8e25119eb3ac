// A rank that closes after seeing a failure tells its live peers which rank failed (comm.ts LEAVE_TAG),
// so a survivor still waiting on that closing rank blames the rank that failed, not the one that left.
// Three TCP ranks in this process: rank 2 times out waiting on rank 1 and closes; rank 0 waits on rank 2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TcpCommunicator } from './tcp.ts';
import { RankFailedError } from './errors.ts';

async function mesh(size: number): Promise<TcpCommunicator[]> {
  const comms = await Promise.all(Array.from({ length: size }, (_, rank) => TcpCommunicator.listen({ rank, size, timeoutMs: 10_000 })));
  const addrs = comms.map((c) => c.address);
  await Promise.all(comms.map((c) => c.connect(addrs)));
  return comms;
}

test('a survivor leaving after a failure makes the others blame the failed rank, not the survivor', { timeout: 20_000 }, async () => {
  const [c0, c1, c2] = await mesh(3);
  try {
    const tag = 7;
    // Rank 0 waits for a message from rank 2 (which will never send it: rank 2 leaves first).
    const waiting = c0.recv(2, tag, 'dispatch').then(() => null, (e: unknown) => e);
    // Rank 2 waits on rank 1, which never answers: a timeout, then rank 2 closes its communicator.
    const r2 = await c2.recv(1, tag, 'dispatch', 200).then(() => null, (e: unknown) => e);
    assert.ok(r2 instanceof RankFailedError && r2.rank === 1 && r2.reason === 'timeout', String(r2));
    await c2.close();
    const err = await waiting;
    assert.ok(err instanceof RankFailedError, String(err));
    assert.equal(err.rank, 1, err.message);
    assert.equal(err.reason, 'timeout');
    assert.match(err.message, /rank 2 left the group/);
    // Later operations toward either rank fail at once, naming rank 1.
    await assert.rejects(c0.send(2, tag + 1, [new Uint8Array(4)], 'combine'), (e: unknown) => e instanceof RankFailedError && e.rank === 1);
    await assert.rejects(c0.recv(1, tag + 1, 'combine'), (e: unknown) => e instanceof RankFailedError && e.rank === 1);
  } finally {
    await Promise.all([c0.close(), c1.close(), c2.close()]);
  }
});

test('a clean close (no failure seen) still reads as that rank closing', { timeout: 20_000 }, async () => {
  const [c0, c1] = await mesh(2);
  try {
    const waiting = c0.recv(1, 3, 'barrier').then(() => null, (e: unknown) => e);
    await c1.close();
    const err = await waiting;
    assert.ok(err instanceof RankFailedError && err.rank === 1 && err.reason === 'closed', String(err));
  } finally {
    await Promise.all([c0.close(), c1.close()]);
  }
});
