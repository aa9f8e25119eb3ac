// Ranks receive the address table at their own pace: a peer may dial this rank before it has called
// connect(). That connection must count (and its messages be kept), not be accepted by the server with
// nobody listening — which left this rank waiting until the connect timeout and the peer's messages lost
// (the TCP fault test's stall under load). Forced here by ordering: rank 1 connects and sends before
// rank 0 calls connect().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TcpCommunicator } from './tcp.ts';

test('a peer that dials before this rank called connect() is accepted, and its first message kept', { timeout: 20_000 }, async () => {
  const [c0, c1] = await Promise.all([0, 1].map((rank) => TcpCommunicator.listen({ rank, size: 2, timeoutMs: 3_000 })));
  try {
    const addrs = [c0!.address, c1!.address];
    await c1!.connect(addrs); // rank 1 has no higher rank to wait for: done once its dial to rank 0 opened
    await c1!.send(0, 9, [new Uint8Array([1, 2, 3, 4])], 'early');
    const t0 = Date.now();
    await c0!.connect(addrs);
    assert.ok(Date.now() - t0 < 2_000, 'rank 0 waited for a connection it already had');
    assert.deepEqual([...(await c0!.recv(1, 9, 'early'))], [1, 2, 3, 4]);
    // And the mesh works both ways.
    await c0!.send(1, 10, [new Uint8Array([5])], 'reply');
    assert.deepEqual([...(await c1!.recv(0, 10, 'reply'))], [5]);
  } finally {
    await Promise.all([c0!.close(), c1!.close()]);
  }
});

test('a message sent the moment the accepting side attaches reaches the dialing side', { timeout: 20_000 }, async () => {
  // Rank 0 sends as soon as its connect() resolves (on rank 1's connection): the frame follows the
  // handshake response in the same read, so the dialer sees it right after its 'open' event. The dialer
  // must already listen then (it used to attach one microtask later, and the first message was lost).
  for (let round = 0; round < 5; round++) {
    const [c0, c1] = await Promise.all([0, 1].map((rank) => TcpCommunicator.listen({ rank, size: 2, timeoutMs: 2_000 })));
    try {
      const addrs = [c0!.address, c1!.address];
      const sent = c0!.connect(addrs).then(() => c0!.send(1, 11, [new Uint8Array([round, 7])], 'first'));
      await c1!.connect(addrs);
      await sent;
      assert.deepEqual([...(await c1!.recv(0, 11, 'first'))], [round, 7]);
    } finally {
      await Promise.all([c0!.close(), c1!.close()]);
    }
  }
});
