// The wasm matmul paths beyond the op suite's shapes: GEMV (M = 1) and packed GEMM (M > 1) with tails
// on every axis, more than one 256-row / 64-column / 512-K packing block, activations spanning many binades (the FP8
// GEMV pre-scales x per 128-block), 1 and 2 threads. Oracle: float64 product of the exact weights.
// Tolerance: |y - y64| <= 2^-22·(K/16 + 8)·Σ|x·w| + 1e-30 — a bound of f32 summation over K terms,
// tight enough that a wrong scale, a dropped block or a wrong tail shows immediately. It holds for both
// SIMD levels: 'plain' (multiply, then add) and 'relaxed' (fused multiply-add: one rounding fewer).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeBf16, bf16ToF32, f32ToFp8e4m3, FP8_E4M3_TABLE } from '../../tensor/dtypes.ts';
import { WasmMemoryOps } from './backend.ts';
import { WasmRuntime, type SimdLevel } from './runtime.ts';
import type { WeightMatrix } from '../api.ts';
import { randn } from '../deepgemm/testutil.ts';

function check(name: string, x: Float32Array, m: number, dense: Float64Array, n: number, k: number, got: Float32Array): void {
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0, mag = 0;
      for (let q = 0; q < k; q++) { const p = x[i * k + q]! * dense[j * k + q]!; s += p; mag += Math.abs(p); }
      const g = got[i * n + j]!;
      assert.ok(Math.abs(g - s) <= 2 ** -22 * (k / 16 + 8) * mag + 1e-30, `${name} y[${i},${j}] = ${g}, want ${s}`);
    }
  }
}

function fill(ops: WasmMemoryOps, dtype: 'f32' | 'bf16' | 'fp8', n: number, k: number, seed: number): { w: WeightMatrix; dense: Float64Array } {
  const w = ops.allocWeight(dtype, n, k);
  const v = randn(n * k, seed, 0.1);
  const dense = new Float64Array(n * k);
  if (w.dtype === 'f32') { w.data.set(v); dense.set(v); }
  else if (w.dtype === 'bf16') { w.data.set(encodeBf16(v)); w.data.forEach((b, i) => { dense[i] = bf16ToF32(b); }); }
  else {
    const kb = Math.ceil(k / 128);
    for (let i = 0; i < w.scaleInv.length; i++) w.scaleInv[i] = 2 ** -(i % 5) * 1e-3 * (1 + i / 7);
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < k; c++) {
        // Every code magnitude appears, subnormals (|code| < 8) included.
        const q = f32ToFp8e4m3(v[r * k + c]! * 3000);
        w.data[r * k + c] = q;
        dense[r * k + c] = Math.fround(FP8_E4M3_TABLE[q]! * w.scaleInv[Math.floor(r / 128) * kb + Math.floor(c / 128)]!);
      }
    }
  }
  return { w, dense };
}

for (const [threads, simd] of [[1, 'plain'], [2, 'plain'], [1, 'relaxed'], [2, 'relaxed']] as Array<[number, SimdLevel]>) {
  test(`wasm matmul GEMV and GEMM paths match float64 (${threads} thread${threads > 1 ? 's' : ''}, ${simd} SIMD)`, async () => {
    const ops = new WasmMemoryOps(await WasmRuntime.create({ threads, simd }));
    assert.equal(ops.runtime.simd, simd);
    try {
      let seed = 100;
      for (const dtype of ['f32', 'bf16', 'fp8'] as const) {
        for (const [m, n, k] of [[1, 333, 1000], [1, 64, 16], [1, 300, 8195 + 128], [1, 136, 16400], [5, 77, 290], [6, 200, 129], [300, 72, 140], [4, 130, 7], [13, 70, 150], [10, 136, 130], [14, 136, 1100], [300, 72, 1300]] as const) {
          const { w, dense } = fill(ops, dtype, n, k, seed++);
          const x = randn(m * k, seed++);
          // Activations over ~60 binades: blocks of tiny values next to blocks of huge ones.
          for (let i = 0; i < x.length; i++) x[i] = x[i]! * 2 ** (((i >> 7) % 5) * 12 - 24);
          check(`${dtype} [${m},${n},${k}]`, x, m, dense, n, k, ops.matmul(x, m, w));
        }
      }
    } finally {
      await ops.dispose();
    }
  });
}

test('wasm matmul accepts weights and activations that live outside wasm memory', async () => {
  const ops = await WasmMemoryOps.create(1);
  try {
    const n = 40, k = 48, m = 3;
    const w: WeightMatrix = { dtype: 'f32', rows: n, cols: k, data: randn(n * k, 7) };
    const x = randn(m * k, 8);
    check('foreign f32', x, m, Float64Array.from(w.data), n, k, ops.matmul(x, m, w));
    assert.equal(ops.runtime.heap.inUse > 0, true);
    const before = ops.runtime.heap.inUse;
    ops.matmul(x, m, w);
    assert.equal(ops.runtime.heap.inUse, before, 'staging blocks are freed');
  } finally {
    await ops.dispose();
  }
});

test('columns handed out at run time (gemmChunks, gemvChunks, gemmGroupedParts) give the bits of one thread, with 2 and 3 threads', async () => {
  const one = await WasmMemoryOps.create(1);
  const many = [await WasmMemoryOps.create(2), await WasmMemoryOps.create(3)];
  try {
    for (const dtype of ['bf16', 'fp8', 'f32'] as const) {
      // N = 1000 in chunks (chunkCount): the GEMM [37, 1000, 300] in 10 of 104 columns (the last 64), the
      // GEMV [1, 1000, 6400] in 6 of 168 rows, the grouped product [47, 200, 1200] in 10 parts of items.
      const m = 37, n = 1000, k = 300, kv = 6400;
      const x = randn(m * k, 11);
      const ref = fill(one, dtype, n, k, 12).w;
      const want = one.matmul(x, m, ref);
      const xv = randn(kv, 15);
      const refV = fill(one, dtype, n, kv, 16).w;
      const wantRow = one.matmul(xv, 1, refV); // the GEMV path
      const G = 6, count = Int32Array.of(9, 0, 20, 3, 14, 1), start = new Int32Array(G);
      for (let g = 1; g < G; g++) start[g] = start[g - 1]! + count[g - 1]!;
      const rows = start[G - 1]! + count[G - 1]!;
      const gx = randn(rows * 4 * k, 13);
      const gw1 = one.allocGroupedWeight(dtype, G, 200, 4 * k);
      const fillGrouped = (w: typeof gw1): void => {
        const src = randn(w.data.length, 14, 0.1);
        if (w.dtype === 'f32') w.data.set(src);
        else if (w.dtype === 'bf16') w.data.set(encodeBf16(src));
        else { for (let i = 0; i < src.length; i++) w.data[i] = f32ToFp8e4m3(src[i]! * 40); w.scaleInv.fill(0.025); }
      };
      fillGrouped(gw1);
      const gWant = one.groupedMatmul(gx, rows, gw1, { start, count });
      for (const ops of many) {
        const w = fill(ops, dtype, n, k, 12).w;
        assert.deepEqual(ops.matmul(x, m, w), want, `${dtype} matmul, ${ops.runtime.threads} threads`);
        assert.deepEqual(ops.matmul(xv, 1, fill(ops, dtype, n, kv, 16).w), wantRow, `${dtype} GEMV, ${ops.runtime.threads} threads`);
        const gw = ops.allocGroupedWeight(dtype, G, 200, 4 * k);
        fillGrouped(gw);
        assert.deepEqual(ops.groupedMatmul(gx, rows, gw, { start, count }), gWant, `${dtype} grouped, ${ops.runtime.threads} threads`);
      }
    }
  } finally {
    await one.dispose();
    for (const ops of many) await ops.dispose();
  }
});
