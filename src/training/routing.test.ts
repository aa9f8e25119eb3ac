// The training-side expert selection against the inference router (model/moe.ts route), and the
// auxiliary-loss-free bias step by hand.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { refOps } from '../kernels/ref/index.ts';
import type { Kernels } from '../kernels/api.ts';
import { parseConfig } from '../model/config.ts';
import { route } from '../model/moe.ts';
import { Tensor } from '../tensor/autograd/index.ts';
import { mulberry32 } from '../tensor/random.ts';
import { sigmoid } from './ops.ts';
import { routingWeights } from './moe-ops.ts';
import { expertLoad, RoutingConfigError, selectExperts, updateRoutingBias } from './routing.ts';

const base = {
  model_type: 'deepseek_v3', vocab_size: 32, hidden_size: 16, intermediate_size: 24, moe_intermediate_size: 8,
  num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: null, kv_lora_rank: 8,
  qk_nope_head_dim: 4, qk_rope_head_dim: 4, v_head_dim: 4, n_routed_experts: 16, n_shared_experts: 1, num_experts_per_tok: 4,
  n_group: 4, topk_group: 2, routed_scaling_factor: 2.5, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true,
  first_k_dense_replace: 1, moe_layer_freq: 1, rope_theta: 10000, max_position_embeddings: 64, rms_norm_eps: 1e-6,
};

test('selection and gating weights equal the inference router exactly (f32), for each top-k method', () => {
  const k = refOps as unknown as Kernels;
  const r = mulberry32(5);
  for (const over of [{}, { topk_method: 'greedy', n_group: 1, topk_group: 1 }, { topk_method: 'group_limited_greedy' }, { norm_topk_prob: false }]) {
    const c = parseConfig({ ...base, ...over });
    const T = 40, E = 16, K = 4;
    const logits = Float32Array.from({ length: T * E }, () => (r() - 0.5) * 6);
    const bias = Float32Array.from({ length: E }, () => (r() - 0.5) * 0.5);
    const want = route(k, c, logits, T, c.topk_method === 'noaux_tc' ? bias : undefined);
    const scores = sigmoid(new Tensor(new Float32Array(logits), [T, E]));
    const idx = selectExperts(c, scores.data, T, c.topk_method === 'noaux_tc' ? bias : null);
    assert.deepEqual(idx, want.experts, JSON.stringify(over));
    const w = routingWeights(scores, idx, K, c.norm_topk_prob, c.routed_scaling_factor);
    assert.deepEqual(w.data, want.weights, JSON.stringify(over));
  }
});

test('group-limited selection keeps experts of the topk_group best groups only (ranked by top-2 sums)', () => {
  const c = parseConfig({ ...base, n_routed_experts: 8, num_experts_per_tok: 2, n_group: 4, topk_group: 1 });
  // Group 1 (experts 2, 3) has the best top-2 sum although expert 6 alone scores highest.
  const s = Float64Array.of(0.1, 0.1, 0.8, 0.8, 0.1, 0.1, 0.95, 0.05);
  assert.deepEqual([...selectExperts(c, s, 1, new Float64Array(8))], [2, 3]);
  // A bias moves the choice, not the weights: raising group 3 by 0.5 selects it.
  assert.deepEqual([...selectExperts(c, s, 1, Float64Array.of(0, 0, 0, 0, 0, 0, 0.5, 0.5))], [6, 7]);
});

test('aux-loss-free bias step: b_i += γ·sign(mean load − load_i)', () => {
  const idx = Int32Array.of(0, 1, 0, 2, 0, 1); // loads [3, 2, 1, 0], mean 1.5
  const load = expertLoad(idx, 4);
  assert.deepEqual([...load], [3, 2, 1, 0]);
  const bias = Float32Array.of(0.1, 0, -0.2, 0);
  updateRoutingBias(bias, load, 0.001);
  assert.deepEqual([...bias], [0.1 - 0.001, -0.001, -0.2 + 0.001, 0.001].map(Math.fround));
  const even = Float64Array.of(1, 2);
  updateRoutingBias(even, [5, 5], 0.5); // balanced: no move
  assert.deepEqual([...even], [1, 2]);
  assert.throws(() => updateRoutingBias(even, [1], 0.1), RangeError);
});

test('softmax-scored configs are refused (training routes the DeepSeek-V3 way)', () => {
  const c = parseConfig({ ...base, model_type: 'deepseek_v2', scoring_func: 'softmax', topk_method: 'greedy', n_group: 1, topk_group: 1 });
  assert.throws(() => selectExperts(c, new Float64Array(16), 1, null), RoutingConfigError);
});
