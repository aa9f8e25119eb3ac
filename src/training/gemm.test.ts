// The training GEMM engine: f32 products go to the kernels' matmul / groupedMatmul (checked with a spy)
// and agree with the float64 loops; the transposed forms (dx = dy·W, dW = dyᵀ·x) by hand.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { mulberry32 } from '../tensor/random.ts';
import { Gemm, GemmError, ntLoops, transpose } from './gemm.ts';

const r = mulberry32(17);
const rand64 = (n: number) => Float64Array.from({ length: n }, () => r() * 2 - 1);

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= tol, `[${i}] ${a[i]} vs ${b[i]}`);
}

test('f32 products run on the wasm kernels (grouped ones through groupedMatmul) and match float64 loops', async () => {
  const k = await loadBackend('wasm', { threads: 1 });
  try {
    const calls = { matmul: 0, groupedMatmul: 0 };
    const spy: Kernels = {
      ...k,
      matmul: (...a) => { calls.matmul++; return k.matmul(...a); },
      groupedMatmul: (...a) => { calls.groupedMatmul++; return k.groupedMatmul(...a); },
    };
    const g32 = new Gemm(spy), g64 = new Gemm(null);
    const M = 37, N = 19, K = 70;
    const a = rand64(M * K), b = rand64(N * K);
    close(g32.nt(Float32Array.from(a), M, Float32Array.from(b), N, K), g64.nt(a, M, b, N, K), 1e-5);
    const dy = rand64(M * N);
    close(g32.nn(Float32Array.from(dy), M, Float32Array.from(b), N, K), g64.nn(dy, M, b, N, K), 1e-5);
    close(g32.tn(Float32Array.from(dy), Float32Array.from(a), M, N, K), g64.tn(dy, a, M, N, K), 1e-5);
    assert.deepEqual(calls, { matmul: 3, groupedMatmul: 0 });
    const G = 3, seg = { start: Int32Array.of(0, 10, 10), count: Int32Array.of(10, 0, 27) };
    const w = rand64(G * N * K);
    close(g32.groupedNt(Float32Array.from(a), M, Float32Array.from(w), G, N, K, seg), g64.groupedNt(a, M, w, G, N, K, seg), 1e-5);
    assert.deepEqual(calls, { matmul: 3, groupedMatmul: 1 });
    assert.equal(g32.kernelCalls, 4);
    assert.throws(() => g64.nt(Float32Array.from(a), M, Float32Array.from(b), N, K), GemmError);
    assert.throws(() => g32.nt(Float32Array.from(a), M, b, N, K), GemmError);
  } finally {
    await k.dispose();
  }
});

test('nn and tn are dy·W and dyᵀ·x; transpose of a non-square matrix', () => {
  const g = new Gemm(null);
  // x [2, 3], W [2, 3] (out 2, in 3), dy [2, 2].
  const x = Float64Array.of(1, 2, 3, 4, 5, 6), w = Float64Array.of(1, 0, -1, 2, 1, 0), dy = Float64Array.of(1, 2, 3, 4);
  assert.deepEqual([...ntLoops(x, 2, w, 2, 3)], [-2, 4, -2, 13]);
  assert.deepEqual([...g.nn(dy, 2, w, 2, 3)], [5, 2, -1, 11, 4, -3]);
  assert.deepEqual([...g.tn(dy, x, 2, 2, 3)], [13, 17, 21, 18, 24, 30]);
  assert.deepEqual([...transpose(x, 2, 3)], [1, 4, 2, 5, 3, 6]);
});
