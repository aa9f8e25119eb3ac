// Tensors beyond the storage binding / buffer limits (split.ts): the planners on real DeepSeek sizes, and
// on llvmpipe, with the limits lowered by setWebGpuSizeLimits, split products and split FlashMLA caches
// against the same calls unsplit. Each split case also asserts that the tensor it splits is larger than
// the lowered limit: an op that did not split would bind it whole and fail with WebGpuLimitError.
import { after, afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeBf16, encodeFp8e4m3 } from '../../tensor/dtypes.ts';
import type { GroupedWeight, WeightMatrix } from '../api.ts';
import { quantizeGrouped, quantizePerBlock, quantizePerToken } from '../deepgemm/quant.ts';
import { M_ALIGNMENT_CONTIGUOUS, type GroupedBf16Weights } from '../deepgemm/types.ts';
import { buildCase, checkIsAllclose, denseSdpaF64, TOL, type MlaCase } from '../flashmla/testing.ts';
import type { KvCacheDType } from '../flashmla/types.ts';
import { closeDevice, getDevice } from './device.ts';
import { setGemmStrategy, webgpuDeepGemm as dg, fp8GemmNt } from './deepgemm.ts';
import { emptyStorage } from './buffers.ts';
import { WebGpuLimitError } from './errors.ts';
import { flashMlaWithKvcacheWebGpu } from './flashmla.ts';
import { loadWebGpuBackend } from './ops.ts';
import { planBands, planRowChunks, planWeightSplit, setWebGpuSizeLimits, type SizeLimits } from './split.ts';
import { randn, rng } from './testutil.ts';

after(closeDevice);
afterEach(() => { setWebGpuSizeLimits({}); });

const gpu = await loadWebGpuBackend();
const MiB = 1 << 20;
const lim = (binding: number, buffer = binding): SizeLimits => ({ binding, buffer, storage: Math.floor(Math.min(binding, buffer) / 4) * 4 });

/** Bitwise equality of two f32 arrays (NaN payloads included), with the first difference in the message. */
function assertBitEqual(got: Float32Array, want: Float32Array, what: string): void {
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length), b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  assert.equal(a.length, b.length, `${what}: length`);
  const i = a.findIndex((v, j) => v !== b[j]);
  assert.ok(i < 0, `${what}: element ${i} differs: ${got[i]} vs ${want[i]}`);
}

/** Runs `fn` with the storage limit lowered to `bytes` (binding and buffer alike). */
async function capped<T>(bytes: number, fn: () => Promise<T>): Promise<T> {
  const old = setWebGpuSizeLimits({ maxBindingBytes: bytes, maxBufferBytes: bytes });
  try { return await fn(); } finally { setWebGpuSizeLimits(old); }
}

test('planner: V2-Lite lm_head, V3 stacked FP8 experts and an FP8 matrix split as documented', () => {
  // 102400x2048 BF16 = 400 MiB under a 128 MiB binding: 4 near-equal row ranges, one group.
  const head = planWeightSplit({ tensor: 'lm_head', groups: 1, n: 102400, k: 2048, elemBytes: 2, blockScaled: false }, lim(128 * MiB, 256 * MiB));
  assert.deepEqual(head.groups, [[0, 1]]);
  assert.deepEqual(head.cols, [[0, 25600], [25600, 51200], [51200, 76800], [76800, 102400]]);
  // 256 experts of 2048x7168 FP8 (14 MiB each, 3.5 GiB) under 2 GiB: whole experts, 2 ranges of 128.
  const experts = planWeightSplit({ tensor: 'experts', groups: 256, n: 2048, k: 7168, elemBytes: 1, blockScaled: true }, lim(2048 * MiB, 4096 * MiB));
  assert.deepEqual(experts.groups, [[0, 128], [128, 256]]);
  assert.deepEqual(experts.cols, [[0, 2048]]);
  // Under a buffer limit of 10 MiB one expert does not fit: one expert per part, N in multiples of 128.
  const rows = planWeightSplit({ tensor: 'experts', groups: 2, n: 2048, k: 7168, elemBytes: 1, blockScaled: true }, lim(128 * MiB, 10 * MiB));
  assert.deepEqual(rows.groups, [[0, 1], [1, 2]]);
  assert.ok(rows.cols.every(([a, b]) => a % 128 === 0 && (b - a) * 7168 <= 10 * MiB), JSON.stringify(rows.cols));
  assert.equal(rows.cols.at(-1)![1], 2048);
  // Bands merge parts while an output row fits; row chunks bound every per-row tensor.
  assert.deepEqual(planBands([[0, 3], [3, 6], [6, 8]], lim(24), 'y'), [[0, 6], [6, 8]]);
  assert.deepEqual(planRowChunks(10, [['x', 40], ['y', 8]], lim(100)), [[0, 2], [2, 4], [4, 6], [6, 8], [8, 10]]);
});

test('planner: a unit that cannot be split is a WebGpuLimitError naming the tensor and both limits', () => {
  const isLimit = (tensor: string) => (e: unknown) => e instanceof WebGpuLimitError && e.message.includes(tensor) &&
    e.message.includes('maxStorageBufferBindingSize 1000 B') && e.message.includes('maxBufferSize 2000 B');
  // One f32 row of 300 values is 1200 B > 1000.
  assert.throws(() => planWeightSplit({ tensor: 'w.f32', groups: 1, n: 4, k: 300, elemBytes: 4, blockScaled: false }, lim(1000, 2000)), isLimit('w.f32'));
  // FP8 splits at 128-row blocks: 128 rows x 8 B = 1024 B > 1000 although one row (8 B) would fit.
  assert.throws(() => planWeightSplit({ tensor: 'w.fp8', groups: 1, n: 256, k: 8, elemBytes: 1, blockScaled: true }, lim(1000, 2000)), isLimit('w.fp8'));
  assert.throws(() => planRowChunks(3, [['x.act', 1004]], lim(1000, 2000)), isLimit('x.act'));
});

// ---- GEMM: split vs unsplit, bit for bit ----

const M = 50, N = 300, K = 200;

function weights(seed: number): WeightMatrix[] {
  const r = rng(seed);
  const wf = randn(N * K, r, 0.05);
  const scaleInv = new Float32Array(Math.ceil(N / 128) * Math.ceil(K / 128)).map(() => 0.5 + r());
  return [
    { dtype: 'f32', rows: N, cols: K, data: wf },
    { dtype: 'bf16', rows: N, cols: K, data: encodeBf16(wf) },
    { dtype: 'fp8', rows: N, cols: K, data: encodeFp8e4m3(wf.map((v) => v * 40)), scaleInv },
  ];
}

test('matmul f32 / bf16 / fp8: weight parts + row chunks equal the unsplit product bitwise (direct and split-K kernels)', async () => {
  const x = randn(M * K, rng(31));
  // 25 600 B: f32 parts of 32 rows, bf16 of 64, fp8 of 128 (scale-block aligned); x (40 000 B) in 3 chunks.
  const CAP = 25_600;
  for (const strategy of ['direct', 'split'] as const) {
    const old = setGemmStrategy(strategy);
    try {
      for (const w of weights(32)) {
        assert.ok(w.data.byteLength > CAP && x.byteLength > CAP);
        const want = await gpu.matmul(x, M, w);
        const got = await capped(CAP, () => gpu.matmul(x, M, w, new Float32Array(M * N).fill(NaN)));
        assertBitEqual(got, want, `${strategy} ${w.dtype}`);
      }
    } finally {
      setGemmStrategy(old);
    }
  }
});

test('matmul: outputs wider than a binding are written in column bands (many parts, one row per chunk)', async () => {
  const r = rng(33);
  const [m, n, k] = [3, 70, 8];
  const w: WeightMatrix = { dtype: 'f32', rows: n, cols: k, data: randn(n * k, r) };
  const x = randn(m * k, r);
  const want = await gpu.matmul(x, m, w);
  // 128 B: 4 weight rows per part (18 parts), output bands of 32 columns (3), one row per chunk (3).
  const got = await capped(128, () => gpu.matmul(x, m, w));
  assertBitEqual(got, want, 'banded');
});

test('a weight row larger than the binding is refused with WebGpuLimitError naming the weight', async () => {
  const w: WeightMatrix = { dtype: 'f32', rows: 2, cols: 300, data: new Float32Array(600) };
  await assert.rejects(capped(1000, () => gpu.matmul(new Float32Array(300), 1, w)),
    (e: unknown) => e instanceof WebGpuLimitError && e.message.includes('matmul:f32:b') && e.message.includes('one row'));
  // And a buffer that no op split is still refused at allocation.
  const ctx = await getDevice();
  setWebGpuSizeLimits({ maxBindingBytes: 4096 });
  assert.throws(() => emptyStorage(ctx, 4100, 'huge'), (e: unknown) => e instanceof WebGpuLimitError && e.message.includes('huge'));
});

function contiguous(sizes: number[]): Int32Array {
  const idx: number[] = [];
  sizes.forEach((s, g) => {
    for (let i = 0; i < Math.ceil(s / M_ALIGNMENT_CONTIGUOUS) * M_ALIGNMENT_CONTIGUOUS; i++) idx.push(i < s ? g : -1);
  });
  return Int32Array.from(idx);
}

test('grouped GEMMs (contiguous and masked; fp8, fp8 weight-only, bf16; groupedMatmul) split by groups and by rows equal unsplit bitwise', async () => {
  const r = rng(34);
  const [G, n, k] = [4, 256, 136];
  const wf = randn(G * n * k, r, 0.1);
  const b = quantizeGrouped(wf, G, n, k);
  const bb: GroupedBf16Weights = { groups: G, n, k, data: encodeBf16(wf) };
  const mIndices = contiguous([5, 0, 130, 3]);
  const m = mIndices.length;
  const a = quantizePerToken(randn(m * k, r), m, k);
  const x = randn(m * k, r);
  const mMax = 6;
  const maskedM = Int32Array.from([2, 0, 6, 5]);
  const am = quantizePerToken(randn(G * mMax * k, r), G * mMax, k);
  const xm = randn(G * mMax * k, r);
  const gw: GroupedWeight = { dtype: 'fp8', groups: G, rows: n, cols: k, data: b.data, scaleInv: b.scales };
  const gwb: GroupedWeight = { dtype: 'bf16', groups: G, rows: n, cols: k, data: bb.data };
  const seg = { start: Int32Array.from([0, 128, 128, 384]), count: Int32Array.from([5, 0, 130, 3]) };
  const SENT = 7.25;
  const calls: [string, () => Promise<Float32Array>][] = [
    ['fp8 contiguous', () => dg.mGroupedFp8GemmNtContiguous(a, b, mIndices, new Float32Array(m * n).fill(NaN))],
    ['fp8-weight contiguous', () => dg.mGroupedFp8WeightGemmNtContiguous(x, m, b, mIndices, new Float32Array(m * n).fill(NaN))],
    ['bf16 contiguous', () => dg.mGroupedBf16GemmNtContiguous(x, m, bb, mIndices, new Float32Array(m * n).fill(NaN))],
    ['fp8 masked', () => dg.mGroupedFp8GemmNtMasked(am, b, maskedM, mMax, new Float32Array(G * mMax * n).fill(SENT))],
    ['fp8-weight masked', () => dg.mGroupedFp8WeightGemmNtMasked(xm, b, maskedM, mMax, new Float32Array(G * mMax * n).fill(SENT))],
    ['bf16 masked', () => dg.mGroupedBf16GemmNtMasked(xm, bb, maskedM, mMax, new Float32Array(G * mMax * n).fill(SENT))],
    ['groupedMatmul fp8', () => gpu.groupedMatmul(x, m, gw, seg)],
    ['groupedMatmul bf16', () => gpu.groupedMatmul(x, m, gwb, seg)],
  ];
  // One fp8 expert is 34 816 B, bf16 69 632 B. 80 000 B: 2 fp8 experts per part, 1 bf16 expert per part.
  // 20 000 B: one expert per part in 128-row halves (fp8), 64-row quarters (bf16); activations chunked.
  for (const CAP of [80_000, 20_000]) {
    for (const [name, run] of calls) {
      const want = await run();
      const got = await capped(CAP, run);
      assertBitEqual(got, want, `${name} cap ${CAP}`);
    }
  }
  // The split path keeps the contracts: -1 rows are 0, masked rows keep the caller's values.
  const got = await capped(20_000, () => dg.mGroupedFp8GemmNtMasked(am, b, maskedM, mMax, new Float32Array(G * mMax * n).fill(SENT)));
  for (let row = 0; row < G * mMax; row++) {
    if (row % mMax >= maskedM[Math.floor(row / mMax)]!) assert.ok(got.subarray(row * n, (row + 1) * n).every((v) => v === SENT), `masked row ${row}`);
  }
  const gotC = await capped(20_000, () => dg.mGroupedFp8GemmNtContiguous(a, b, mIndices, new Float32Array(m * n).fill(NaN)));
  mIndices.forEach((g, row) => { if (g < 0) assert.ok(gotC.subarray(row * n, (row + 1) * n).every((v) => v === 0), `-1 row ${row}`); });
});

test('fp8GemmNt (fp8 x fp8) with N split at 128-row scale blocks equals unsplit bitwise', async () => {
  const r = rng(35);
  const [m, n, k] = [9, 400, 260];
  const a = quantizePerToken(randn(m * k, r), m, k);
  const b = quantizePerBlock(randn(n * k, r), n, k);
  const want = await fp8GemmNt(a, b);
  assertBitEqual(await capped(40_000, () => fp8GemmNt(a, b)), want, 'fp8GemmNt');
});

// ---- FlashMLA with the cache split into block ranges ----

async function mlaSplitCase(c: MlaCase, dtype: KvCacheDType, seed: number, blocksPerPart: number, expectChunks: boolean): Promise<void> {
  const built = buildCase(c, { seed, dtype, numParts: 3 });
  const args = built.args;
  const blockBytes = args.kCache.data.byteLength / args.kCache.numBlocks;
  const cap = blocksPerPart * blockBytes;
  assert.ok(args.kCache.data.byteLength > cap, 'the cache must exceed the lowered limit');
  if (expectChunks) assert.ok(args.q.byteLength > cap, 'q must exceed the lowered limit');
  const whole = await flashMlaWithKvcacheWebGpu(args);
  const split = await capped(cap, () => flashMlaWithKvcacheWebGpu(args));
  const want = denseSdpaF64(args.q, built.keys, args.cacheSeqlens,
    { b: c.b, sQ: c.sQ, hQ: c.hQ, hKv: c.hKv, dQK: args.kCache.headDim, dV: args.dV }, args.softmaxScale, c.causal);
  const name = `${JSON.stringify(c)} ${dtype} ${blocksPerPart} blocks/part`;
  for (const [what, got] of [['split', split], ['unsplit', whole]] as const) {
    const o = checkIsAllclose(`${name} ${what} out`, got.out, want.out, TOL.out.abs, TOL.out.rel, TOL.out.cos);
    const l = checkIsAllclose(`${name} ${what} lse`, got.lse, want.lse, TOL.lse.abs, TOL.lse.rel, TOL.lse.cos);
    assert.ok(o.ok, o.message);
    assert.ok(l.ok, l.message);
  }
  // Split vs unsplit: the same keys summed in another order (per part, then the LSE merge).
  let outAbs = 0, lseRel = 0;
  for (let i = 0; i < whole.out.length; i++) outAbs = Math.max(outAbs, Math.abs(split.out[i]! - whole.out[i]!));
  for (let i = 0; i < whole.lse.length; i++) {
    if (Number.isFinite(whole.lse[i]!)) lseRel = Math.max(lseRel, Math.abs(split.lse[i]! - whole.lse[i]!) / Math.abs(whole.lse[i]!));
    else assert.equal(split.lse[i], whole.lse[i], `lse ${i}`);
  }
  assert.ok(outAbs <= 2e-6 && lseRel <= 2e-6, `${name}: split vs unsplit out max abs ${outAbs}, lse max rel ${lseRel}`);
}

test('FlashMLA decode with the cache split into block ranges matches unsplit (f32, bf16, fp8 caches)', async () => {
  await mlaSplitCase({ b: 2, sQ: 1, sK: 600, hQ: 16, hKv: 1, varlen: true, causal: false }, 'f32', 41, 4, false);
  await mlaSplitCase({ b: 3, sQ: 2, sK: 300, hQ: 4, hKv: 2, varlen: true, causal: true }, 'bf16', 42, 3, false);
  await mlaSplitCase({ b: 2, sQ: 1, sK: 500, hQ: 8, hKv: 1, varlen: false, causal: false }, 'fp8', 43, 5, false);
});

test('FlashMLA: a batch whose q exceeds the binding runs in request chunks, with the cache split too', async () => {
  // q per request 4·8·576·4 B = 72 KiB: 6 requests (432 KiB) exceed 2 f32 blocks (288 KiB), 4 fit a chunk.
  await mlaSplitCase({ b: 6, sQ: 4, sK: 130, hQ: 8, hKv: 1, varlen: false, causal: true }, 'f32', 44, 2, true);
});

test('FlashMLA: a cache block larger than the binding is a WebGpuLimitError naming the cache', async () => {
  const built = buildCase({ b: 1, sQ: 1, sK: 20, hQ: 1, hKv: 1, varlen: false, causal: false }, { seed: 45, numParts: 1 });
  await assert.rejects(capped(64 * 576 * 4 - 4, () => flashMlaWithKvcacheWebGpu(built.args)),
    (e: unknown) => e instanceof WebGpuLimitError && e.message.includes('flashmla:kCache') && e.message.includes('64-token cache block'));
});

// ---- Row-wise ops in row chunks ----

test('rmsNorm, rope, softmax, siluMul and topk in row chunks equal the unchunked ops bitwise', async () => {
  const r = rng(51);
  const [rows, cols] = [37, 96];
  const x = randn(rows * cols, r, 3);
  const wt = randn(cols, r);
  const CAP = 1024; // x rows of 384 B: chunks of 2 rows (cos/sin and topk rows smaller)
  assert.ok(x.byteLength > CAP);
  const same = async <T>(what: string, run: () => Promise<T>, pick: (v: T) => Float32Array) => {
    const want = pick(await run());
    assertBitEqual(pick(await capped(CAP, run)), want, what);
  };
  await same('rmsNorm', () => gpu.rmsNorm(x, rows, wt, 1e-6), (v) => v);
  await same('siluMul', () => gpu.siluMul(x, x.map((v) => v * 0.5)), (v) => v);
  await same('softmax', async () => { const c = x.slice(); await gpu.softmax(c, rows, cols); return c; }, (v) => v);
  const [stride, offset, dim] = [cols, 32, 64];
  const cos = randn(rows * dim / 2, r), sin = randn(rows * dim / 2, r);
  await same('rope', async () => { const c = x.slice(); await gpu.rope(c, rows, stride, offset, dim, cos, sin); return c; }, (v) => v);
  const tk = await gpu.topk(x, rows, cols, 6);
  const tkSplit = await capped(CAP, () => gpu.topk(x, rows, cols, 6));
  assert.deepEqual(tkSplit.indices, tk.indices);
  assertBitEqual(tkSplit.values, tk.values, 'topk');
  await assert.rejects(capped(256, () => gpu.softmax(x.slice(), rows, cols)),
    (e: unknown) => e instanceof WebGpuLimitError && e.message.includes('softmax:x'));
});
