// AdamW, the warm-up + cosine schedule and clipping against hand-computed values, and a smoke run:
// a few training steps of a tiny DeepSeek-V3 model (MoE, MTP, bias updates) on the wasm kernels lower
// the loss, and repeat bit for bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadBackend } from '../kernels/index.ts';
import { parseConfig } from '../model/config.ts';
import { Tensor } from '../tensor/autograd/index.ts';
import { mulberry32 } from '../tensor/random.ts';
import { Gemm } from './gemm.ts';
import { TrainModel } from './model.ts';
import { AdamW, clipGradNorm, globalGradNorm, learningRate } from './optim.ts';
import { roundBf16 } from '../tensor/dtypes.ts';
import { initTrainParams, trainableTensors } from './params.ts';
import { trainStep } from './step.ts';

test('AdamW: two steps by hand (decoupled decay on matrices only, bias correction)', () => {
  const w = new Tensor(Float64Array.of(1, -2, 0.5, 3), [2, 2], true);
  const v = new Tensor(Float64Array.of(0.5), [1], true);
  const opt = new AdamW([w, v], { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 });
  w.grad = Float64Array.of(0.1, -0.2, 0, 1);
  v.grad = Float64Array.of(-0.5);
  opt.step(0.01);
  // Step 1: m̂ = g, v̂ = g², so the update is lr·g/(|g| + eps) = ±lr (0 for g = 0); decay first: p·(1 − lr·wd).
  const d = 1 - 0.01 * 0.1;
  const exp1 = [1 * d - 0.01 * 0.1 / (0.1 + 1e-8), -2 * d + 0.01 * 0.2 / (0.2 + 1e-8), 0.5 * d, 3 * d - 0.01 * 1 / (1 + 1e-8)];
  exp1.forEach((e, i) => assert.ok(Math.abs(w.data[i]! - e) < 1e-15, `w[${i}]`));
  assert.ok(Math.abs(v.data[0]! - (0.5 + 0.01 * 0.5 / (0.5 + 1e-8))) < 1e-15, 'vectors do not decay');
  // Step 2 with g = 0.3 on w[0] (moments from step 1: m = 0.1·0.1, v = 0.01·0.01).
  w.grad = Float64Array.of(0.3, 0, 0, 0);
  v.grad = null;
  const before = w.data[0]!;
  opt.step(0.02);
  const m = 0.9 * (0.1 * 0.1) + 0.1 * 0.3;
  const s = 0.99 * (0.01 * 0.01) + 0.01 * 0.09;
  const mh = m / (1 - 0.81), sh = s / (1 - 0.99 ** 2);
  const want = before * (1 - 0.02 * 0.1) - 0.02 * mh / (Math.sqrt(sh) + 1e-8);
  assert.ok(Math.abs(w.data[0]! - want) < 1e-15);
  assert.equal(opt.state.step, 2);
});

test('AdamW with BF16 moments: each stored moment is the f32 moment rounded to BF16 (nearest, ties to even), the update reads it', () => {
  // roundBf16: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 (even: 1); 1 + 3·2^-8 ties up to 1 + 2^-6; just above a tie rounds up.
  assert.equal(roundBf16(1 + 2 ** -8), 1);
  assert.equal(roundBf16(1 + 3 * 2 ** -8), 1 + 2 ** -6);
  assert.equal(roundBf16(1 + 2 ** -8 + 2 ** -20), 1 + 2 ** -7);
  assert.equal(roundBf16(-0.1), -0.10009765625);
  assert.ok(Number.isNaN(roundBf16(NaN)));
  assert.equal(roundBf16(Infinity), Infinity);
  const g = Float32Array.of(0.1, -0.3, 1e-3, 0.7);
  const w = new Tensor(Float32Array.of(1, -2, 0.5, 3), [2, 2], true);
  const opt = new AdamW([w], { moments: 'bf16' });
  const ref = Float32Array.from(w.data);
  let m = [0, 0, 0, 0], v = [0, 0, 0, 0];
  for (let s = 1; s <= 3; s++) {
    w.grad = g;
    opt.step(0.01);
    const c1 = 1 - 0.9 ** s, c2 = 1 - 0.95 ** s, decay = 1 - 0.01 * 0.1;
    m = m.map((x, i) => roundBf16(0.9 * x + 0.1 * g[i]!));
    v = v.map((x, i) => roundBf16(0.95 * x + 0.05 * g[i]! * g[i]!));
    ref.forEach((p, i) => { ref[i] = p * decay - (0.01 * (m[i]! / c1)) / (Math.sqrt(v[i]! / c2) + 1e-8); });
    assert.deepEqual([...opt.state.m[0]!], m, `m at step ${s}`);
    assert.deepEqual([...opt.state.v[0]!], v, `v at step ${s}`);
    assert.deepEqual(w.data, ref, `parameters at step ${s}`);
  }
  // Not what f32 moments give (0.1·0.1 is not a BF16 value).
  const w2 = new Tensor(Float32Array.of(1, -2, 0.5, 3), [2, 2], true);
  const o2 = new AdamW([w2]);
  w2.grad = g;
  o2.step(0.01);
  assert.notEqual(o2.state.m[0]![0], opt.state.m[0]![0]);
});

test('learning rate: linear warm-up, cosine to minLr, flat after the end', () => {
  const s = { lr: 1e-3, warmupSteps: 10, totalSteps: 110, minLr: 1e-4 };
  assert.equal(learningRate(s, 1), 1e-4);
  assert.equal(learningRate(s, 10), 1e-3);
  assert.ok(Math.abs(learningRate(s, 60) - (1e-4 + 0.5 * 9e-4)) < 1e-15); // half-way: midpoint
  assert.ok(Math.abs(learningRate(s, 110) - 1e-4) < 1e-15);
  assert.ok(Math.abs(learningRate(s, 500) - 1e-4) < 1e-15);
  for (let t = 11; t < 110; t++) assert.ok(learningRate(s, t + 1) < learningRate(s, t));
});

test('global-norm clipping scales every gradient by max/(norm + 1e-6) only above the max', () => {
  const a = new Tensor(new Float64Array(2), [2], true), b = new Tensor(new Float64Array(1), [1], true);
  a.grad = Float64Array.of(3, 0);
  b.grad = Float64Array.of(4);
  assert.equal(globalGradNorm([a, b]), 5);
  assert.equal(clipGradNorm([a, b], 10), 5);
  assert.deepEqual([...a.grad], [3, 0]);
  clipGradNorm([a, b], 1);
  const c = 1 / (5 + 1e-6);
  assert.deepEqual([...a.grad, ...b.grad], [3 * c, 0, 4 * c]);
});

const tinyJson = {
  model_type: 'deepseek_v3', vocab_size: 32, hidden_size: 32, intermediate_size: 48, moe_intermediate_size: 16,
  num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: 16, kv_lora_rank: 16,
  qk_nope_head_dim: 8, qk_rope_head_dim: 8, v_head_dim: 8, n_routed_experts: 8, n_shared_experts: 1, num_experts_per_tok: 2,
  n_group: 2, topk_group: 1, routed_scaling_factor: 2.5, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true,
  first_k_dense_replace: 1, moe_layer_freq: 1, rope_theta: 10000, max_position_embeddings: 64, rms_norm_eps: 1e-6, rope_scaling: null,
  num_nextn_predict_layers: 1, tie_word_embeddings: false,
};

test('smoke: AdamW steps on a tiny MoE + MTP model lower the loss, move the router bias, and repeat bit for bit', async (t) => {
  const k = await loadBackend('wasm', { threads: 1 });
  try {
    const c = parseConfig(tinyJson);
    // A learnable stream: repeated short patterns of tokens.
    const r = mulberry32(1);
    const patterns = Array.from({ length: 4 }, () => Array.from({ length: 5 }, () => Math.floor(r() * c.vocab_size)));
    const windows = Array.from({ length: 4 }, (_, i) => Int32Array.from({ length: 17 }, (_, j) => patterns[(i + Math.floor(j / 5)) % 4]![j % 5]!));
    const run = (steps: number) => {
      const params = initTrainParams(c, { seed: 7 });
      const model = new TrainModel(c, params, new Gemm(k));
      const opt = new AdamW(trainableTensors(c, params));
      const o = { schedule: { lr: 1e-2, warmupSteps: 3, totalSteps: steps }, clip: 1, biasSpeed: 1e-3 };
      const stats = Array.from({ length: steps }, () => trainStep(model, opt, windows, o));
      return { stats, params, final: model.forward(windows) };
    };
    const a = run(12);
    const first = a.stats[0]!, last = a.final;
    t.diagnostic(`main loss ${first.mainLoss.toFixed(4)} → ${last.mainLoss.toFixed(4)}, MTP ${first.mtpLosses[0]!.toFixed(4)} → ${last.mtpLosses[0]!.toFixed(4)}`);
    assert.ok(Math.abs(first.mainLoss - Math.log(c.vocab_size)) < 0.1, `initial loss ${first.mainLoss} ≈ ln V`);
    assert.ok(last.mainLoss < first.mainLoss - 0.5, `main loss ${first.mainLoss} → ${last.mainLoss}`);
    assert.ok(last.mtpLosses[0]! < first.mtpLosses[0]!, 'the MTP loss falls too');
    assert.ok(a.stats.every((s) => Number.isFinite(s.gradNorm) && s.gradNorm > 0));
    const bias = a.params.layers[1]!.moe!.bias!.data;
    assert.ok(bias.some((v) => v !== 0), 'the aux-loss-free step moved the bias');
    const b = run(12);
    assert.deepEqual(b.stats.map((s) => s.loss), a.stats.map((s) => s.loss));
    assert.deepEqual(b.params.layers[1]!.moe!.experts.gate.data, a.params.layers[1]!.moe!.experts.gate.data);
  } finally {
    await k.dispose();
  }
});
