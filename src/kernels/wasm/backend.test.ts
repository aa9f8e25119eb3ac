// The wasm backend's staging: outputs that live in wasm memory are written in place (no copy), while
// an output overlapping an input falls back to the scratch block; element/row-wise ops may run exactly
// in place. Every result is compared bit for bit with the same op on plain JS arrays (same kernel, so
// identical), and the scratch block does not grow once warm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WasmMemoryOps } from './backend.ts';
import { randn } from '../deepgemm/testutil.ts';

test('wasm ops write into outputs in wasm memory, in place when aliased, and never through an overlap', async () => {
  const ops = await WasmMemoryOps.create(1);
  try {
    const heap = ops.runtime.heap;
    const wasmF32 = (src: Float32Array): Float32Array => {
      const v = ops.allocWeight('f32', 1, src.length).data as Float32Array;
      v.set(src);
      return v;
    };
    for (const [m, n, k] of [[1, 40, 48], [5, 72, 33]] as const) {
      const w = ops.allocWeight('bf16', n, k);
      const wf = randn(n * k, 3);
      for (let i = 0; i < w.data.length; i++) w.data[i] = new Uint32Array(Float32Array.of(wf[i]!).buffer)[0]! >>> 16;
      const xJs = randn(m * k, 4);
      const want = ops.matmul(xJs, m, w);
      // x and out both in wasm memory, disjoint: written in place.
      const x = wasmF32(xJs);
      const out = ops.allocWeight('f32', 1, m * n).data as Float32Array;
      const before = heap.inUse;
      assert.equal(ops.matmul(x, m, w, out), out);
      assert.deepEqual(out, want);
      assert.equal(heap.inUse, before, 'no staging block for in-memory operands');
      // out overlapping x (shifted by 8 floats): the kernel must not clobber x while reading it.
      const shared = wasmF32(new Float32Array(m * k + m * n + 8));
      shared.set(xJs, 0);
      const xo = shared.subarray(0, m * k), oo = shared.subarray(m * k - 8, m * k - 8 + m * n);
      ops.matmul(xo, m, w, oo);
      assert.deepEqual(oo, want);
    }
    const rows = 3, d = 40;
    const xJs = randn(rows * d, 5), wt = randn(d, 6);
    const want = ops.rmsNorm(xJs, rows, wt, 1e-6);
    const x = wasmF32(xJs);
    assert.deepEqual(ops.rmsNorm(x, rows, wt, 1e-6, x), want, 'rmsNorm exactly in place');
    const g = randn(37, 7), u = randn(37, 8);
    const sm = ops.siluMul(g, u);
    const gw = wasmF32(g);
    assert.deepEqual(ops.siluMul(gw, wasmF32(u), gw), sm, 'siluMul into its gate');
    // A partial overlap of out and an input is staged, not computed in place.
    const buf = wasmF32(new Float32Array(41));
    buf.set(g, 0);
    const shifted = buf.subarray(4, 41);
    ops.siluMul(buf.subarray(0, 37), u, shifted);
    assert.deepEqual(shifted, sm);
  } finally {
    await ops.dispose();
  }
});

test('large rmsNorm and siluMul split across 2 threads give the 1-thread bits (also in place)', async () => {
  const one = await WasmMemoryOps.create(1), two = await WasmMemoryOps.create(2);
  try {
    const rows = 301, d = 1024; // rows·d above ROW_OP_PARALLEL_MIN; an odd row count
    const x = randn(rows * d, 9), w = randn(d, 10);
    const want = one.rmsNorm(x, rows, w, 1e-6);
    assert.deepEqual(two.rmsNorm(x, rows, w, 1e-6), want);
    const xin = two.allocWeight('f32', 1, rows * d).data as Float32Array;
    xin.set(x);
    assert.deepEqual(two.rmsNorm(xin, rows, w, 1e-6, xin), want, 'in place');
    const n = 50_001, g = randn(n, 11), u = randn(n, 12);
    const sm = one.siluMul(g, u);
    assert.deepEqual(two.siluMul(g, u), sm);
    const gin = two.allocWeight('f32', 1, n).data as Float32Array;
    gin.set(g);
    assert.deepEqual(two.siluMul(gin, u, gin), sm, 'into its gate');
  } finally {
    await one.dispose();
    await two.dispose();
  }
});
