// FP8 mixed-precision training (DeepSeek-V3 §3.3) through the DeepGEMM port: the products are DeepGEMM's
// (calc_diff < 0.001 against f32, its own test bound), training with them tracks f32 training closely
// and keeps going down, and a DualPipeV pipeline still equals PP 1 to the bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadBackend } from '../kernels/index.ts';
import { calcDiff, quantizePerToken, refDeepGemm, WasmDeepGemm } from '../kernels/deepgemm/index.ts';
import { parseConfig } from '../model/config.ts';
import { mulberry32 } from '../tensor/random.ts';
import { Fp8Gemm } from './fp8.ts';
import { Gemm, transpose } from './gemm.ts';
import { AdamW } from './optim.ts';
import { roundBf16 } from '../tensor/dtypes.ts';
import { initTrainParams, trainableTensors } from './params.ts';
import { LocalEngine, PipelineEngine } from './pipeline/runtime.ts';
import { TINY_TRAIN_CONFIG } from './tiny-config.ts';
import { trainStepChunks, WindowSampler } from './trainer.ts';

test('FP8 routed experts: one grouped FP8 product equals one FP8 product per expert, bit for bit', async () => {
  const dg = await WasmDeepGemm.create(1);
  try {
    const r = mulberry32(7);
    const rand = (n: number) => Float32Array.from({ length: n }, () => 2 * r() - 1);
    const f8 = new Fp8Gemm(dg);
    // 5 experts, segments of 0, 3 (GEMV path), 20, 130 (packed GEMM; 2 row panels) rows and a gap of unrouted rows; K across a block edge.
    const G = 5, N = 192, K = 200;
    const start = Int32Array.of(0, 0, 3, 23, 160), count = Int32Array.of(0, 3, 20, 130, 7);
    const M = 170, a = rand(M * K), b = rand(G * N * K);
    const seg = { start, count };
    const got = f8.groupedNt(a, M, b, G, N, K, seg);
    assert.equal(f8.groupedCalls, 1);
    assert.deepEqual(got, f8.groupedNtPerExpert(a, M, b, G, N, K, seg));
    assert.ok(got.subarray(153 * N, 160 * N).every((v) => v === 0), 'rows in no segment are 0');
  } finally {
    await dg.dispose();
  }
});

test('FP8 training: DeepGEMM products, close to f32 training, PP 2 = PP 1 to the bit', async (t) => {
  const k = await loadBackend('wasm', { threads: 1 });
  const dg = await WasmDeepGemm.create(1);
  try {
    const r = mulberry32(5);
    const rand = (n: number) => Float32Array.from({ length: n }, () => 2 * r() - 1);
    const f8 = new Fp8Gemm(dg), f32 = new Gemm(k);
    // Fprop, Dgrad and Wgrad shapes, K across a 128 block edge.
    const M = 70, N = 40, K = 200;
    const a = rand(M * K), b = rand(N * K), dy = rand(M * N);
    assert.ok(calcDiff(f8.nt(a, M, b, N, K), f32.nt(a, M, b, N, K)) < 1e-3);
    assert.ok(calcDiff(f8.nn(dy, M, b, N, K), f32.nn(dy, M, b, N, K)) < 1e-3);
    assert.ok(calcDiff(f8.tn(dy, a, M, N, K), f32.tn(dy, a, M, N, K)) < 1e-3);
    assert.equal(f8.fp8Calls, 3);
    // Wgrad is the 1D1D product: dyᵀ and xᵀ both per row in 1x128 tiles along the tokens, bit for bit.
    assert.equal(f8.wgradCalls, 1);
    const wgrad = refDeepGemm.fp8GemmNt1d1d(quantizePerToken(transpose(dy, M, N), N, M), quantizePerToken(transpose(a, M, K), K, M));
    assert.deepEqual(f8.tn(dy, a, M, N, K), wgrad);
    // Tokens (K of Wgrad) across two 128 blocks.
    const T = 300, dy2 = rand(T * N), x2 = rand(T * K);
    assert.ok(calcDiff(f8.tn(dy2, x2, T, N, K), f32.tn(dy2, x2, T, N, K)) < 1e-3);

    const c = parseConfig(TINY_TRAIN_CONFIG);
    const phrase = Array.from({ length: 30 }, () => Math.floor(r() * c.vocab_size));
    const tokens = Int32Array.from({ length: 1200 }, (_, i) => phrase[i % 30]!);
    const shape = { chunks: 4, microBatch: 2, seqLen: 8 };
    const sampler = new WindowSampler(tokens, shape.seqLen, 1);
    const o = { schedule: { lr: 1e-2, warmupSteps: 1, totalSteps: 4 }, clip: 1, biasSpeed: 1e-3, mtpLambda: 0.3 };
    const run = async (mode: 'f32' | 'fp8' | 'fp8-pp2') => {
      const params = initTrainParams(c, { seed: 9 });
      const opt = new AdamW(trainableTensors(c, params), mode === 'f32' ? {} : { moments: 'bf16' });
      const fp8 = mode === 'fp8' ? new Fp8Gemm(dg) : null;
      const eng = mode === 'fp8-pp2'
        ? await PipelineEngine.create(c, TINY_TRAIN_CONFIG, params, { kind: 'dualpipev', pp: 2, ...shape, fp8: true })
        : new LocalEngine(c, params, f32, shape.chunks, {}, fp8);
      const losses: number[] = [];
      try {
        for (let s = 1; s <= 4; s++) losses.push((await trainStepChunks(eng, c, params, opt, sampler.batch(s, shape), o)).mainLoss);
      } finally {
        await eng.close();
      }
      // 20 projections a forward, 3 GEMMs each (the experts' Fprop and Dgrad as one grouped call each).
      if (fp8) assert.ok(fp8.fp8Calls > 4 * 4 * 3 * 20 && fp8.groupedCalls > 0 && fp8.wgradCalls > 4 * 4 * 20, `${fp8.fp8Calls} FP8 products`);
      if (mode !== 'f32') opt.state.m.concat(opt.state.v).forEach((x) => assert.ok(x.every((v) => v === roundBf16(v)), 'moments are BF16 values'));
      return losses;
    };
    const ref = await run('f32');
    const q = await run('fp8');
    t.diagnostic(`main loss f32 ${ref.map((l) => l.toFixed(4)).join(' ')} / fp8 ${q.map((l) => l.toFixed(4)).join(' ')}`);
    assert.notDeepEqual(q, ref);
    q.forEach((l, i) => assert.ok(Math.abs(l - ref[i]!) < 0.02 * ref[i]!, `step ${i + 1}: fp8 ${l} vs f32 ${ref[i]}`));
    assert.ok(q[3]! < q[0]!, `the loss goes down: ${q.join(', ')}`);
    assert.deepEqual(await run('fp8-pp2'), q);
  } finally {
    await dg.dispose();
    await k.dispose();
  }
});
