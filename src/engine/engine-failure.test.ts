// A runner whose forward throws (a wasm worker died, an expert rank failed, a read error): every live
// request ends with EngineFailedError naming the cause (after the deltas it already produced), new requests
// are refused with EngineUnavailableError while a fresh runner is built, and then served again — or, with
// no rebuild (or a rebuild that fails too), the engine is 'failed' for good. Never a hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultSamplingParams as P, type Delta, type RunnerBatch } from './contracts.ts';
import { Engine, EngineFailedError, EngineUnavailableError, type EngineHealth, type EngineRecovery } from './engine.ts';
import { FakeRunner, byteDecoder, greedyReference } from './testing/fake-runner.ts';
import { WasmWorkerDiedError } from '../kernels/wasm/pool.ts';
import { RankFailedError } from '../parallel/deepep/errors.ts';
import { SafetensorsError } from '../weights/errors.ts';

const V = 300;
const tok = { ...byteDecoder, eosTokenIds: [299] };
const CFG = { maxModelLen: 1024, maxNumSeqs: 8, maxNumBatchedTokens: 256, maxWaiting: 64 };
const prompt = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (i * 37 + seed * 11) % 256);

/** FakeRunner whose forward number `failAt` (1-based) throws `error`; records dispose(). */
class FaultyRunner extends FakeRunner {
  disposed = false;
  constructor(readonly failAt: number | null, readonly error: Error) {
    super(V, 64);
  }
  override async forward(batch: RunnerBatch): Promise<Float32Array> {
    if (this.failAt !== null && this.forwards + 1 >= this.failAt) {
      this.forwards++;
      throw this.error;
    }
    return super.forward(batch);
  }
  dispose(): void {
    this.disposed = true;
  }
}

/** Consumes a request: its token ids, then how it ended (finish delta or thrown error). */
async function consume(it: AsyncIterable<Delta>): Promise<{ ids: number[]; error: unknown; finish: Delta | null }> {
  const ids: number[] = [];
  let finish: Delta | null = null;
  try {
    for await (const d of it) {
      if (d.type === 'text') ids.push(...d.tokenIds);
      if (d.type === 'finish') finish = d;
    }
  } catch (e) {
    return { ids, error: e, finish };
  }
  return { ids, error: null, finish };
}

function healthLog(e: Engine): { log: EngineHealth[]; when: (h: EngineHealth) => Promise<void> } {
  const log: EngineHealth[] = [];
  const waiters: [EngineHealth, () => void][] = [];
  e.onHealthChange((h) => {
    log.push(h);
    for (const [want, r] of waiters) if (want === h) r();
  });
  return { log, when: (h) => new Promise((r) => { if (e.health === h) r(); else waiters.push([h, r]); }) };
}

test('a forward that throws fails every live request with EngineFailedError; the runner is rebuilt and serves again', async () => {
  const dead = new WasmWorkerDiedError(1, 'exited with code 3');
  const first = new FaultyRunner(6, dead);
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  const rebuilt: FaultyRunner[] = [];
  const recovery: EngineRecovery = {
    rebuildRunner: async (cause) => {
      assert.equal(cause, dead);
      assert.ok(first.disposed, 'the failed runner is disposed before its replacement is built');
      await gate;
      const r = new FaultyRunner(null, dead);
      rebuilt.push(r);
      return r;
    },
  };
  const e = new Engine(first, tok, CFG, recovery);
  const h = healthLog(e);
  // A finished request leaves full blocks in the prefix cache (their KV lives in the first runner).
  const long = prompt(150, 1);
  const warm = await consume(e.generate({ prompt: long, params: P({ temperature: 0, maxTokens: 2, ignoreEos: true }) }));
  assert.equal(warm.error, null);
  // Two requests in flight when forward 6 throws.
  const [a, b] = await Promise.all([
    consume(e.generate({ prompt: prompt(20, 2), params: P({ temperature: 0, maxTokens: 50, ignoreEos: true }) })),
    consume(e.generate({ prompt: prompt(30, 3), params: P({ temperature: 0, maxTokens: 50, ignoreEos: true, n: 2 }) })),
  ]);
  for (const r of [a, b]) {
    assert.ok(r.error instanceof EngineFailedError, String(r.error));
    assert.equal(r.error.cause, dead);
    assert.equal(r.error.recovering, true);
    assert.match(r.error.message, /WasmWorkerDiedError: wasm worker 1 died/);
    assert.equal(r.finish, null);
  }
  // Deltas produced before the failure were delivered first (forwards 3..5 sampled tokens).
  assert.ok(a.ids.length > 0 && a.ids.length < 50, `${a.ids.length} tokens before the failure`);
  assert.equal(e.health, 'recovering');
  assert.throws(() => e.generate({ prompt: [1, 2], params: P() }), (x: unknown) => x instanceof EngineUnavailableError && x.health === 'recovering' && x.cause === dead);
  release();
  await h.when('ok');
  assert.deepEqual(h.log, ['recovering', 'ok']);
  assert.equal(e.runner, rebuilt[0]);
  assert.equal(e.recoveries, 1);
  // Served again, and correctly: the prefix cache of the old runner was dropped (the new runner's cache is
  // empty, so a stale hit would read nothing and change the output).
  const again = await consume(e.generate({ prompt: long, params: P({ temperature: 0, maxTokens: 12, ignoreEos: true }) }));
  assert.equal(again.error, null);
  assert.deepEqual(again.ids, greedyReference(long, 12, V));
});

test('no rebuild configured: the engine is failed for good (in-flight error, then EngineUnavailableError)', async () => {
  const lost = new RankFailedError(2, 'dispatch', 'closed');
  const e = new Engine(new FaultyRunner(3, lost), tok, CFG);
  const h = healthLog(e);
  const r = await consume(e.generate({ prompt: prompt(10, 4), params: P({ temperature: 0, maxTokens: 40, ignoreEos: true }) }));
  assert.ok(r.error instanceof EngineFailedError && r.error.cause === lost && r.error.recovering === false, String(r.error));
  assert.deepEqual(h.log, ['failed']);
  assert.throws(() => e.generate({ prompt: [1], params: P() }), (x: unknown) => x instanceof EngineUnavailableError && x.health === 'failed');
  await e.drain(); // nothing live: resolves at once
});

test('a rebuild that fails (a read error reloading the weights) leaves the engine failed with that error', async () => {
  const io = new SafetensorsError('io', '/m/model.safetensors', 'short read: the file changed under us', 'lm_head.weight');
  const e = new Engine(new FaultyRunner(1, new WasmWorkerDiedError(1, 'exited')), tok, CFG, { rebuildRunner: async () => { throw io; } });
  const h = healthLog(e);
  const r = await consume(e.generate({ prompt: prompt(5, 5), params: P({ maxTokens: 3 }) }));
  assert.ok(r.error instanceof EngineFailedError);
  await h.when('failed');
  assert.deepEqual(h.log, ['recovering', 'failed']);
  assert.equal(e.lastError, io);
  assert.throws(() => e.generate({ prompt: [1], params: P() }), (x: unknown) => x instanceof EngineUnavailableError && x.cause === io);
});

test('a runner that keeps failing is rebuilt at most maxConsecutiveFailures times', async () => {
  const err = new WasmWorkerDiedError(1, 'exited');
  let builds = 0;
  const e = new Engine(new FaultyRunner(1, err), tok, CFG, {
    maxConsecutiveFailures: 2,
    rebuildRunner: async () => { builds++; return new FaultyRunner(1, err); },
  });
  const h = healthLog(e);
  for (let i = 0; i < 3; i++) {
    await h.when('ok');
    const r = await consume(e.generate({ prompt: [1, 2, 3], params: P({ maxTokens: 2 }) }));
    assert.ok(r.error instanceof EngineFailedError);
    assert.equal(r.error.recovering, i < 2);
  }
  assert.equal(e.health, 'failed');
  assert.equal(builds, 2);
});
