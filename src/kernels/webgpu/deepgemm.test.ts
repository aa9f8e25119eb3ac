// WGSL DeepGEMM against float64 products of the dequantized inputs, with DeepGEMM's metric
// calc_diff = 1 - 2Σxy/Σ(x²+y²) < 0.001 (tests/test_core.py).
//
// Shapes: DeepSeek-V3's N×K (2112×7168, 24576×1536, 32768×512, 7168×16384, 4096×7168, 7168×2048) divided by
// 16 in both N and K — llvmpipe computes ~1-2 GFLOP/s, the full 7168×16384 at M=128 alone would take
// ~15 s — which keeps partial 128-blocks (K = 96, 32) and multi-block K (1024). M ∈ {1, 64, 128} becomes
// {1, 16, 32} for the same reason. Grouped: 4-8 groups, contiguous segments padded to DeepGEMM's 128-row
// alignment with -1 rows, masked with random maskedM including 0.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeBf16 } from '../../tensor/dtypes.ts';
import {
  bf16Values, calcDiff, dequantize, dequantizeGroup, quantizeGrouped, quantizePerBlock, quantizePerToken,
} from '../deepgemm/quant.ts';
import { refDeepGemm } from '../deepgemm/ref.ts';
import { DeepGemmShapeError, M_ALIGNMENT_CONTIGUOUS, type GroupedBf16Weights } from '../deepgemm/types.ts';
import { closeDevice } from './device.ts';
import { fp8GemmNt, fp8WeightGemmNt, setGemmStrategy, webgpuDeepGemm as gpu } from './deepgemm.ts';
import { pipelinesCreated } from './pipelines.ts';
import { randn, rng, worstRatio } from './testutil.ts';

after(closeDevice);

const V3_NK: [number, number][] = [[2112, 7168], [24576, 1536], [32768, 512], [7168, 16384], [4096, 7168], [7168, 2048]];
const SCALE = 16;
// Plus one shape with K % 4 != 0 and partial blocks everywhere: the byte-wise (unaligned) shader path.
const SHAPES = [...V3_NK.map(([n, k]) => [n / SCALE, k / SCALE] as const), [72, 203] as const];
const MS = [1, 16, 32];

/** y[i, j] = Σ_c x[i, c]·w[j, c] in float64 (w: [n, k]); rows where `skip(i)` stay 0. */
function gemm64(x: ArrayLike<number>, xRow0: number, rows: number, w: ArrayLike<number>, n: number, k: number, y: Float64Array, yRow0 = xRow0): void {
  for (let i = 0; i < rows; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let c = 0; c < k; c++) s += x[(xRow0 + i) * k + c]! * w[j * k + c]!;
    y[(yRow0 + i) * n + j] = s;
  }
}

const diffs: string[] = [];
after(() => console.log(`# calc_diff measured (bar 1e-3):\n#   ${diffs.join('\n#   ')}`));

test('fp8GemmNt (1x128 A, 128x128 B) on scaled V3 shapes: calc_diff < 1e-3 against float64', async () => {
  const r = rng(11);
  let worst = 0;
  for (const [n, k] of SHAPES) {
    const b = quantizePerBlock(randn(n * k, r), n, k);
    const bd = dequantize(b);
    for (const m of MS) {
      const a = quantizePerToken(randn(m * k, r), m, k);
      const want = new Float64Array(m * n);
      gemm64(dequantize(a), 0, m, bd, n, k, want);
      const got = await fp8GemmNt(a, b);
      const d = calcDiff(got, want);
      worst = Math.max(worst, d);
      assert.ok(d < 1e-3, `m=${m} n=${n} k=${k}: calc_diff ${d}`);
      // Only f32 rounding separates the two (same dequantized inputs): far below the bar.
      assert.ok(d < 1e-6, `m=${m} n=${n} k=${k}: calc_diff ${d} (f32 rounding alone is ~1e-14)`);
    }
  }
  diffs.push(`fp8GemmNt worst ${worst.toExponential(2)}`);
});

test('fp8GemmNt agrees with the TypeScript reference (same promotion) to f32 rounding', async () => {
  const r = rng(12);
  const [n, k] = [264, 896];
  const a = quantizePerToken(randn(8 * k, r), 8, k);
  const b = quantizePerBlock(randn(n * k, r), n, k);
  const got = await fp8GemmNt(a, b);
  const want = refDeepGemm.fp8GemmNt(a, b);
  assert.ok(worstRatio(got, want, 1e-5, 1e-4) <= 1, `worst ${worstRatio(got, want, 1e-5, 1e-4)}`);
});

test('weight-only fp8 (f32 activations) on scaled V3 shapes: calc_diff < 1e-3', async () => {
  const r = rng(13);
  let worst = 0;
  for (const [n, k] of SHAPES) {
    const b = quantizePerBlock(randn(n * k, r), n, k);
    const bd = dequantize(b);
    for (const m of [1, 16]) {
      const x = randn(m * k, r);
      const want = new Float64Array(m * n);
      gemm64(x, 0, m, bd, n, k, want);
      const d = calcDiff(await fp8WeightGemmNt(x, m, b), want);
      worst = Math.max(worst, d);
      assert.ok(d < 1e-6, `m=${m} n=${n} k=${k}: calc_diff ${d}`);
    }
  }
  diffs.push(`fp8WeightGemmNt worst ${worst.toExponential(2)}`);
});

/** Contiguous layout: each group's rows padded to the 128-row alignment with -1 rows. */
function contiguousLayout(sizes: number[]): Int32Array {
  const idx: number[] = [];
  sizes.forEach((s, g) => {
    const padded = Math.ceil(s / M_ALIGNMENT_CONTIGUOUS) * M_ALIGNMENT_CONTIGUOUS;
    for (let i = 0; i < padded; i++) idx.push(i < s ? g : -1);
  });
  return Int32Array.from(idx);
}

const GROUPED_NK: [number, number][] = [[4096 / SCALE, 7168 / SCALE], [7168 / SCALE, 2048 / SCALE]];

test('m-grouped contiguous (fp8 x fp8, fp8 weight-only, bf16): -1 rows are 0, calc_diff < 1e-3', async () => {
  const r = rng(14);
  let worst = 0;
  for (const [[n, k], groups] of GROUPED_NK.map((s, i) => [s, [4, 8][i]!] as const)) {
    const sizes = Array.from({ length: groups }, () => Math.floor(r() * 40));
    sizes[1] = 0; // an empty expert
    const mIndices = contiguousLayout(sizes);
    const m = mIndices.length;
    const wf = randn(groups * n * k, r);
    const b = quantizeGrouped(wf, groups, n, k);
    const bb: GroupedBf16Weights = { groups, n, k, data: encodeBf16(wf) };
    const a = quantizePerToken(randn(m * k, r), m, k);
    const x = randn(m * k, r);
    const ad = dequantize(a);
    const want = (xs: ArrayLike<number>, wOf: (g: number) => ArrayLike<number>) => {
      const y = new Float64Array(m * n);
      for (let g = 0; g < groups; g++) {
        const w = wOf(g);
        mIndices.forEach((gi, row) => { if (gi === g) gemm64(xs, row, 1, w, n, k, y); });
      }
      return y;
    };
    const bd = Array.from({ length: groups }, (_, g) => dequantizeGroup(b, g));
    const cases: [string, () => Promise<Float32Array>, Float64Array][] = [
      ['fp8', () => gpu.mGroupedFp8GemmNtContiguous(a, b, mIndices, new Float32Array(m * n).fill(NaN)), want(ad, (g) => bd[g]!)],
      ['fp8-weight', () => gpu.mGroupedFp8WeightGemmNtContiguous(x, m, b, mIndices, new Float32Array(m * n).fill(NaN)), want(x, (g) => bd[g]!)],
      ['bf16', () => gpu.mGroupedBf16GemmNtContiguous(x, m, bb, mIndices, new Float32Array(m * n).fill(NaN)),
        want(x, (g) => bf16Values(bb.data.subarray(g * n * k, (g + 1) * n * k)))],
    ];
    for (const [name, run, ref] of cases) {
      const got = await run();
      mIndices.forEach((gi, row) => {
        if (gi < 0) assert.ok(got.subarray(row * n, (row + 1) * n).every((v) => v === 0), `${name}: -1 row ${row} not zeroed`);
      });
      const d = calcDiff(got, ref);
      worst = Math.max(worst, d);
      assert.ok(d < 1e-6, `${name} groups=${groups} n=${n} k=${k}: calc_diff ${d}`);
    }
  }
  diffs.push(`contiguous worst ${worst.toExponential(2)}`);
});

test('m-grouped masked (fp8 x fp8, fp8 weight-only, bf16): rows past maskedM untouched, calc_diff < 1e-3', async () => {
  const r = rng(15);
  let worst = 0;
  for (const [[n, k], groups] of GROUPED_NK.map((s, i) => [s, [6, 5][i]!] as const)) {
    const mMax = 32;
    const maskedM = Int32Array.from({ length: groups }, () => Math.floor(r() * (mMax + 1)));
    maskedM[0] = 0;
    maskedM[groups - 1] = mMax;
    const m = groups * mMax;
    const wf = randn(groups * n * k, r);
    const b = quantizeGrouped(wf, groups, n, k);
    const bb: GroupedBf16Weights = { groups, n, k, data: encodeBf16(wf) };
    const a = quantizePerToken(randn(m * k, r), m, k);
    const x = randn(m * k, r);
    const ad = dequantize(a);
    const SENTINEL = 7.25;
    const want = (xs: ArrayLike<number>, wOf: (g: number) => ArrayLike<number>) => {
      const y = new Float64Array(m * n).fill(SENTINEL);
      for (let g = 0; g < groups; g++) gemm64(xs, g * mMax, maskedM[g]!, wOf(g), n, k, y);
      return y;
    };
    const bd = Array.from({ length: groups }, (_, g) => dequantizeGroup(b, g));
    const sentinel = () => new Float32Array(m * n).fill(SENTINEL);
    const cases: [string, () => Promise<Float32Array>, Float64Array][] = [
      ['fp8', () => gpu.mGroupedFp8GemmNtMasked(a, b, maskedM, mMax, sentinel()), want(ad, (g) => bd[g]!)],
      ['fp8-weight', () => gpu.mGroupedFp8WeightGemmNtMasked(x, b, maskedM, mMax, sentinel()), want(x, (g) => bd[g]!)],
      ['bf16', () => gpu.mGroupedBf16GemmNtMasked(x, bb, maskedM, mMax, sentinel()),
        want(x, (g) => bf16Values(bb.data.subarray(g * n * k, (g + 1) * n * k)))],
    ];
    for (const [name, run, ref] of cases) {
      const got = await run();
      for (let row = 0; row < m; row++) {
        if (row % mMax >= maskedM[Math.floor(row / mMax)]!) {
          assert.ok(got.subarray(row * n, (row + 1) * n).every((v) => v === SENTINEL), `${name}: masked row ${row} was written`);
        }
      }
      const d = calcDiff(got, ref);
      worst = Math.max(worst, d);
      assert.ok(d < 1e-6, `${name} groups=${groups}: calc_diff ${d}`);
    }
  }
  diffs.push(`masked worst ${worst.toExponential(2)}`);
});

test('a repeated grouped call compiles no new pipeline; the allocated out of masked is 0 outside maskedM', async () => {
  const r = rng(16);
  const [groups, n, k, mMax] = [2, 8, 130, 4];
  const b = quantizeGrouped(randn(groups * n * k, r), groups, n, k);
  const a = quantizePerToken(randn(groups * mMax * k, r), groups * mMax, k);
  const maskedM = Int32Array.from([3, 0]);
  await gpu.mGroupedFp8GemmNtMasked(a, b, maskedM, mMax);
  const before = pipelinesCreated();
  const got = await gpu.mGroupedFp8GemmNtMasked(a, b, maskedM, mMax);
  assert.equal(pipelinesCreated(), before);
  assert.ok(got.subarray(3 * n).every((v) => v === 0));
  const want = refDeepGemm.mGroupedFp8GemmNtMasked(a, b, maskedM, mMax);
  assert.ok(worstRatio(got, want, 1e-5, 1e-4) <= 1);
});

test('inconsistent shapes are DeepGemmShapeError', async () => {
  const r = rng(17);
  const a = quantizePerToken(randn(2 * 64, r), 2, 64);
  const b = quantizePerBlock(randn(3 * 32, r), 3, 32);
  await assert.rejects(fp8GemmNt(a, b), DeepGemmShapeError);
  await assert.rejects(fp8GemmNt(a, a), DeepGemmShapeError); // wrong scale block
  const g = quantizeGrouped(randn(2 * 3 * 64, r), 2, 3, 64);
  await assert.rejects(gpu.mGroupedFp8GemmNtContiguous(a, g, Int32Array.from([0, 2])), DeepGemmShapeError);
  await assert.rejects(gpu.mGroupedFp8GemmNtMasked(a, g, Int32Array.from([2, 0]), 2), DeepGemmShapeError); // 2 rows != 2*2
});

test('split-K kernels (the small-M GPU path) match float64 for every variant, incl. -1 rows and masks', async () => {
  const old = setGemmStrategy('split');
  try {
    const r = rng(18);
    for (const [n, k] of [[132, 448], [72, 203]] as const) {
      const b = quantizePerBlock(randn(n * k, r), n, k);
      const bd = dequantize(b);
      const a = quantizePerToken(randn(3 * k, r), 3, k);
      const want = new Float64Array(3 * n);
      gemm64(dequantize(a), 0, 3, bd, n, k, want);
      assert.ok(calcDiff(await fp8GemmNt(a, b), want) < 1e-6, `fp8GemmNt ${n}x${k}`);
      const x = randn(2 * k, r);
      const wx = new Float64Array(2 * n);
      gemm64(x, 0, 2, bd, n, k, wx);
      assert.ok(calcDiff(await fp8WeightGemmNt(x, 2, b), wx) < 1e-6, `fp8WeightGemmNt ${n}x${k}`);
    }
    const [groups, n, k, mMax] = [3, 40, 200, 4];
    const wf = randn(groups * n * k, r);
    const b = quantizeGrouped(wf, groups, n, k);
    const bb: GroupedBf16Weights = { groups, n, k, data: encodeBf16(wf) };
    const bd = Array.from({ length: groups }, (_, g) => dequantizeGroup(b, g));
    const bbd = Array.from({ length: groups }, (_, g) => bf16Values(bb.data.subarray(g * n * k, (g + 1) * n * k)));
    const mIndices = Int32Array.from([0, 0, -1, 2, -1, 1]);
    const m = mIndices.length;
    const a = quantizePerToken(randn(m * k, r), m, k);
    const x = randn(m * k, r);
    const ad = dequantize(a);
    const cont = (xs: ArrayLike<number>, w: Float64Array[]) => {
      const y = new Float64Array(m * n);
      mIndices.forEach((g, row) => { if (g >= 0) gemm64(xs, row, 1, w[g]!, n, k, y); });
      return y;
    };
    for (const [name, got, want] of [
      ['fp8', await gpu.mGroupedFp8GemmNtContiguous(a, b, mIndices, new Float32Array(m * n).fill(NaN)), cont(ad, bd)],
      ['fp8-weight', await gpu.mGroupedFp8WeightGemmNtContiguous(x, m, b, mIndices, new Float32Array(m * n).fill(NaN)), cont(x, bd)],
      ['bf16', await gpu.mGroupedBf16GemmNtContiguous(x, m, bb, mIndices, new Float32Array(m * n).fill(NaN)), cont(x, bbd)],
    ] as const) {
      assert.ok(got.subarray(2 * n, 3 * n).every((v) => v === 0), `${name}: -1 row not zeroed`);
      assert.ok(calcDiff(got, want) < 1e-6, `${name} contiguous`);
    }
    const maskedM = Int32Array.from([2, 0, 4]);
    const am = quantizePerToken(randn(groups * mMax * k, r), groups * mMax, k);
    const xm = randn(groups * mMax * k, r);
    const masked = (xs: ArrayLike<number>, w: Float64Array[]) => {
      const y = new Float64Array(groups * mMax * n).fill(5);
      for (let g = 0; g < groups; g++) gemm64(xs, g * mMax, maskedM[g]!, w[g]!, n, k, y);
      return y;
    };
    const five = () => new Float32Array(groups * mMax * n).fill(5);
    for (const [name, got, want] of [
      ['fp8', await gpu.mGroupedFp8GemmNtMasked(am, b, maskedM, mMax, five()), masked(dequantize(am), bd)],
      ['fp8-weight', await gpu.mGroupedFp8WeightGemmNtMasked(xm, b, maskedM, mMax, five()), masked(xm, bd)],
      ['bf16', await gpu.mGroupedBf16GemmNtMasked(xm, bb, maskedM, mMax, five()), masked(xm, bbd)],
    ] as const) {
      assert.ok(got.subarray(2 * n, 8 * n).every((v) => v === 5), `${name}: masked rows written`);
      assert.ok(calcDiff(got, want) < 1e-6, `${name} masked`);
    }
  } finally {
    setGemmStrategy(old);
  }
});
