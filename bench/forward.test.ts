// The benchmark's model shape: parameter counts from the weight table agree with a hand count
// (≈506M total, ≈131M active per token as the brief states). No timing is asserted.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { MEDIUM_CONFIG as c } from './lib/bench-model.ts';
import { parseConfig } from '../src/model/config.ts';
import { parameterCounts } from '../src/model/weight-map.ts';

it('medium shape: 506M parameters, 131M active per token', () => {
  const H = c.hidden_size;
  const attn = c.q_lora_rank * H + c.q_lora_rank + c.num_attention_heads * (c.qk_nope_head_dim + c.qk_rope_head_dim) * c.q_lora_rank
    + (c.kv_lora_rank + c.qk_rope_head_dim) * H + c.kv_lora_rank
    + c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank + H * c.num_attention_heads * c.v_head_dim;
  const norms = 2 * H;
  const dense = 3 * H * c.intermediate_size;
  const expert = 3 * H * c.moe_intermediate_size;
  const moeLayers = c.num_hidden_layers - c.first_k_dense_replace;
  const router = c.n_routed_experts * H + c.n_routed_experts;
  const shared = c.n_shared_experts * expert;
  const total = 2 * c.vocab_size * H + H + c.num_hidden_layers * (attn + norms) + dense + moeLayers * (router + shared + c.n_routed_experts * expert);
  const active = c.vocab_size * H + H + H + c.num_hidden_layers * (attn + norms) + dense + moeLayers * (router + shared + c.num_experts_per_tok * expert);
  const got = parameterCounts(parseConfig(c));
  assert.equal(got.total, total);
  assert.equal(got.activePerToken, active);
  assert.ok(Math.abs(total / 1e6 - 506) < 1, `${total}`);
  assert.ok(Math.abs(active / 1e6 - 131) < 1, `${active}`);
});
