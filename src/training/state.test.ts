// Resume is exact: 3 steps, save, load into fresh objects, 3 more steps gives the losses and parameters
// of 6 uninterrupted steps bit for bit (parameters, AdamW moments and step, router biases all restored);
// likewise for an FP8 run, whose AdamW moments are stored in BF16 (the storage mode is restored too).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WasmDeepGemm } from '../kernels/deepgemm/index.ts';
import { loadBackend } from '../kernels/index.ts';
import { parseConfig } from '../model/config.ts';
import { DeepseekModel } from '../model/deepseek.ts';
import { mulberry32 } from '../tensor/random.ts';
import { SafetensorsFile } from '../weights/safetensors.ts';
import { Fp8Gemm } from './fp8.ts';
import { Gemm } from './gemm.ts';
import { TrainModel } from './model.ts';
import { AdamW } from './optim.ts';
import { roundBf16 } from '../tensor/dtypes.ts';
import { initTrainParams, namedParams, trainableTensors } from './params.ts';
import { loadTrainState, saveTrainState, TrainStateError } from './state.ts';
import { trainStep } from './step.ts';

const json = {
  model_type: 'deepseek_v3', vocab_size: 40, hidden_size: 32, intermediate_size: 48, moe_intermediate_size: 16,
  num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: 16, kv_lora_rank: 16,
  qk_nope_head_dim: 8, qk_rope_head_dim: 8, v_head_dim: 8, n_routed_experts: 8, n_shared_experts: 1, num_experts_per_tok: 2,
  n_group: 2, topk_group: 1, routed_scaling_factor: 2.5, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true,
  first_k_dense_replace: 1, moe_layer_freq: 1, rope_theta: 10000, max_position_embeddings: 64, rms_norm_eps: 1e-6, rope_scaling: null,
  num_nextn_predict_layers: 1, tie_word_embeddings: false,
};

test('save after 3 steps + load + 3 steps = 6 steps, bit for bit', async () => {
  const k = await loadBackend('wasm', { threads: 1 });
  const dir = mkdtempSync(join(tmpdir(), 'seekd-resume-'));
  try {
    const c = parseConfig(json);
    const r = mulberry32(2);
    const batches = Array.from({ length: 6 }, () => Array.from({ length: 3 }, () => Int32Array.from({ length: 12 }, () => Math.floor(r() * c.vocab_size))));
    const o = { schedule: { lr: 5e-3, warmupSteps: 2, totalSteps: 6 }, clip: 1, biasSpeed: 1e-3 };
    const fresh = () => {
      const params = initTrainParams(c, { seed: 9 });
      return { params, opt: new AdamW(trainableTensors(c, params)) };
    };
    const a = fresh();
    const ma = new TrainModel(c, a.params, new Gemm(k));
    const straight = batches.map((b) => trainStep(ma, a.opt, b, o).loss);

    const b = fresh();
    const mb = new TrainModel(c, b.params, new Gemm(k));
    const first = batches.slice(0, 3).map((x) => trainStep(mb, b.opt, x, o).loss);
    saveTrainState(dir, json, c, b.params, b.opt, { cursor: 3 });
    const s = loadTrainState(dir);
    assert.equal(s.opt.state.step, 3);
    assert.deepEqual(s.extra, { cursor: 3 });
    const ms = new TrainModel(s.config, s.params, new Gemm(k));
    const rest = batches.slice(3).map((x) => trainStep(ms, s.opt, x, o).loss);
    assert.deepEqual([...first, ...rest], straight);
    const pa = namedParams(c, a.params), ps = namedParams(c, s.params);
    pa.forEach((p, i) => assert.deepEqual(ps[i]!.tensor.data, p.tensor.data, p.name));
    assert.ok(a.params.layers[1]!.moe!.bias!.data.some((v) => v !== 0));
    assert.throws(() => loadTrainState(join(dir, 'nowhere')), TrainStateError);
    // The directory stays a model directory: the inference loader reads it, ignoring trainer/.
    const inf = await DeepseekModel.load(dir, k);
    inf.close();
    // The optimizer must hold the trainable parameters in name-table order.
    assert.throws(() => saveTrainState(dir, json, c, b.params, new AdamW(trainableTensors(c, b.params).reverse())), TrainStateError);
  } finally {
    await k.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('FP8 run (DeepGEMM products, BF16 AdamW moments): save after 3 steps + load + 3 steps = 6 steps, bit for bit', async () => {
  const k = await loadBackend('wasm', { threads: 1 });
  const dg = await WasmDeepGemm.create(1);
  const dir = mkdtempSync(join(tmpdir(), 'seekd-resume-fp8-'));
  try {
    const c = parseConfig(json);
    const r = mulberry32(3);
    const batches = Array.from({ length: 6 }, () => Array.from({ length: 3 }, () => Int32Array.from({ length: 12 }, () => Math.floor(r() * c.vocab_size))));
    const o = { schedule: { lr: 5e-3, warmupSteps: 2, totalSteps: 6 }, clip: 1, biasSpeed: 1e-3 };
    const model = (cc: typeof c, p: ReturnType<typeof initTrainParams>) => {
      const m = new TrainModel(cc, p, new Gemm(k));
      m.fp8 = new Fp8Gemm(dg);
      return m;
    };
    const fresh = () => {
      const params = initTrainParams(c, { seed: 9 });
      return { params, opt: new AdamW(trainableTensors(c, params), { moments: 'bf16' }) };
    };
    const a = fresh();
    const ma = model(c, a.params);
    const straight = batches.map((b) => trainStep(ma, a.opt, b, o).loss);
    const isBf16 = (x: ArrayLike<number>) => Array.prototype.every.call(x, (v: number) => v === roundBf16(v));
    a.opt.state.m.concat(a.opt.state.v).forEach((x) => assert.ok(isBf16(x), 'moments hold BF16 values'));
    assert.ok(a.opt.state.v.some((x) => x.some((v) => v !== 0)));

    const b = fresh();
    const mb = model(c, b.params);
    const first = batches.slice(0, 3).map((x) => trainStep(mb, b.opt, x, o).loss);
    saveTrainState(dir, json, c, b.params, b.opt, {});
    assert.equal(JSON.parse(readFileSync(join(dir, 'trainer', 'state.json'), 'utf8')).adamw.moments, 'bf16');
    const s = loadTrainState(dir);
    assert.equal(s.opt.moments, 'bf16');
    const f = SafetensorsFile.open(join(dir, 'trainer', 'optimizer.safetensors'));
    try {
      assert.deepEqual(new Set([...f.tensors.values()].map((t) => t.dtype)), new Set(['BF16']), 'moments written as BF16');
    } finally {
      f.close();
    }
    const rest = batches.slice(3).map((x) => trainStep(model(s.config, s.params), s.opt, x, o).loss);
    assert.deepEqual([...first, ...rest], straight);
    const pa = namedParams(c, a.params), ps = namedParams(c, s.params);
    pa.forEach((p, i) => assert.deepEqual(ps[i]!.tensor.data, p.tensor.data, p.name));
    a.opt.state.m.forEach((x, i) => assert.deepEqual(s.opt.state.m[i], x));
    a.opt.state.v.forEach((x, i) => assert.deepEqual(s.opt.state.v[i], x));

    // The same run with f32 moments differs (the rounding is really applied) and saves no `moments`.
    const fp = initTrainParams(c, { seed: 9 });
    const fo = new AdamW(trainableTensors(c, fp));
    const mf = model(c, fp);
    assert.notDeepEqual(batches.map((x) => trainStep(mf, fo, x, o).loss), straight);
    saveTrainState(dir, json, c, fp, fo, {});
    assert.equal(JSON.parse(readFileSync(join(dir, 'trainer', 'state.json'), 'utf8')).adamw.moments, undefined);
    assert.equal(loadTrainState(dir).opt.moments, undefined);
  } finally {
    await dg.dispose();
    await k.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});
