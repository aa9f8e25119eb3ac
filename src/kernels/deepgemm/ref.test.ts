// DeepGEMM reference and quantizers against float64 products of the dequantized inputs
// (DeepGEMM's calc_diff < 0.001), plus exact properties of the quantizers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FP8_E4M3_TABLE } from '../../tensor/dtypes.ts';
import { calcDiff, ceilToUe8m0, dequantize, quantizeGrouped, quantizePerBlock, quantizePerToken } from './quant.ts';
import { fp8GemmNt, mGroupedFp8GemmNtContiguous, mGroupedFp8GemmNtMasked, refDeepGemm } from './ref.ts';
import { DeepGemmShapeError } from './types.ts';
import { f64GemmNt, groupedOracle, randn, sample } from './testutil.ts';

test('ceilToUe8m0 rounds up to powers of two', () => {
  assert.equal(ceilToUe8m0(1), 1);
  assert.equal(ceilToUe8m0(0.3), 0.5);
  assert.equal(ceilToUe8m0(1.5), 2);
  assert.equal(ceilToUe8m0(2 ** -20), 2 ** -20);
  assert.equal(ceilToUe8m0(Math.fround(2 ** -20 * 1.0001)), 2 ** -19);
});

test('per-token quantization: scales, codes and round-trip error', () => {
  const rows = 3, cols = 300;
  const x = randn(rows * cols, 1, 3);
  x.fill(0, 128, 256); // an all-zero block gets the 1e-4 floor
  for (const ue8m0 of [false, true]) {
    const q = quantizePerToken(x, rows, cols, { ue8m0 });
    assert.equal(q.scales.length, rows * 3);
    assert.equal(q.scales[1], ue8m0 ? ceilToUe8m0(Math.fround(1e-4 / 448)) : Math.fround(1e-4 / 448));
    const d = dequantize(q);
    for (let r = 0; r < rows; r++) {
      for (let b = 0; b < 3; b++) {
        const s = q.scales[r * 3 + b]!;
        let amax = 0;
        for (let c = b * 128; c < Math.min(cols, b * 128 + 128); c++) amax = Math.max(amax, Math.abs(x[r * cols + c]!));
        if (ue8m0) assert.ok(Number.isInteger(Math.log2(s)));
        assert.ok(s >= Math.fround(Math.max(amax, 1e-4) / 448) * (1 - 1e-7));
        for (let c = b * 128; c < Math.min(cols, b * 128 + 128); c++) {
          const i = r * cols + c;
          // e4m3 keeps 3 mantissa bits: relative error <= 2^-4, absolute <= half a subnormal step.
          assert.ok(Math.abs(d[i]! - x[i]!) <= Math.max(Math.abs(x[i]!) * 2 ** -4, s * 2 ** -10) + 1e-12, `r${r} c${c}`);
        }
      }
    }
  }
});

test('per-block quantization covers 128x128 tiles with partial edges', () => {
  const rows = 200, cols = 130;
  const x = randn(rows * cols, 2);
  const q = quantizePerBlock(x, rows, cols);
  assert.equal(q.scales.length, 2 * 2);
  let amax = 0;
  for (let r = 128; r < 200; r++) for (let c = 128; c < 130; c++) amax = Math.max(amax, Math.abs(x[r * cols + c]!));
  assert.equal(q.scales[3], Math.fround(amax / 448));
  // The largest element of each block maps to ±448 (code 0x7e/0xfe).
  assert.ok(q.data.some((c) => (c & 0x7f) === 0x7e));
  const g = quantizeGrouped(x, 2, 100, cols);
  assert.equal(g.scales.length, 2 * 1 * 2);
  assert.deepEqual(g.data.subarray(0, 100 * cols), quantizePerBlock(x.subarray(0, 100 * cols), 100, cols).data);
});

test('calcDiff is 0 for equal inputs and grows with error', () => {
  const x = randn(1000, 3);
  assert.equal(calcDiff(x, x), 0);
  const y = x.map((v, i) => v * (1 + (i % 2 ? 0.01 : -0.01)));
  assert.ok(calcDiff(x, y) > 1e-5 && calcDiff(x, y) < 1e-3);
  assert.ok(calcDiff(x, x.map((v) => -v)) > 1.9);
});

// DeepSeek-V3 GEMM shapes (N x K). The plain-TS reference is slow, so here N is cut to 128 columns
// (one scale block row; the wasm tests run the full shapes) and M to {1, 64}.
const V3_SHAPES: Array<[number, number]> = [[2112, 7168], [24576, 1536], [32768, 512], [7168, 16384], [4096, 7168], [7168, 2048]];

test('ref fp8GemmNt matches the float64 product (calc_diff < 0.001) on V3 K sizes', () => {
  let seed = 10;
  for (const [, k] of V3_SHAPES) {
    for (const m of [1, 64]) {
      const n = 128;
      const a = quantizePerToken(randn(m * k, seed++), m, k);
      const b = quantizePerBlock(randn(n * k, seed++), n, k);
      const out = fp8GemmNt(a, b);
      const rows = sample(m, 8, seed), cols = sample(n, 32, seed + 1);
      const want = f64GemmNt(dequantize(a), dequantize(b), k, rows, cols);
      const got = Float64Array.from(rows.flatMap((r) => cols.map((c) => out[r * n + c]!)));
      const d = calcDiff(got, want);
      assert.ok(d < 1e-3, `m=${m} k=${k}: calc_diff ${d}`);
      // The f32 result is far closer than the metric's bound: promotion every 128 K keeps it tight.
      assert.ok(d < 1e-6, `m=${m} k=${k}: calc_diff ${d}`);
    }
  }
});

test('ref promotion orders agree to f32 rounding and differ from a wrong scale', () => {
  const m = 3, n = 130, k = 300;
  const a = quantizePerToken(randn(m * k, 40), m, k);
  const b = quantizePerBlock(randn(n * k, 41), n, k);
  const s = fp8GemmNt(a, b, undefined, { order: 'sequential' });
  const l = fp8GemmNt(a, b, undefined, { order: 'lanes16' });
  for (let i = 0; i < s.length; i++) assert.ok(Math.abs(s[i]! - l[i]!) <= 1e-5 * (1 + Math.abs(s[i]!)), `${i}`);
  const want = f64GemmNt(dequantize(a), dequantize(b), k, [0, 1, 2], Array.from({ length: n }, (_, i) => i));
  assert.ok(calcDiff(s, want) < 1e-7);
  const b2 = { ...b, scales: b.scales.map((v, i) => (i === 1 ? v * 2 : v)) };
  assert.ok(calcDiff(fp8GemmNt(a, b2), want) > 1e-4, 'a wrong block scale must show');
});

test('ref grouped contiguous and masked match the float64 oracle; padding rows are 0', () => {
  const groups = 5, n = 160, k = 256, seg = [128, 0, 256, 128, 128];
  const rowsTotal = seg.reduce((a, b) => a + b, 0);
  const mIndices = new Int32Array(rowsTotal);
  let r0 = 0;
  seg.forEach((len, g) => {
    // Each 128-row segment holds some real rows and then -1 padding rows.
    for (let r = 0; r < len; r++) mIndices[r0 + r] = r % 128 < 100 - 10 * g ? g : -1;
    r0 += len;
  });
  const a = quantizePerToken(randn(rowsTotal * k, 50), rowsTotal, k);
  const b = quantizeGrouped(randn(groups * n * k, 51), groups, n, k);
  const out = new Float32Array(rowsTotal * n).fill(7);
  mGroupedFp8GemmNtContiguous(a, b, mIndices, out);
  const rows = sample(rowsTotal, 40, 52), cols = sample(n, 40, 53);
  const want = groupedOracle(a, b, (r) => mIndices[r]!, rows, cols);
  const got = Float64Array.from(rows.flatMap((r) => cols.map((c) => out[r * n + c]!)));
  assert.ok(calcDiff(got, want) < 1e-6);
  mIndices.forEach((g, r) => { if (g < 0) assert.ok(out.subarray(r * n, (r + 1) * n).every((v) => v === 0)); });

  const mMax = 48, maskedM = new Int32Array([0, 48, 17, 1, 30]);
  const am = quantizePerToken(randn(groups * mMax * k, 54), groups * mMax, k);
  const outM = new Float32Array(groups * mMax * n).fill(7);
  mGroupedFp8GemmNtMasked(am, b, maskedM, mMax, outM);
  const rowsM = Array.from({ length: groups * mMax }, (_, i) => i).filter((r) => r % mMax < maskedM[Math.floor(r / mMax)]!);
  const wantM = groupedOracle(am, b, (r) => Math.floor(r / mMax), rowsM, cols);
  const gotM = Float64Array.from(rowsM.flatMap((r) => cols.map((c) => outM[r * n + c]!)));
  assert.ok(calcDiff(gotM, wantM) < 1e-6);
  for (let r = 0; r < groups * mMax; r++) {
    if (r % mMax >= maskedM[Math.floor(r / mMax)]!) assert.ok(outM.subarray(r * n, (r + 1) * n).every((v) => v === 7), `row ${r} untouched`);
  }
});

test('ref weight-only and bf16 grouped variants match dense products', () => {
  const groups = 3, n = 140, k = 200, m = 6;
  const w = randn(groups * n * k, 60);
  const b = quantizeGrouped(w, groups, n, k);
  const x = randn(m * k, 61);
  const mIndices = new Int32Array([2, 0, -1, 1, 2, 0]);
  const out = refDeepGemm.mGroupedFp8WeightGemmNtContiguous(x, m, b, mIndices);
  for (let r = 0; r < m; r++) {
    const g = mIndices[r]!;
    if (g < 0) { assert.ok(out.subarray(r * n, (r + 1) * n).every((v) => v === 0)); continue; }
    const deq = dequantize({ rows: n, cols: k, data: b.data.subarray(g * n * k, (g + 1) * n * k), scales: b.scales.subarray(g * 2 * 2, (g + 1) * 2 * 2), scaleBlock: '128x128' });
    const want = f64GemmNt(x.subarray(r * k, (r + 1) * k), deq, k, [0], Array.from({ length: n }, (_, i) => i));
    for (let j = 0; j < n; j++) assert.ok(Math.abs(out[r * n + j]! - want[j]!) <= 1e-5 * Math.sqrt(k) * (1 + Math.abs(want[j]!)));
  }
  const bits = new Uint16Array(groups * n * k).map((_, i) => (Math.fround(w[i]!) === 0 ? 0 : new Uint32Array(new Float32Array([w[i]!]).buffer)[0]! >>> 16));
  const bb = { groups, n, k, data: bits };
  const masked = refDeepGemm.mGroupedBf16GemmNtMasked(randn(groups * 2 * k, 62), bb, new Int32Array([2, 0, 1]), 2);
  assert.equal(masked.length, groups * 2 * n);
  assert.ok(masked.subarray(2 * n, 4 * n).every((v) => v === 0));
  assert.ok(masked.subarray(0, n).some((v) => v !== 0));
});

test('bad shapes throw DeepGemmShapeError', () => {
  const a = quantizePerToken(randn(2 * 128, 70), 2, 128);
  const b = quantizePerBlock(randn(4 * 256, 71), 4, 256);
  assert.throws(() => fp8GemmNt(a, b), DeepGemmShapeError);
  assert.throws(() => fp8GemmNt(b, b), DeepGemmShapeError);
  const g = quantizeGrouped(randn(2 * 4 * 128, 72), 2, 4, 128);
  assert.throws(() => mGroupedFp8GemmNtContiguous(a, g, new Int32Array([0, 2])), /mIndices\[1\]/);
  assert.throws(() => mGroupedFp8GemmNtMasked(a, g, new Int32Array([2, 2]), 1), DeepGemmShapeError);
  assert.ok(FP8_E4M3_TABLE.length === 256);
});
