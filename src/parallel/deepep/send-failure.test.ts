// Which failure a rank announces (LEAVE) when it closes. The first sign of a dead peer can be a failed
// SEND (TCP: EPIPE, or the connection already closing) rather than its connection's close event. That
// failure must count like the close: it becomes the rank's cause, announced when the rank closes, so the
// other survivors blame the dead peer and not the rank that left. But a peer that merely exits after its
// last operation is no failure: announcing it made other ranks fail waits on messages that peer had
// already sent (the 8-thread-rank DeepEP test's rare 'rank N failed during checks_done (exited)').
// A deterministic in-process transport: messages are delivered synchronously unless the test holds a
// link, and a dead rank's connections drop only when the test says so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BaseCommunicator } from './comm.ts';
import { RankFailedError } from './errors.ts';

class World {
  readonly comms: LoopComm[] = [];
  readonly dead = new Set<number>();
  /** Links `src->dst` whose messages wait in `held` until released (a ring not drained yet). */
  readonly holding = new Set<string>();
  readonly held: { src: number; dst: number; tag: number; msg: Uint8Array }[] = [];
  release(): void {
    for (const m of this.held.splice(0)) this.comms[m.dst]!.receive(m.src, m.tag, m.msg);
  }
}

class LoopComm extends BaseCommunicator {
  constructor(readonly world: World, rank: number, size: number) {
    super(rank, size, 10_000);
    world.comms[rank] = this;
  }
  protected transmit(dest: number, tag: number, parts: readonly Uint8Array[], op: string): Promise<void> {
    // Like tcp.ts: a write to a dead peer rejects with reason 'closed' and records nothing itself.
    if (this.world.dead.has(dest) || this.world.dead.has(this.rank)) return Promise.reject(this.failedError(dest, op, this.failureOf(dest) ?? 'closed', 'EPIPE'));
    const n = parts.reduce((a, p) => a + p.byteLength, 0);
    const msg = new Uint8Array(n);
    let o = 0;
    for (const p of parts) { msg.set(p, o); o += p.byteLength; }
    if (this.world.holding.has(`${this.rank}->${dest}`)) this.world.held.push({ src: this.rank, dst: dest, tag, msg });
    else this.world.comms[dest]!.receive(this.rank, tag, msg);
    return Promise.resolve();
  }
  receive(src: number, tag: number, msg: Uint8Array): void {
    this.deliver(src, tag, msg);
  }
  /** The connection to `r` dropped (what a transport reports as 'closed'). */
  dropped(r: number): void {
    this.peerFailed(r, 'closed');
  }
  protected async shutdown(): Promise<void> {
    // Closing drops this rank's connections: every live peer sees it as 'closed'.
    this.world.dead.add(this.rank);
    for (const c of this.world.comms) if (c !== this && !this.world.dead.has(c.rank)) c.dropped(this.rank);
  }
}

test('a send to a dead peer makes it this rank\'s cause: on close the others blame the dead peer, not this rank', async () => {
  const world = new World();
  const [c0, , c2] = [new LoopComm(world, 0, 3), new LoopComm(world, 1, 3), new LoopComm(world, 2, 3)];
  const waiting = c2.recv(0, 5, 'combine').then(() => null, (e: unknown) => e);
  world.dead.add(1); // rank 1 dies; nobody has seen its connections drop yet
  const sent = await c0.send(1, 5, [new Uint8Array(8)], 'combine').then(() => null, (e: unknown) => e);
  assert.ok(sent instanceof RankFailedError && sent.rank === 1 && sent.reason === 'closed', String(sent));
  // Later calls toward rank 1 fail at once (recorded), without a new transmit.
  await assert.rejects(c0.recv(1, 6, 'combine'), (e: unknown) => e instanceof RankFailedError && e.rank === 1);
  await c0.close(); // announces rank 1 as the cause, then its connections drop
  const err = await waiting;
  assert.ok(err instanceof RankFailedError, String(err));
  assert.equal(err.rank, 1, err.message);
  assert.match(err.message, /rank 0 left the group after it/);
  await c2.close();
});

test('a peer that exits after its last operation is no cause: a rank closing after it announces nothing', async () => {
  const world = new World();
  const [c0, c1, c2] = [new LoopComm(world, 0, 3), new LoopComm(world, 1, 3), new LoopComm(world, 2, 3)];
  // Rank 2 waits for rank 1's last message, which is still in flight (its ring not drained yet).
  const waiting = c2.recv(1, 9, 'checks_done');
  world.holding.add('1->2');
  const got0 = c0.recv(1, 9, 'checks_done');
  await Promise.all([c1.send(0, 9, [new Uint8Array([1])], 'checks_done'), c1.send(2, 9, [new Uint8Array([2])], 'checks_done')]);
  assert.deepEqual([...(await got0)], [1]);
  // Rank 1 is done and exits; rank 0 sees its connection drop with nothing waiting on it, then closes too.
  world.dead.add(1);
  c0.dropped(1);
  await c0.close();
  // Rank 1's message reaches rank 2 after all: the wait succeeds instead of failing over rank 1.
  world.release();
  assert.deepEqual([...(await waiting)], [2]);
  await c2.close();
});
