// Every backward pass of the training ops against central finite differences in float64
// (gradcheck.ts, h = 1e-6). Bound per element: |analytic − numeric| ≤ 1e-7 + 1e-6·|numeric|; the
// measured worst relative errors are printed as test diagnostics (typically 1e-9..1e-11).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crossEntropy, rmsNorm, Tensor } from '../tensor/autograd/index.ts';
import { mulberry32 } from '../tensor/random.ts';
import { parseConfig } from '../model/config.ts';
import { planByExpert } from '../model/moe.ts';
import { RopeTable } from '../model/rope.ts';
import { Gemm } from './gemm.ts';
import { gradcheck, type GradcheckResult } from './gradcheck.ts';
import { concatCols, embedding, groupedLinear, linear, rope, scale, sigmoid, sliceCols, sumScalars, swiglu, takeRows } from './ops.ts';
import { mlaAttention } from './attention.ts';
import { combineExperts, routingWeights, seqBalanceLoss } from './moe-ops.ts';
import { selectExperts } from './routing.ts';

const r = mulberry32(11);
const rand = (shape: number[], s = 1, grad = true) =>
  new Tensor(Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (r() * 2 - 1) * s), shape, grad);
const g = new Gemm(null); // float64 loops

function ok(t: { diagnostic(m: string): void }, name: string, res: GradcheckResult): void {
  t.diagnostic(`${name}: ${res.checked} elements, max abs err ${res.maxAbs.toExponential(2)}, max rel err ${res.maxRel.toExponential(2)}`);
  assert.equal(res.failure, null, `${name}: ${res.failure}`);
  assert.ok(res.checked > 0);
}

test('gradcheck catches a wrong backward (the check can fail)', () => {
  const x = rand([3, 4]);
  const bad = () => {
    const y = sigmoid(x);
    // A deliberately wrong gradient: sigmoid's backward scaled by 1.01.
    const fn = y.gradFn;
    if (!fn) return y; // under noGrad (the finite differences)
    const orig = fn.backward.bind(fn);
    y.gradFn = { name: 'bad', inputs: fn.inputs, backward: (d) => orig(d).map((a) => a && a.map((v) => v * 1.01)) };
    return y;
  };
  assert.notEqual(gradcheck([x], bad).failure, null);
});

test('embedding, takeRows, sliceCols, concatCols, scale, sumScalars', (t) => {
  const w = rand([7, 5]);
  ok(t, 'embedding', gradcheck([w], () => embedding(w, Int32Array.of(3, 0, 3, 6))));
  const x = rand([4, 6]);
  ok(t, 'takeRows', gradcheck([x], () => takeRows(x, Int32Array.of(2, 2, 0, 3, 1, 2))));
  ok(t, 'sliceCols', gradcheck([x], () => sliceCols(x, 1, 3)));
  const y = rand([4, 2]);
  ok(t, 'concatCols', gradcheck([x, y], () => concatCols(x, y)));
  ok(t, 'scale', gradcheck([x], () => scale(x, -0.3)));
  const a = rand([]), b = rand([]);
  ok(t, 'sumScalars', gradcheck([a, b], () => sumScalars([a, b, a])));
});

test('linear and grouped linear (routed experts, one group empty)', (t) => {
  const x = rand([5, 6]);
  const w = rand([4, 6]);
  ok(t, 'linear', gradcheck([x, w], () => linear(g, x, w)));
  const xs = rand([7, 6]);
  const we = rand([4, 3, 6]);
  const seg = { start: Int32Array.of(0, 2, 2, 5), count: Int32Array.of(2, 0, 3, 2) };
  ok(t, 'groupedLinear', gradcheck([xs, we], () => groupedLinear(g, xs, we, seg)));
});

test('swiglu, sigmoid, rmsNorm, cross-entropy', (t) => {
  const a = rand([3, 8], 3), b = rand([3, 8]);
  ok(t, 'swiglu', gradcheck([a, b], () => swiglu(a, b)));
  ok(t, 'sigmoid', gradcheck([a], () => sigmoid(a)));
  const nw = rand([8]);
  ok(t, 'rmsNorm', gradcheck([a, nw], () => rmsNorm(a, nw, 1e-6)));
  ok(t, 'crossEntropy', gradcheck([a], () => crossEntropy(a, [7, 0, 3])));
});

const cfgJson = {
  model_type: 'deepseek_v3', vocab_size: 32, hidden_size: 16, intermediate_size: 24, moe_intermediate_size: 8,
  num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: 12, kv_lora_rank: 8,
  qk_nope_head_dim: 4, qk_rope_head_dim: 4, v_head_dim: 6, n_routed_experts: 8, n_shared_experts: 1, num_experts_per_tok: 3,
  n_group: 4, topk_group: 2, routed_scaling_factor: 2.5, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true,
  first_k_dense_replace: 1, moe_layer_freq: 1, rope_theta: 10000, max_position_embeddings: 64, rms_norm_eps: 1e-6,
  rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 16, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1 },
  num_nextn_predict_layers: 1, tie_word_embeddings: false,
};

test('rope: rotation of the rope columns of every head (YaRN angles)', (t) => {
  const c = parseConfig(cfgJson);
  const table = new RopeTable(c);
  const pos = Int32Array.of(0, 1, 2, 5);
  const rq = table.rows(pos, 2);
  const q = rand([4, 2 * 7]);
  ok(t, 'rope (2 heads, offset 3)', gradcheck([q], () => rope(q, 2, 7, 3, 4, rq.cos, rq.sin)));
  // Forward: the pass-through columns are untouched, rotated pairs keep their norm times mscale².
  const y = rope(q, 2, 7, 3, 4, rq.cos, rq.sin);
  for (let i = 0; i < 3; i++) assert.equal(y.data[7 + i], q.data[7 + i]);
});

test('MLA causal attention over two sequences (decoupled RoPE key shared by the heads)', (t) => {
  const Hd = 2, nope = 3, rp = 2, v = 4;
  const lens = [3, 4];
  const T = 7;
  const q = rand([T, Hd * (nope + rp)]), kv = rand([T, Hd * (nope + v)]), kpe = rand([T, rp]);
  const shape = { heads: Hd, nope, rope: rp, v, scale: 0.7 };
  ok(t, 'mlaAttention', gradcheck([q, kv, kpe], () => mlaAttention(g, q, kv, kpe, lens, shape)));
  // Causality: changing the last token of sequence 0 leaves its earlier outputs as they were.
  const o1 = mlaAttention(g, q, kv, kpe, lens, shape).data.slice();
  kv.data[2 * Hd * (nope + v) + 1] = kv.data[2 * Hd * (nope + v) + 1]! + 1;
  const o2 = mlaAttention(g, q, kv, kpe, lens, shape).data;
  for (let i = 0; i < 2 * Hd * v; i++) assert.equal(o2[i], o1[i]);
  assert.notEqual(o2[2 * Hd * v], o1[2 * Hd * v]); // head 0 of token 2 sees its own key
});

test('routing weights (normalized and not), expert combine, sequence-wise balance loss', (t) => {
  const c = parseConfig(cfgJson);
  const T = 6, E = 8, K = 3;
  const logits = rand([T, E], 2);
  const bias = Float64Array.from({ length: E }, () => r() * 0.2);
  const idx = selectExperts(c, sigmoid(logits).data, T, bias);
  ok(t, 'routingWeights (normalized)', gradcheck([logits], () => routingWeights(sigmoid(logits), idx, K, true, 2.5)));
  ok(t, 'routingWeights (plain)', gradcheck([logits], () => routingWeights(sigmoid(logits), idx, K, false, 1.5)));
  const plan = planByExpert(idx, T, K, E);
  const y = rand([T * K, 5]);
  const gates = rand([T, K]);
  ok(t, 'combineExperts', gradcheck([y, gates], () => combineExperts(y, gates, plan.order, T, K)));
  ok(t, 'seqBalanceLoss', gradcheck([logits], () => seqBalanceLoss(sigmoid(logits), idx, K, [2, 4], 0.01)));
});

test('seqBalanceLoss value: α·Σ f_i P_i by hand', () => {
  // One sequence of 2 tokens, 2 experts, k = 1: token 0 picks expert 0, token 1 picks expert 1.
  const s = new Tensor(Float64Array.of(0.6, 0.2, 0.1, 0.3), [2, 2]);
  const L = seqBalanceLoss(s, Int32Array.of(0, 1), 1, [2], 0.5).item();
  // f = [1, 1] (E/(kT) · count = 2/2 · 1); P = [(0.75 + 0.25)/2, (0.25 + 0.75)/2] = [0.5, 0.5].
  assert.ok(Math.abs(L - 0.5 * (1 * 0.5 + 1 * 0.5)) < 1e-15);
});
