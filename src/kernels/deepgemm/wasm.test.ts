// The wasm DeepGEMM port (1 and 2 threads) against (a) float64 products of the dequantized inputs with
// DeepGEMM's metric calc_diff < 0.001 on DeepSeek-V3 shapes, and (b) the plain-TS ref with the same
// promotion order, bit for bit (every FP8 product is exact in f32 and both sum in the same order with
// the same rounding, so there is nothing to tolerate).
// Both SIMD levels: 'plain' at 1 and 2 threads, 'relaxed' (fused multiply-adds) at 2 threads; FP8 x FP8
// products are exact in f32, so a fused multiply-add rounds like a multiply then an add and the
// bit-for-bit comparisons hold on both levels.
// Sizes: N×K are V3's full shapes at M in {1, 64} (and M = 128 with 2 threads); M = 4096 runs on two
// K sizes with N cut to 128 columns (2 cores: the full 4096-row products would take minutes). The float64 oracle is evaluated on
// sampled rows/columns (all K terms each).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { FP8_E4M3_TABLE } from '../../tensor/dtypes.ts';
import { calcDiff, quantizeGrouped, quantizePerBlock, quantizePerToken } from './quant.ts';
import * as ref from './ref.ts';
import { refDeepGemm } from './ref.ts';
import { BLOCK, ceilDiv, DeepGemmShapeError, type Fp8Matrix, type GroupedFp8Weights } from './types.ts';
import { WasmDeepGemm } from './wasm.ts';
import { WasmRuntime, type SimdLevel } from '../wasm/runtime.ts';
import { randn, rng, sample } from './testutil.ts';

const V3_SHAPES: Array<[number, number]> = [[2112, 7168], [24576, 1536], [32768, 512], [7168, 16384], [4096, 7168], [7168, 2048]];

/** Random FP8 weights [rows, cols] (all finite codes) with random 128x128 scales, allocated in wasm memory. */
function randomWeights(dg: WasmDeepGemm, rows: number, cols: number, seed: number): Fp8Matrix {
  const b = dg.allocFp8Matrix(rows, cols, '128x128');
  const u = rng(seed);
  // Random codes with bit 6 cleared: exponent field <= 7, so every sign, subnormal and normal
  // magnitude in [2^-9, 1.875] appears and no NaN code (exponent 15) can.
  const w = new Uint32Array(b.data.buffer, b.data.byteOffset, b.data.length >> 2);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < w.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    w[i] = (s >>> 0) & 0xbfbfbfbf;
  }
  for (let i = w.length * 4; i < b.data.length; i++) b.data[i] = i & 0x3f;
  for (let i = 0; i < b.scales.length; i++) b.scales[i] = (0.5 + u()) / 448;
  return b;
}

/** float64 D[i, j] for sampled rows/cols, dequantizing on the fly. */
function oracle(a: Fp8Matrix, b: Fp8Matrix, rows: number[], cols: number[]): Float64Array {
  const k = a.cols, kb = ceilDiv(k, BLOCK);
  const out = new Float64Array(rows.length * cols.length);
  rows.forEach((i, x) => cols.forEach((j, y) => {
    let s = 0;
    for (let c = 0; c < k; c++) {
      s += FP8_E4M3_TABLE[a.data[i * k + c]!]! * a.scales[i * kb + (c >> 7)]! * FP8_E4M3_TABLE[b.data[j * k + c]!]! * b.scales[(j >> 7) * kb + (c >> 7)]!;
    }
    out[x * cols.length + y] = s;
  }));
  return out;
}

function picked(out: Float32Array, n: number, rows: number[], cols: number[]): Float64Array {
  return Float64Array.from(rows.flatMap((i) => cols.map((j) => out[i * n + j]!)));
}

function assertBitwise(name: string, got: Float32Array, want: Float32Array): void {
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) assert.fail(`${name}: element ${i} is ${got[i]}, ref ${want[i]}`);
  }
}

const CONFIGS: Array<[number, SimdLevel]> = [[1, 'plain'], [2, 'plain'], [2, 'relaxed']];
for (const [threads, simd] of CONFIGS) {
  let dg: WasmDeepGemm;
  before(async () => { dg = new WasmDeepGemm(await WasmRuntime.create({ threads, simd }), true); });
  after(async () => { await dg.dispose(); });

  const ms = threads === 1 ? [1, 64] : [1, 64, 128];
  test(`wasm fp8GemmNt on V3 shapes, M in {${ms.join(', ')}}: calc_diff < 0.001 (${threads} thread(s), ${simd} SIMD)`, () => {
    let seed = 1 + threads * 1000;
    for (const [n, k] of V3_SHAPES) {
      const b = randomWeights(dg, n, k, seed++);
      for (const m of ms) {
        const a = quantizePerToken(randn(m * k, seed++), m, k);
        const out = dg.fp8GemmNt(a, b);
        const rows = sample(m, 4, seed), cols = sample(n, 48, seed + 1);
        const d = calcDiff(picked(out, n, rows, cols), oracle(a, b, rows, cols));
        assert.ok(d < 1e-3, `[${m}, ${n}, ${k}] calc_diff ${d}`);
        assert.ok(d < 1e-6, `[${m}, ${n}, ${k}] calc_diff ${d} (f32 promotion every 128 K keeps it far tighter)`);
      }
      dg.runtime.heap.free(b.data.byteOffset);
      dg.runtime.heap.free(b.scales.byteOffset);
    }
  });

  test(`wasm fp8GemmNt at M = 4096 (N cut to 128 columns) (${threads} thread(s), ${simd} SIMD)`, () => {
    let seed = 50 + threads;
    for (const k of [512, 2048]) {
      const m = 4096, n = 128;
      const b = randomWeights(dg, n, k, seed++);
      const a = quantizePerToken(randn(m * k, seed++), m, k);
      const out = dg.fp8GemmNt(a, b);
      const rows = sample(m, 12, seed), cols = sample(n, 24, seed + 1);
      assert.ok(calcDiff(picked(out, n, rows, cols), oracle(a, b, rows, cols)) < 1e-6);
    }
  });

  test(`wasm fp8GemmNt equals ref bit for bit with the same promotion order (${threads} thread(s), ${simd} SIMD)`, () => {
    // M = 1 takes the GEMV, which runs rows in pairs: odd row counts (per thread too) leave a lone row.
    let seed = 70 + threads, differ = 0;
    for (const [m, n, k] of [[1, 300, 1000], [1, 333, 1000], [1, 1, 300], [1, 3, 130], [1, 130, 207], [1, 40, 8493], [2, 200, 300], [5, 136, 207], [64, 256, 512], [9, 24, 16], [13, 40, 300]] as const) {
      const a = quantizePerToken(randn(m * k, seed++, 2), m, k);
      // Quantized normal values use the full code range (up to ±448), so f32 sums really round.
      const b = quantizePerBlock(randn(n * k, seed++), n, k);
      const got = dg.fp8GemmNt(a, b);
      // Fewer than 12 rows take the GEMV path ('lanes16'), more the packed GEMM ('sequential').
      const want = ref.fp8GemmNt(a, b, undefined, { order: m < 12 ? 'lanes16' : 'sequential' });
      assertBitwise(`[${m}, ${n}, ${k}]`, got, want);
      // Count elements where the other order rounds differently (so this test can tell them apart).
      const other = ref.fp8GemmNt(a, b, undefined, { order: m < 12 ? 'sequential' : 'lanes16' });
      differ += other.filter((v, i) => v !== got[i]).length;
    }
    assert.ok(differ > 0, 'the two promotion orders are distinguishable on these inputs');
  });

  test(`wasm grouped contiguous (6 groups, 128-row segments with -1 padding) equals ref and the oracle (${threads} thread(s), ${simd} SIMD)`, () => {
    const groups = 6, n = 256, k = 640, seg = [128, 256, 0, 128, 128, 0];
    const total = seg.reduce((x, y) => x + y, 0) + 128; // plus one all-padding segment
    const mIndices = new Int32Array(total).fill(-1);
    let r0 = 0;
    seg.forEach((len, g) => { for (let r = 0; r < len; r++) mIndices[r0 + r] = r < len - 17 * g - 3 ? g : -1; r0 += len; });
    const a = quantizePerToken(randn(total * k, 90 + threads), total, k);
    const b: GroupedFp8Weights = dg.allocGroupedFp8(groups, n, k);
    b.data.set(quantizeGrouped(randn(groups * n * k, 95), groups, n, k).data);
    b.scales.forEach((_, i, s) => { s[i] = (1 + (i % 3)) / 448; });
    const out = new Float32Array(total * n).fill(5);
    dg.mGroupedFp8GemmNtContiguous(a, b, mIndices, out);
    assertBitwise('contiguous', out, ref.mGroupedFp8GemmNtContiguous(a, b, mIndices));
    mIndices.forEach((g, r) => { if (g < 0) assert.ok(out.subarray(r * n, (r + 1) * n).every((v) => v === 0), `padding row ${r}`); });
    // Against float64 on some rows of every group.
    const rows = Array.from(mIndices.keys()).filter((r) => mIndices[r]! >= 0 && r % 37 === 0);
    const cols = sample(n, 32, 3);
    const want = Float64Array.from(rows.flatMap((r) => {
      const g = mIndices[r]!, kb = ceilDiv(k, BLOCK);
      const bg: Fp8Matrix = { rows: n, cols: k, scaleBlock: '128x128', data: b.data.subarray(g * n * k, (g + 1) * n * k), scales: b.scales.subarray(g * 2 * kb, (g + 1) * 2 * kb) };
      const ar: Fp8Matrix = { rows: 1, cols: k, scaleBlock: '1x128', data: a.data.subarray(r * k, (r + 1) * k), scales: a.scales.subarray(r * kb, (r + 1) * kb) };
      return Array.from(oracle(ar, bg, [0], cols));
    }));
    assert.ok(calcDiff(picked(out, n, rows, cols), want) < 1e-6);
  });

  test(`wasm grouped masked (8 groups, random maskedM with 0) equals ref; rows past maskedM untouched (${threads} thread(s), ${simd} SIMD)`, () => {
    const groups = 8, n = 192, k = 384, mMax = 40;
    const u = rng(200 + threads);
    const maskedM = Int32Array.from({ length: groups }, (_, g) => (g === 2 || g === 5 ? 0 : g === 3 ? 1 : Math.floor(u() * (mMax + 1))));
    const a = quantizePerToken(randn(groups * mMax * k, 201), groups * mMax, k);
    const b = quantizeGrouped(randn(groups * n * k, 202), groups, n, k); // plain arrays: copied in per call
    const out = new Float32Array(groups * mMax * n).fill(9);
    dg.mGroupedFp8GemmNtMasked(a, b, maskedM, mMax, out);
    const want = new Float32Array(groups * mMax * n).fill(9);
    ref.mGroupedFp8GemmNtMasked(a, b, maskedM, mMax, want);
    // Groups of fewer than 12 rows take the GEMV path ('lanes16'); compare those rows against that order.
    const wantLanes = ref.mGroupedFp8GemmNtMasked(a, b, maskedM, mMax, new Float32Array(groups * mMax * n).fill(9), { order: 'lanes16' });
    for (let g = 0; g < groups; g++) {
      const src = maskedM[g]! < 12 ? wantLanes : want;
      want.set(src.subarray(g * mMax * n, (g + 1) * mMax * n), g * mMax * n);
    }
    assertBitwise('masked', out, want);
    assert.equal(out[(2 * mMax) * n], 9);
  });

  test(`wasm weight-only FP8 and bf16 grouped GEMMs match ref (${threads} thread(s), ${simd} SIMD)`, () => {
    const groups = 4, n = 200, k = 300, m = 9;
    const bq = quantizeGrouped(randn(groups * n * k, 300), groups, n, k);
    const x = randn(m * k, 301);
    const mIndices = new Int32Array([3, 3, 0, -1, 1, 1, 1, 2, -1]);
    const close = (name: string, got: Float32Array, want: Float32Array): void => {
      for (let i = 0; i < want.length; i++) {
        assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-5 * Math.sqrt(k) * (1 + Math.abs(want[i]!)), `${name} ${i}: ${got[i]} vs ${want[i]}`);
      }
    };
    close('fp8 contiguous', dg.mGroupedFp8WeightGemmNtContiguous(x, m, bq, mIndices), refDeepGemm.mGroupedFp8WeightGemmNtContiguous(x, m, bq, mIndices));
    const mMax = 3, maskedM = new Int32Array([3, 0, 1, 2]);
    const xm = randn(groups * mMax * k, 302);
    close('fp8 masked', dg.mGroupedFp8WeightGemmNtMasked(xm, bq, maskedM, mMax), refDeepGemm.mGroupedFp8WeightGemmNtMasked(xm, bq, maskedM, mMax));
    const bb = dg.allocGroupedBf16(groups, n, k);
    randn(groups * n * k, 303).forEach((v, i) => { bb.data[i] = new Uint32Array(new Float32Array([v]).buffer)[0]! >>> 16; });
    close('bf16 contiguous', dg.mGroupedBf16GemmNtContiguous(x, m, bb, mIndices), refDeepGemm.mGroupedBf16GemmNtContiguous(x, m, bb, mIndices));
    close('bf16 masked', dg.mGroupedBf16GemmNtMasked(xm, bb, maskedM, mMax), refDeepGemm.mGroupedBf16GemmNtMasked(xm, bb, maskedM, mMax));
    assert.throws(() => dg.mGroupedBf16GemmNtMasked(xm, bb, new Int32Array([4, 0, 0, 0]), mMax), DeepGemmShapeError);
  });
}
