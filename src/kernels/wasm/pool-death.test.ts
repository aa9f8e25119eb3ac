// A worker that dies INSIDE an op (not between ops): the op itself throws WasmWorkerDiedError (the dead
// worker's share was never computed), the pool stays broken, and dispose() still returns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WasmRuntime } from './runtime.ts';
import { WasmPool, WasmWorkerDiedError } from './pool.ts';

test('pool: a worker dying inside an op makes that op throw WasmWorkerDiedError; later ops too; dispose returns', async () => {
  const rt = await WasmRuntime.create({ threads: 3 });
  try {
    const k = 16, x = rt.heap.alloc(k * 4), y = rt.heap.alloc(64);
    rt.pool.run('kernels', 'gemvF32', (t) => [x, x, y, k, t, t + 1]);
    WasmPool.dieInNextRunForTest(2);
    assert.throws(() => rt.pool.run('kernels', 'gemvF32', (t) => [x, x, y, k, t, t + 1]),
      (e: unknown) => e instanceof WasmWorkerDiedError && e.worker === 2 && /exited with code 3/.test(e.message));
    assert.throws(() => rt.pool.run('kernels', 'gemvF32', (t) => [x, x, y, k, t, t + 1]), WasmWorkerDiedError);
    // Broken for good, even for an op that would not reach the workers.
    assert.throws(() => rt.pool.run('kernels', 'gemvF32', (t) => (t === 0 ? [x, x, y, k, 0, 1] : null)), WasmWorkerDiedError);
  } finally {
    WasmPool.dieInNextRunForTest(0);
    await rt.dispose();
  }
});
