// WGSL FlashMLA against a dense float64 SDPA (src/kernels/flashmla/testing.ts: FlashMLA's case builder
// with permuted block tables, INVALID_BLOCK_ID in unused entries, NaN in every unused cache slot and
// zero-length requests, and kernelkit's check_is_allclose with FlashMLA's tolerances:
// out abs 8e-4 / rel 2.01/128 / cos 5e-6, lse abs 1e-6 / rel 8.01/65536 / cos 5e-6).
//
// The matrix is FlashMLA's scaled down for llvmpipe (~0.1-0.3 GFLOP/s on this kernel): b {1, 2, 6} ×
// sQ {1, 2, 4} × sK {20, 140, 1024} × hQ {1, 3, 16, 64} × hKv {1, 2} × varlen × causal, V3 dims
// (dQK 576, dV 512). Not the full product (1152 cases) but a covering subset: every pair of values of every
// two axes appears in some case, picked greedily by pairs covered per unit of cost, so the expensive
// corners (b 6 × hQ 64 × sK 1024) are never combined in one case.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { getMlaMetadata } from '../flashmla/metadata.ts';
import { loadFlashMla } from '../flashmla/index.ts';
import { assertMatches, buildCase, checkIsAllclose, denseSdpaF64, qkBeginCase, TOL, type MlaCase } from '../flashmla/testing.ts';
import { FlashMlaError, type FlashMlaResult, type KvCacheDType } from '../flashmla/types.ts';
import { closeDevice } from './device.ts';
import { createWebGpuFlashMla, flashMlaWithKvcacheWebGpu } from './flashmla.ts';
import { pipelinesCreated } from './pipelines.ts';

after(closeDevice);

const AXES = {
  b: [1, 2, 6], sQ: [1, 2, 4], sK: [20, 140, 1024], hQ: [1, 3, 16, 64], hKv: [1, 2],
  varlen: [false, true], causal: [false, true],
} as const;
type Axis = keyof typeof AXES;
const NAMES = Object.keys(AXES) as Axis[];
const cost = (c: MlaCase) => c.b * c.sQ * c.hQ * c.sK;

/** Greedy pairwise covering of AXES, cheapest-per-new-pair first (deterministic). */
function coveringCases(overhead = 20_000): MlaCase[] {
  const all: MlaCase[] = [];
  for (const b of AXES.b) for (const sQ of AXES.sQ) for (const sK of AXES.sK) for (const hQ of AXES.hQ)
    for (const hKv of AXES.hKv) for (const varlen of AXES.varlen) for (const causal of AXES.causal) {
      if (hQ % hKv === 0) all.push({ b, sQ, sK, hQ, hKv, varlen, causal });
    }
  const pairs = (c: MlaCase) => {
    const out: string[] = [];
    for (let i = 0; i < NAMES.length; i++) for (let j = i + 1; j < NAMES.length; j++) out.push(`${NAMES[i]}=${c[NAMES[i]!]}|${NAMES[j]}=${c[NAMES[j]!]}`);
    return out;
  };
  const needed = new Set(all.flatMap(pairs));
  const chosen: MlaCase[] = [];
  while (needed.size > 0) {
    let best: MlaCase | null = null;
    let bestScore = 0;
    for (const c of all) {
      const gain = pairs(c).filter((p) => needed.has(p)).length;
      const score = gain / (cost(c) + overhead);
      if (gain > 0 && score > bestScore) { bestScore = score; best = c; }
    }
    for (const p of pairs(best!)) needed.delete(p);
    chosen.push(best!);
  }
  return chosen;
}

const CASES = coveringCases();
const PARTS = [1, 3, 8, 17];
const SCALES = [1 / Math.sqrt(576), 192 ** -0.5 * (0.1 * Math.log(40) + 1) ** 2, 1.0];
const measured = { outAbs: 0, outCos: 0, lseAbs: 0, lseRel: 0, cases: 0 };
after(() => console.log(`# flashmla webgpu over ${measured.cases} cases: out max abs ${measured.outAbs.toExponential(2)}, ` +
  `out cos_diff ${measured.outCos.toExponential(2)}, lse max abs ${measured.lseAbs.toExponential(2)}, lse max rel ${measured.lseRel.toExponential(2)}`));

async function runCase(c: MlaCase, seed: number, dtype: KvCacheDType): Promise<void> {
  const built = buildCase(c, { seed, dtype, numParts: PARTS[seed % PARTS.length], softmaxScale: SCALES[seed % SCALES.length] });
  const a = built.args;
  const want = denseSdpaF64(a.q, built.keys, a.cacheSeqlens,
    { b: c.b, sQ: c.sQ, hQ: c.hQ, hKv: c.hKv, dQK: a.kCache.headDim, dV: a.dV }, a.softmaxScale, c.causal);
  const got = await flashMlaWithKvcacheWebGpu(a);
  const name = `${JSON.stringify(c)} ${dtype} parts ${PARTS[seed % PARTS.length]} seqlens [${[...a.cacheSeqlens]}]`;
  const o = checkIsAllclose(`${name} out`, got.out, want.out, TOL.out.abs, TOL.out.rel, TOL.out.cos);
  const l = checkIsAllclose(`${name} lse`, got.lse, want.lse, TOL.lse.abs, TOL.lse.rel, TOL.lse.cos);
  assert.ok(o.ok, o.message);
  assert.ok(l.ok, l.message);
  measured.cases++;
  measured.outAbs = Math.max(measured.outAbs, o.maxAbs);
  measured.outCos = Math.max(measured.outCos, Math.abs(o.cosDiff));
  measured.lseAbs = Math.max(measured.lseAbs, l.maxAbs);
  for (let i = 0; i < got.lse.length; i++) {
    if (Number.isFinite(want.lse[i]!)) measured.lseRel = Math.max(measured.lseRel, Math.abs(got.lse[i]! - want.lse[i]!) / Math.abs(want.lse[i]!));
  }
}

test('the covering subset covers every pair of axis values at a bounded cost', () => {
  assert.ok(CASES.length >= 12 && CASES.length <= 30, `${CASES.length} cases`);
  const total = CASES.reduce((s, c) => s + cost(c), 0);
  assert.ok(total < 600_000, `cost ${total}`);
  for (const [i, x] of NAMES.entries()) for (const y of NAMES.slice(i + 1)) {
    for (const vx of AXES[x]) for (const vy of AXES[y]) {
      if (x === 'hQ' && y === 'hKv' && (vx as number) % (vy as number) !== 0) continue;
      assert.ok(CASES.some((c) => c[x] === vx && c[y] === vy), `${x}=${vx} ${y}=${vy} uncovered`);
    }
  }
});

test('f32 cache: the covering matrix matches float64 within FlashMLA tolerances', async () => {
  for (const [i, c] of CASES.entries()) await runCase(c, i + 1, 'f32');
});

const SMALL: MlaCase[] = [
  { b: 6, sQ: 2, sK: 140, hQ: 3, hKv: 1, varlen: true, causal: true },
  { b: 2, sQ: 1, sK: 1024, hQ: 16, hKv: 2, varlen: false, causal: false },
];

test('bf16 cache (Uint16 bits) matches float64 on the bf16 values', async () => {
  for (const [i, c] of SMALL.entries()) await runCase(c, 100 + i, 'bf16');
});

test('fp8 cache (656 B tokens: e4m3 + f32 tile scales + bf16 RoPE) matches float64 on the dequantized values', async () => {
  for (const [i, c] of SMALL.entries()) await runCase(c, 200 + i, 'fp8');
});

test('empty batch rows: every request of length 0 gives out 0 and lse +inf, NaN cache never read', async () => {
  const c: MlaCase = { b: 3, sQ: 2, sK: 20, hQ: 4, hKv: 2, varlen: false, causal: true };
  const built = buildCase(c, { seed: 7, seqlens: [0, 0, 0], numParts: 3 });
  const got: FlashMlaResult = await flashMlaWithKvcacheWebGpu(built.args);
  assert.ok(got.out.every((v) => v === 0));
  assert.ok(got.lse.every((v) => v === Infinity));
});

test('causal rows with no visible key (seqlen < sQ) are 0 / +inf; the rest match', async () => {
  const c: MlaCase = { b: 2, sQ: 4, sK: 2, hQ: 2, hKv: 1, varlen: false, causal: true };
  await runCase(c, 9, 'f32');
  const built = buildCase(c, { seed: 9, seqlens: [1, 2], numParts: 2 });
  const got = await flashMlaWithKvcacheWebGpu(built.args);
  // request 0 (1 key): queries 0..2 see nothing; lse [b, hQ, sQ]
  for (let h = 0; h < 2; h++) for (let s = 0; s < 3; s++) assert.equal(got.lse[h * 4 + s], Infinity);
  assert.ok(Number.isFinite(got.lse[3]!));
});

test('qkBegin: scores over q[qkBegin:]·K[qkBegin:], q\'s first values never used (rows [v | k])', async () => {
  const pc = qkBeginCase(21);
  const got = await flashMlaWithKvcacheWebGpu(pc.built.args);
  assert.ok(got.out.every((x) => Number.isFinite(x)), 'NaN in q[:qkBegin] reached the output');
  assertMatches(pc, got);
  await assert.rejects(async () => flashMlaWithKvcacheWebGpu({ ...pc.built.args, qkBegin: 320 }), (e: unknown) => e instanceof FlashMlaError && e.rule === 'bad-shape');
});

test('a second call compiles no pipeline; results land in the given out/lse; stale metadata is refused', async () => {
  const c: MlaCase = { b: 2, sQ: 1, sK: 140, hQ: 16, hKv: 1, varlen: true, causal: false };
  const built = buildCase(c, { seed: 11, numParts: 3 });
  await flashMlaWithKvcacheWebGpu(built.args);
  const before = pipelinesCreated();
  const out = new Float32Array(built.args.q.length / 576 * 512);
  const lse = new Float32Array(2 * 16);
  const got = await flashMlaWithKvcacheWebGpu({ ...built.args, out, lse });
  assert.equal(pipelinesCreated(), before);
  assert.equal(got.out, out);
  assert.equal(got.lse, lse);
  const stale = getMlaMetadata(Int32Array.from([5, 5]), 16, 1, 3);
  await assert.rejects(flashMlaWithKvcacheWebGpu({ ...built.args, meta: stale }), FlashMlaError);
});

test('loadFlashMla("webgpu") gives the WebGPU kernel with the FlashMlaKernel contract', async () => {
  const k = await loadFlashMla('webgpu');
  assert.equal(createWebGpuFlashMla().backend, 'webgpu');
  assert.equal(k.backend, 'webgpu');
  assert.ok(k.numParts(2, 1, 128, 1) >= 1);
  const c: MlaCase = { b: 1, sQ: 1, sK: 20, hQ: 1, hKv: 1, varlen: false, causal: false };
  const built = buildCase(c, { seed: 12, numParts: k.numParts(1, 1, 1, 1) });
  const r = await k.flashMlaWithKvcache(built.args);
  assert.equal(r.out.length, 512);
});
