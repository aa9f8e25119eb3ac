// Router semantics on hand-made scores, where the answer can be worked out by hand: each topk_method,
// group masking, bias only for choosing, and the HF weight rules (V3: normalise then scale; V2:
// normalise OR scale).
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { loadBackend, type Kernels } from '../src/kernels/index.ts';
import { parseConfig, type DeepseekConfig } from '../src/model/config.ts';
import { route } from '../src/model/moe.ts';

const base = {
  vocab_size: 10, hidden_size: 8, intermediate_size: 8, moe_intermediate_size: 4, num_hidden_layers: 1,
  num_attention_heads: 1, q_lora_rank: null, kv_lora_rank: 4, qk_nope_head_dim: 2, qk_rope_head_dim: 2, v_head_dim: 2,
  n_routed_experts: 8, num_experts_per_tok: 2,
};
const cfg = (o: Record<string, unknown>): DeepseekConfig => parseConfig({ ...base, ...o });
const logit = (p: number) => Math.log(p / (1 - p)); // sigmoid⁻¹

describe('MoE router', () => {
  let k: Kernels;
  before(async () => { k = await loadBackend('ref'); });

  it('greedy softmax (V2-Lite): top-k probabilities, unnormalised, × routed_scaling_factor', () => {
    const c = cfg({ model_type: 'deepseek_v2', scoring_func: 'softmax', topk_method: 'greedy', norm_topk_prob: false, routed_scaling_factor: 2 });
    const logits = Float32Array.of(0, 3, 1, 0, 2, 0, 0, 0);
    const r = route(k, c, logits, 1, undefined);
    const z = 5 + Math.exp(3) + Math.E + Math.exp(2);
    assert.deepEqual(Array.from(r.experts), [1, 4]);
    assert.ok(Math.abs(r.weights[0]! - 2 * Math.exp(3) / z) < 1e-6);
    assert.ok(Math.abs(r.weights[1]! - 2 * Math.exp(2) / z) < 1e-6);
  });

  it('group_limited_greedy: groups ranked by their max; experts outside the kept groups never chosen', () => {
    // 4 groups of 2. Group maxima: g0 = 5, g1 = 4.9, g2 = 4.8 (but second-best member 4.7), g3 = 1.
    const c = cfg({ model_type: 'deepseek_v2', scoring_func: 'softmax', topk_method: 'group_limited_greedy', n_group: 4, topk_group: 2, norm_topk_prob: false });
    const logits = Float32Array.of(5, 0, 4.9, 0, 4.8, 4.7, 1, 0);
    const r = route(k, c, logits, 1, undefined);
    assert.deepEqual(Array.from(r.experts), [0, 2]);
    // With k = 3, greedy would take expert 4 (logit 4.8) third; its group is dropped, so the third pick
    // is the best remaining expert of a kept group (1 and 3 tie at logit 0: the lower index).
    const c3 = cfg({ model_type: 'deepseek_v2', scoring_func: 'softmax', topk_method: 'group_limited_greedy', n_group: 4, topk_group: 2, num_experts_per_tok: 3 });
    const r3 = route(k, c3, logits, 1, undefined);
    assert.deepEqual(Array.from(r3.experts), [0, 2, 1], 'third pick comes from a kept group even though expert 4 scores higher');
  });

  it('noaux_tc: bias chooses (groups by top-2 sum), unbiased sigmoid weights, normalised then scaled', () => {
    const c = cfg({ model_type: 'deepseek_v3', scoring_func: 'sigmoid', topk_method: 'noaux_tc', n_group: 2, topk_group: 1, norm_topk_prob: true, routed_scaling_factor: 2.5 });
    // Group 0 = experts 0..3, group 1 = 4..7. Unbiased group 1 holds the single best expert (0.9),
    // but group 0 has the better top-2 sum after bias.
    const p = [0.6, 0.55, 0.1, 0.1, 0.9, 0.2, 0.1, 0.1];
    const bias = Float32Array.of(0.1, 0.1, 0, 0, 0, 0, 0, 0);
    const r = route(k, c, Float32Array.from(p.map(logit)), 1, bias);
    assert.deepEqual(Array.from(r.experts), [0, 1]);
    assert.ok(Math.abs(r.weights[0]! - 2.5 * 0.6 / 1.15) < 1e-6);
    assert.ok(Math.abs(r.weights[1]! - 2.5 * 0.55 / 1.15) < 1e-6);
    // The bias changes the order, the weights stay unbiased.
    const r2 = route(k, c, Float32Array.from(p.map(logit)), 1, Float32Array.of(0, 0.2, 0, 0, 0, 0, 0, 0));
    assert.deepEqual(Array.from(r2.experts), [1, 0]);
    assert.ok(Math.abs(r2.weights[0]! - 2.5 * 0.55 / 1.15) < 1e-6);
  });

  it('weight rules: V3 normalises then scales; V2 with norm_topk_prob normalises without scaling (HF DeepseekV2 MoEGate)', () => {
    const logits = Float32Array.of(2, 1, 0, 0, 0, 0, 0, 0);
    const v3 = route(k, cfg({ model_type: 'deepseek_v3', scoring_func: 'softmax', topk_method: 'greedy', norm_topk_prob: true, routed_scaling_factor: 3 }), logits, 1, undefined);
    const v2 = route(k, cfg({ model_type: 'deepseek_v2', scoring_func: 'softmax', topk_method: 'greedy', norm_topk_prob: true, routed_scaling_factor: 3 }), logits, 1, undefined);
    const a = Math.E / (Math.E + 1);
    assert.ok(Math.abs(v3.weights[0]! - 3 * a) < 1e-6);
    assert.ok(Math.abs(v2.weights[0]! - a) < 1e-6);
    // k = 1 never normalises.
    const one = route(k, cfg({ model_type: 'deepseek_v3', scoring_func: 'sigmoid', topk_method: 'greedy', num_experts_per_tok: 1, routed_scaling_factor: 2 }), logits, 1, undefined);
    assert.ok(Math.abs(one.weights[0]! - 2 / (1 + Math.exp(-2))) < 1e-6);
  });

  it('several tokens are routed independently', () => {
    const c = cfg({ model_type: 'deepseek_v2', scoring_func: 'softmax', topk_method: 'greedy' });
    const logits = Float32Array.of(0, 0, 0, 0, 0, 0, 1, 2, /* token 1 */ 3, 2, 0, 0, 0, 0, 0, 0);
    assert.deepEqual(Array.from(route(k, c, logits, 2, undefined).experts), [7, 6, 0, 1]);
  });
});
