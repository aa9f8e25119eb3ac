// Training parameters written as a Hugging Face checkpoint load back into the inference model
// (DeepseekModel.load, as `seekd serve --model DIR` does) with the same logits, and into training
// parameters bit for bit (F32) or rounded to BF16.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBackend } from '../kernels/index.ts';
import { parseConfig } from '../model/config.ts';
import { DeepseekModel } from '../model/deepseek.ts';
import { LatentCache } from '../model/latent-cache.ts';
import { tensorSpecs } from '../model/weight-map.ts';
import { roundToBf16 } from '../tensor/dtypes.ts';
import { mulberry32 } from '../tensor/random.ts';
import { writeTrainCheckpoint } from './checkpoint.ts';
import { Gemm } from './gemm.ts';
import { TrainModel } from './model.ts';
import { initTrainParams, loadTrainParams, namedParams } from './params.ts';

const cfg = {
  model_type: 'deepseek_v3', vocab_size: 40, hidden_size: 32, intermediate_size: 48, moe_intermediate_size: 16,
  num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: 16, kv_lora_rank: 16,
  qk_nope_head_dim: 8, qk_rope_head_dim: 8, v_head_dim: 8, n_routed_experts: 8, n_shared_experts: 1, num_experts_per_tok: 2,
  n_group: 2, topk_group: 1, routed_scaling_factor: 2.5, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true,
  first_k_dense_replace: 1, moe_layer_freq: 1, rope_theta: 10000, max_position_embeddings: 64, rms_norm_eps: 1e-6, rope_scaling: null,
  num_nextn_predict_layers: 1, tie_word_embeddings: false,
};

test('a written checkpoint loads into DeepseekModel with the training logits, and back into parameters', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-train-ck-'));
  const k = await loadBackend('wasm', { threads: 1 });
  try {
    const c = parseConfig(cfg);
    const params = initTrainParams(c, { seed: 3, std: 0.2 });
    const r = mulberry32(4);
    const bias = params.layers[1]!.moe!.bias!.data;
    for (let i = 0; i < bias.length; i++) bias[i] = (r() - 0.5) * 0.1;
    // Every tensor of the name table but the optional MTP embed/head (shared): 53 + 2 MoE layers × 3 × (8 − 1) experts.
    assert.equal(writeTrainCheckpoint(join(dir, 'f32'), cfg, c, params), tensorSpecs(c, { mtp: true }).filter((s) => !s.optional).length);
    assert.equal(namedParams(c, params).length + 2 * 3 * 7, 95);
    const model = new TrainModel(c, params, new Gemm(k));
    const w = Int32Array.from({ length: 12 }, () => Math.floor(r() * c.vocab_size));
    const train = model.forward([w]).logits.data;
    const inf = await DeepseekModel.load(join(dir, 'f32'), k);
    try {
      const n = w.length - 1;
      const cache = inf.createCache(LatentCache.blocksFor(n));
      const logits = inf.forward({ tokens: w.subarray(0, n), seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: n }] }, cache, { allPositions: true, attn: 'naive' });
      let d = 0;
      for (let i = 0; i < logits.length; i++) d = Math.max(d, Math.abs(logits[i]! - train[i]!));
      assert.ok(d <= 1e-5, `logits differ by ${d}`);
    } finally {
      inf.close();
    }
    const back = loadTrainParams(join(dir, 'f32')).params;
    const a = namedParams(c, params), b = namedParams(c, back);
    assert.deepEqual(b.map((x) => x.name), a.map((x) => x.name));
    a.forEach((x, i) => assert.deepEqual(b[i]!.tensor.data, x.tensor.data, x.name));
    assert.ok(b.every((x, i) => x.tensor.requiresGrad === a[i]!.tensor.requiresGrad));

    writeTrainCheckpoint(join(dir, 'bf16'), cfg, c, params, { dtype: 'bf16' });
    const half = namedParams(c, loadTrainParams(join(dir, 'bf16')).params);
    a.forEach((x, i) => {
      const want = x.name.endsWith('e_score_correction_bias') ? x.tensor.data : roundToBf16(Float32Array.from(x.tensor.data));
      assert.deepEqual(half[i]!.tensor.data, want, x.name);
    });
  } finally {
    await k.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});
