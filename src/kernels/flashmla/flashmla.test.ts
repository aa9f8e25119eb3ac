// FlashMLA conformance on every CPU backend: the covering subset of FlashMLA's test matrix (every pair
// of values of every two axes of b {1,2,6,64} × sQ {1,2,4} × sK {20,140,4096} × hQ {1,3,16,64,128} ×
// hKv {1,2} × varlen × causal; 32 of the 1440 cases, deterministic seeds), each with a permuted block table,
// INVALID_BLOCK_ID in unused entries, NaN in every unused cache slot, zero-length requests in varlen
// batches, cycling scales and part counts; against a dense float64 SDPA with kernelkit's allclose.
// Skipped from upstream: hQ 9/63/126, hKv 3/8, b 128 and sK 8192 (the same code paths at CPU cost).
import { describe, test, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { loadFlashMla } from './index.ts';
import { getMlaMetadata } from './metadata.ts';
import { FlashMlaError, INVALID_BLOCK_ID, type FlashMlaKernel } from './types.ts';
import {
  assertMatches, buildCase, caseCost, checkIsAllclose, coveringCases, denseSdpaF64, pairCoverage, prepareCase, qkBeginCase, TOL,
  type MlaCase, type PreparedCase,
} from './testing.ts';

const BACKENDS: { backend: string; threads: number }[] = [
  { backend: 'ref', threads: 1 }, { backend: 'wasm', threads: 1 }, { backend: 'wasm', threads: 2 },
];

const CASES = coveringCases();

// One kernel per backend for the whole file, disposed at the end.
const kernels = new Map<string, Promise<FlashMlaKernel>>();
const kernelOf = (backend: string, threads: number) => {
  const key = `${backend}×${threads}`;
  let k = kernels.get(key);
  if (!k) kernels.set(key, (k = loadFlashMla(backend, { threads })));
  return k;
};
after(async () => {
  for (const k of kernels.values()) await (await k).dispose();
});

/**
 * Runs one prepared case on every backend as subtests. The case (cache, oracle) is built once and
 * dropped afterwards: the biggest (b 64 × 4096 keys) holds 0.6 GB of f32 cache.
 */
async function onEveryBackend(t: TestContext, pc: PreparedCase): Promise<void> {
  for (const { backend, threads } of BACKENDS) {
    await t.test(`${backend} ×${threads}`, async () => {
      assertMatches(pc, await (await kernelOf(backend, threads)).flashMlaWithKvcache(pc.built.args));
    });
  }
}

test('the covering subset covers every pair of axis values', () => {
  const { covered, total } = pairCoverage(CASES);
  assert.equal(covered, total);
  assert.ok(CASES.length < 40, `${CASES.length} cases`);
  assert.ok(CASES.reduce((s, c) => s + caseCost(c), 0) < 2_000_000);
});

// bf16 and fp8 caches on a smaller subset: one case per (sQ, causal, varlen) corner plus a split-heavy one.
const SMALL: MlaCase[] = [
  { b: 2, sQ: 1, sK: 140, hQ: 16, hKv: 1, varlen: false, causal: false },
  { b: 6, sQ: 2, sK: 140, hQ: 3, hKv: 1, varlen: true, causal: true },
  { b: 1, sQ: 4, sK: 300, hQ: 16, hKv: 2, varlen: false, causal: true },
  { b: 3, sQ: 1, sK: 1000, hQ: 64, hKv: 1, varlen: true, causal: false },
];

CASES.forEach((c, i) => {
  test(`matrix #${i}: ${JSON.stringify(c)}`, (t) => onEveryBackend(t, prepareCase(c, i)));
});

// Prefill shapes: many folded rows (sQ·g > the wasm kernel's 64-row tile), so rows go in tiles that stop
// at their last visible key block (causal) and, with 2 threads, are split across participants by cost.
const PREFILL: MlaCase[] = [
  { b: 1, sQ: 40, sK: 140, hQ: 16, hKv: 1, varlen: false, causal: true },
  { b: 2, sQ: 24, sK: 200, hQ: 16, hKv: 2, varlen: true, causal: true },
  { b: 1, sQ: 9, sK: 70, hQ: 16, hKv: 1, varlen: false, causal: false },
];
PREFILL.forEach((c, i) => {
  test(`prefill shape (row tiles, rows split across threads) #${i}: ${JSON.stringify(c)}`, (t) => onEveryBackend(t, prepareCase(c, 300 + i)));
});

SMALL.forEach((c, i) => {
  test(`bf16 cache (reference on bf16-rounded q and K) #${i}`, (t) => onEveryBackend(t, prepareCase(c, 100 + i, 'bf16')));
  test(`fp8 cache: exact on dequantized K, within the a-posteriori quantization bound of raw K #${i}`, async (t) => {
    const pc = prepareCase(c, 200 + i, 'fp8');
    await onEveryBackend(t, pc);
    // Against the unquantized keys: with δ = max |scale·q·(K̂−K)| over the keys, softmax weights move
    // by at most a factor e^{±2δ}, so |Δout| ≤ max|V̂−V| + (e^{2δ}−1)·max|V| and |Δlse| ≤ δ.
    const a = pc.built.args;
    const raw = denseSdpaF64(a.q, pc.built.rawKeys, a.cacheSeqlens,
      { b: c.b, sQ: c.sQ, hQ: c.hQ, hKv: c.hKv, dQK: a.kCache.headDim, dV: a.dV }, a.softmaxScale, c.causal);
    let delta = 0;
    let dv = 0;
    let vmax = 0;
    const dQK = a.kCache.headDim;
    const g = c.hQ / c.hKv;
    for (let bi = 0; bi < c.b; bi++) {
      const kq = pc.built.keys(bi);
      const kr = pc.built.rawKeys(bi);
      for (let t = 0; t < a.cacheSeqlens[bi]!; t++) for (let h = 0; h < c.hQ; h++) for (let s = 0; s < c.sQ; s++) {
        const ko = (t * c.hKv + Math.floor(h / g)) * dQK;
        const qo = ((bi * c.sQ + s) * c.hQ + h) * dQK;
        let d = 0;
        for (let e = 0; e < dQK; e++) d += a.q[qo + e]! * (kq[ko + e]! - kr[ko + e]!);
        delta = Math.max(delta, Math.abs(d * a.softmaxScale));
      }
      for (let e = 0; e < kq.length; e++) {
        if (e % dQK < a.dV) {
          dv = Math.max(dv, Math.abs(kq[e]! - kr[e]!));
          vmax = Math.max(vmax, Math.abs(kr[e]!));
        }
      }
    }
    // e4m3 keeps 3 mantissa bits: the element error is ≤ 2^-4 relative (2^-10·scale in the subnormal range).
    assert.ok(dv <= 2 ** -4 * vmax + 1e-6, `max |V̂−V| ${dv}`);
    const outBound = dv + Math.expm1(2 * delta) * vmax + 1e-5;
    for (const { backend, threads } of BACKENDS) {
      const got = await (await kernelOf(backend, threads)).flashMlaWithKvcache(a);
      const o = checkIsAllclose(`${backend} fp8 out vs raw`, got.out, raw.out, outBound, 0, 1);
      const l = checkIsAllclose(`${backend} fp8 lse vs raw`, got.lse, raw.lse, delta + 1e-5, 0, 1);
      assert.ok(o.ok, `${o.message} (bound ${outBound})`);
      assert.ok(l.ok, `${l.message} (bound ${delta})`);
    }
  });
});

for (const { backend, threads } of BACKENDS) {
  describe(`flashmla ${backend} ×${threads}: edge cases`, () => {
    const k = () => kernelOf(backend, threads);

    test('zero-length requests and causal rows without keys: out 0, lse +inf, never NaN', async () => {
      for (const causal of [false, true]) {
        const c: MlaCase = { b: 4, sQ: 4, sK: 0, hQ: 3, hKv: 1, varlen: false, causal };
        const built = buildCase(c, { seed: 11, numParts: 3, seqlens: [0, 2, 0, 70] });
        const got = await (await k()).flashMlaWithKvcache(built.args);
        const exp = denseSdpaF64(built.args.q, built.keys, built.args.cacheSeqlens, { b: 4, sQ: 4, hQ: 3, hKv: 1, dQK: 576, dV: 512 }, built.args.softmaxScale, causal);
        assert.ok(got.out.every((x) => Number.isFinite(x)));
        const lseInf = Array.from(got.lse).filter((x) => x === Infinity).length;
        // Requests 0 and 2 (3 heads × 4 rows each); with causal, request 1 (len 2) has 2 rows with no keys.
        assert.equal(lseInf, causal ? 24 + 6 : 24);
        for (let i = 0; i < 3 * 4 * 512; i++) assert.equal(got.out[i], 0);
        const o = checkIsAllclose('out', got.out, exp.out, TOL.out.abs, TOL.out.rel, TOL.out.cos);
        const l = checkIsAllclose('lse', got.lse, exp.lse, TOL.lse.abs, TOL.lse.rel, TOL.lse.cos);
        assert.ok(o.ok, o.message);
        assert.ok(l.ok, l.message);
      }
    });

    test('writes into caller buffers; small head dims work (dQK 192, dV 128)', async () => {
      const c: MlaCase = { b: 2, sQ: 2, sK: 90, hQ: 4, hKv: 2, varlen: true, causal: true };
      const built = buildCase(c, { seed: 5, numParts: 5, dQK: 192, dV: 128 });
      const out = new Float32Array(2 * 2 * 4 * 128);
      const lse = new Float32Array(2 * 4 * 2);
      const got = await (await k()).flashMlaWithKvcache({ ...built.args, out, lse });
      assert.equal(got.out, out);
      assert.equal(got.lse, lse);
      const exp = denseSdpaF64(built.args.q, built.keys, built.args.cacheSeqlens, { b: 2, sQ: 2, hQ: 4, hKv: 2, dQK: 192, dV: 128 }, built.args.softmaxScale, true);
      assert.ok(checkIsAllclose('out', out, exp.out, TOL.out.abs, TOL.out.rel, TOL.out.cos).ok);
      assert.ok(checkIsAllclose('lse', lse, exp.lse, TOL.lse.abs, TOL.lse.rel, TOL.lse.cos).ok);
    });

    test('qkBegin: scores over q[qkBegin:]·K[qkBegin:], q\'s first values never used (rows [v | k])', async () => {
      const pc = qkBeginCase(21);
      const got = await (await k()).flashMlaWithKvcache(pc.built.args);
      assert.ok(got.out.every((x) => Number.isFinite(x)), 'NaN in q[:qkBegin] reached the output');
      assertMatches(pc, got);
      // Without qkBegin the same NaN columns poison every score.
      const full = await (await k()).flashMlaWithKvcache({ ...pc.built.args, qkBegin: 0 });
      assert.ok(Number.isNaN(full.out[0]));
      const rule = (e: unknown) => e instanceof FlashMlaError && e.rule === 'bad-shape';
      for (const qkBegin of [-1, 1.5, 320]) await assert.rejects(async () => (await k()).flashMlaWithKvcache({ ...pc.built.args, qkBegin }), rule);
    });

    test('bad arguments are FlashMlaError with a rule', async () => {
      const kk = await k();
      const c: MlaCase = { b: 2, sQ: 1, sK: 70, hQ: 2, hKv: 1, varlen: false, causal: false };
      const built = buildCase(c, { seed: 3 });
      const rule = (r: string) => (e: unknown) => e instanceof FlashMlaError && e.rule === r;
      const badTable = built.args.blockTable.slice();
      badTable[1] = INVALID_BLOCK_ID; // request 0 needs 2 blocks: its second entry is now invalid
      await assert.rejects(async () => kk.flashMlaWithKvcache({ ...built.args, blockTable: badTable }), rule('bad-block-id'));
      await assert.rejects(async () => kk.flashMlaWithKvcache({ ...built.args, q: new Float32Array(5) }), rule('bad-shape'));
      await assert.rejects(async () => kk.flashMlaWithKvcache({ ...built.args, meta: getMlaMetadata(Int32Array.from([70, 500]), 2, 1, 2) }), rule('bad-metadata'));
      await assert.rejects(async () => kk.flashMlaWithKvcache({ ...built.args, dV: 600 }), rule('bad-shape'));
      await assert.rejects(async () => kk.flashMlaWithKvcache({ ...built.args, cacheSeqlens: Int32Array.from([70, 200]) }), rule('bad-block-table'));
    });
  });
}
