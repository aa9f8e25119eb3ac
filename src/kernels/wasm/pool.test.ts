// Thread pool and heap: ops run on every participant, failures surface as typed errors (never a
// hang), the heap aligns/reuses/coalesces and views survive memory growth.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WasmRuntime } from './runtime.ts';
import { WasmHeap, WasmOutOfMemoryError } from './heap.ts';
import { poolSpinPolls, SPIN_ENV, WasmWorkerDiedError, WasmWorkerError } from './pool.ts';
import { splitColumns } from './matmul.ts';

test('pool: each participant computes its own column range of one product', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const n = 50, k = 32;
    const x = rt.heap.alloc(k * 4), w = rt.heap.alloc(n * k * 4), y = rt.heap.alloc(n * 4);
    rt.heap.f32(x, k).fill(1);
    rt.heap.f32(w, n * k).forEach((_, i, a) => { a[i] = Math.floor(i / k); });
    const ranges = splitColumns(n, 2);
    assert.deepEqual(ranges, [[0, 32], [32, 50]]);
    rt.pool.run('kernels', 'gemvF32', (t) => { const r = ranges[t]; return r ? [x, w, y, k, r[0], r[1]] : null; });
    assert.deepEqual(Array.from(rt.heap.f32(y, n)), Array.from({ length: n }, (_, j) => j * k));
  } finally {
    await rt.dispose();
  }
});

test('pool: a trap in a worker is a WasmWorkerError and the pool keeps working', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const k = 16, x = rt.heap.alloc(k * 4), y = rt.heap.alloc(64);
    // Worker 1 reads weights 2 GiB away (the memory is far smaller): out of bounds, the wasm traps.
    assert.throws(() => rt.pool.run('kernels', 'gemvF32', (t) => (t === 0 ? [x, x, y, k, 0, 1] : [x, 0x7fffff00, y, k, 1, 2])),
      (e: unknown) => e instanceof WasmWorkerError && e.worker === 1 && /out of bounds/.test(e.detail));
    rt.pool.run('kernels', 'gemvF32', (t) => [x, x, y, k, t, t + 1]);
  } finally {
    await rt.dispose();
  }
});

test('pool: a worker that dies makes the next op throw WasmWorkerDiedError instead of hanging', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    await rt.pool.killWorkerForTest(1);
    const k = 16, x = rt.heap.alloc(k * 4), y = rt.heap.alloc(64);
    const t0 = Date.now();
    assert.throws(() => rt.pool.run('kernels', 'gemvF32', (t) => [x, x, y, k, t, t + 1]), WasmWorkerDiedError);
    assert.throws(() => rt.pool.run('kernels', 'gemvF32', (t) => [x, x, y, k, t, t + 1]), WasmWorkerDiedError);
    assert.ok(Date.now() - t0 < 5000);
  } finally {
    await rt.dispose();
  }
});

test('pool: workers poll SEEKD_POOL_SPIN times before sleeping (bad values are a RangeError); spinning or not, ops and stop work', async () => {
  const saved = process.env[SPIN_ENV];
  try {
    delete process.env[SPIN_ENV];
    assert.equal(poolSpinPolls(), 20000);
    process.env[SPIN_ENV] = '0';
    assert.equal(poolSpinPolls(), 0);
    for (const bad of ['-1', '1.5', 'fast', '1e400']) {
      process.env[SPIN_ENV] = bad;
      assert.throws(() => poolSpinPolls(), (e: unknown) => e instanceof RangeError && e.message.includes(SPIN_ENV) && e.message.includes(bad));
    }
    // Workers that always sleep at once, and workers that would poll for minutes: each op is still seen
    // (a poll ends when the sequence word moves) and dispose() still stops them.
    for (const spin of ['0', '1000000000']) {
      process.env[SPIN_ENV] = spin;
      const rt = await WasmRuntime.create({ threads: 2 });
      try {
        const n = 16, k = 8;
        const x = rt.heap.alloc(k * 4), w = rt.heap.alloc(n * k * 4), y = rt.heap.alloc(n * 4);
        rt.heap.f32(w, n * k).forEach((_, i, a) => { a[i] = Math.floor(i / k); });
        for (let r = 1; r <= 50; r++) {
          rt.heap.f32(x, k).fill(r);
          rt.pool.run('kernels', 'gemvF32', (t) => [x, w, y, k, t * 8, t * 8 + 8]);
          assert.deepEqual(Array.from(rt.heap.f32(y, n)), Array.from({ length: n }, (_, j) => j * k * r), `spin ${spin}, op ${r}`);
        }
      } finally {
        await rt.dispose();
      }
    }
  } finally {
    if (saved === undefined) delete process.env[SPIN_ENV];
    else process.env[SPIN_ENV] = saved;
  }
});

test('heap: 64-byte alignment, reuse, coalescing, growth keeps old views valid', () => {
  const memory = new WebAssembly.Memory({ initial: 1, maximum: 64, shared: true });
  const h = new WasmHeap(memory, 100, 64);
  const a = h.alloc(10), b = h.alloc(100), c = h.alloc(64);
  assert.ok([a, b, c].every((p) => p % 64 === 0));
  assert.deepEqual([b - a, c - b], [64, 128]);
  const va = h.f32(a, 2);
  va[0] = 42;
  h.free(b);
  assert.equal(h.alloc(64), b, 'first fit reuses the freed block');
  const big = h.alloc(3 << 20); // grows the memory past its first page
  assert.ok(memory.buffer.byteLength >= big + (3 << 20));
  assert.equal(va[0], 42, 'a view made before growth still reads the same bytes');
  h.f32(a, 1)[0] = 7;
  assert.equal(va[0], 7);
  assert.ok(h.owns(va) && h.owns(h.f32(big, 1)) && !h.owns(new Float32Array(4)));
  h.free(big);
  h.free(c);
  h.free(b);
  h.free(a);
  assert.equal(h.inUse, 0);
  assert.equal(h.alloc(200), a, 'everything coalesced back');
  assert.throws(() => h.alloc(8 << 20), WasmOutOfMemoryError);
  assert.throws(() => h.free(12345), RangeError);
});
