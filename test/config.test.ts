// config.json parsing: the family's real configs are accepted verbatim; unsupported values are refused
// with a ConfigError naming the field.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, isMoeLayer, parseConfig, softmaxScale } from '../src/model/config.ts';
import { ropeInvFreq, ropeMscale } from '../src/model/rope.ts';
import { REF_DIR } from './helpers.ts';

const tiny = () => JSON.parse(readFileSync(join(REF_DIR, 'tiny-v3-fp8', 'config.json'), 'utf8')) as Record<string, unknown>;

// DeepSeek-V2-Lite's published config.json (architecture fields).
const V2_LITE = {
  model_type: 'deepseek_v2', vocab_size: 102400, hidden_size: 2048, intermediate_size: 10944, moe_intermediate_size: 1408,
  num_hidden_layers: 27, num_attention_heads: 16, num_key_value_heads: 16, n_shared_experts: 2, n_routed_experts: 64,
  routed_scaling_factor: 1.0, kv_lora_rank: 512, q_lora_rank: null, qk_rope_head_dim: 64, v_head_dim: 128, qk_nope_head_dim: 128,
  topk_method: 'greedy', n_group: 1, topk_group: 1, num_experts_per_tok: 6, moe_layer_freq: 1, first_k_dense_replace: 1,
  norm_topk_prob: false, scoring_func: 'softmax', aux_loss_alpha: 0.001, seq_aux: true, hidden_act: 'silu',
  max_position_embeddings: 163840, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, tie_word_embeddings: false,
  rope_scaling: { beta_fast: 32, beta_slow: 1, factor: 40, mscale: 0.707, mscale_all_dim: 0.707, original_max_position_embeddings: 4096, type: 'yarn' },
};

describe('config', () => {
  it('reads the tiny V3 config and derives the reference softmax scale and YaRN range', () => {
    const c = parseConfig(tiny());
    assert.equal(c.q_lora_rank, 96);
    assert.equal(c.topk_method, 'noaux_tc');
    assert.deepEqual(c.quantization_config?.weight_block_size, [128, 128]);
    assert.ok(Math.abs(softmaxScale(c) - 0.19124944415602058) < 1e-9);
    assert.equal(ropeMscale(c), 1);
    // YaRN correction range [5, 12] of 16: dims < 5 keep the base frequency, dims > 12 are divided by 40.
    const inv = ropeInvFreq(c);
    assert.ok(Math.abs(inv[4]! - 1 / 10000 ** (8 / 32)) < 1e-7);
    assert.ok(Math.abs(inv[13]! - 1 / 10000 ** (26 / 32) / 40) < 1e-9);
    assert.deepEqual([0, 1, 2].map((l) => isMoeLayer(c, l)), [false, true, true]);
  });

  it('reads DeepSeek-V2-Lite (q_proj, softmax/greedy, mscale 0.707)', () => {
    const c = parseConfig(V2_LITE);
    assert.equal(c.q_lora_rank, null);
    assert.equal(c.n_shared_experts, 2);
    assert.equal(c.scoring_func, 'softmax');
    assert.equal(c.quantization_config, null);
    const m = 0.1 * 0.707 * Math.log(40) + 1;
    assert.ok(Math.abs(softmaxScale(c) - 192 ** -0.5 * m * m) < 1e-12);
    assert.equal(ropeMscale(c), 1);
  });

  it('moe_layer_freq and first_k_dense_replace follow the HF rule', () => {
    const c = parseConfig({ ...V2_LITE, first_k_dense_replace: 0, moe_layer_freq: 2, num_hidden_layers: 5 });
    assert.deepEqual([0, 1, 2, 3, 4].map((l) => isMoeLayer(c, l)), [true, false, true, false, true]);
    const dense = parseConfig({ ...V2_LITE, n_routed_experts: null });
    assert.equal(isMoeLayer(dense, 3), false);
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['topk_method', { topk_method: 'foo' }, /unsupported topk_method "foo"/],
    ['scoring_func', { scoring_func: 'relu' }, /unsupported scoring_func "relu"/],
    ['model_type', { model_type: 'llama' }, /unsupported model_type "llama"/],
    ['hidden_act', { hidden_act: 'gelu' }, /unsupported hidden_act "gelu"/],
    ['attention_bias', { attention_bias: true }, /attention_bias/],
    ['rope_scaling.type', { rope_scaling: { type: 'linear', factor: 2 } }, /unsupported rope_scaling.type "linear"/],
    ['rope_scaling.factor', { rope_scaling: { type: 'yarn' } }, /factor/],
    ['quantization_config.weight_block_size', { quantization_config: { quant_method: 'fp8', weight_block_size: [64, 64] } }, /weight_block_size/],
    ['quantization_config.quant_method', { quantization_config: { quant_method: 'gptq' } }, /quant_method "gptq"/],
    ['num_key_value_heads', { num_key_value_heads: 2 }, /num_key_value_heads/],
    ['n_group', { n_group: 3 }, /not divisible by n_group/],
    ['topk_group', { topk_group: 9 }, /topk_group 9 exceeds n_group/],
    ['num_experts_per_tok', { num_experts_per_tok: 17 }, /exceeds n_routed_experts/],
    ['hidden_size', { hidden_size: -1 }, /hidden_size must be an integer/],
    ['q_lora_rank', { q_lora_rank: undefined }, /missing required field q_lora_rank/],
    ['qk_rope_head_dim', { qk_rope_head_dim: 33 }, /must be even/],
  ];
  for (const [field, patch, msg] of bad) {
    it(`refuses a bad ${field} with a ConfigError naming it`, () => {
      const j = { ...tiny(), ...patch };
      for (const [key, v] of Object.entries(patch)) if (v === undefined) delete j[key];
      assert.throws(() => parseConfig(j), (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.field, field);
        assert.match(e.message, msg);
        return true;
      });
    });
  }
});
