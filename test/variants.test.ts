// Config variants of the family (variants.ts) in BF16 and FP8, each checked against the independent
// float64 oracle (test/oracle), in both MLA forms, on the `ref` backend explicitly:
// - logits at every prompt position and over 3 cached decode steps within 3e-5 + 2e-7·max|logit| of
//   the oracle (float32 engine vs float64; logits reach |x| ≈ 4, and ≈ 110 in the tied-embedding
//   variant; measured errors are ≤ 7e-6);
// - identical expert choices (same order) and routing weights within 1e-5·max(1, routed_scaling_factor);
// - absorbed vs naive within 2e-5.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBackend, type Kernels } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { oracleForward } from './oracle/deepseek-f64.ts';
import { VARIANT_CONFIGS, writeVariant, type VariantName } from './variants.ts';
import { REF_DIR, expected, maxAbsDiff } from './helpers.ts';

const PROMPT = [3, 141, 59, 26, 299, 53, 58, 97, 93, 2];
const DECODE = [238, 46, 26];
const ALL = [...PROMPT, ...DECODE];
const measured: string[] = [];

let tmp: string;
let kernels: Kernels;
before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'seekd-variants-'));
  kernels = await loadBackend('ref');
});
after(async () => {
  rmSync(tmp, { recursive: true, force: true });
  await kernels?.dispose();
  for (const m of measured) console.log(`# ${m}`);
});

describe('the float64 oracle itself', () => {
  it('reproduces DeepSeek\'s reference logits on tiny-v3-bf16 (within 2e-5)', () => {
    const p = expected('tiny-v3-bf16').prompts.find((x) => x.prompt.length === 12)!;
    const o = oracleForward(join(REF_DIR, 'tiny-v3-bf16'), p.prompt);
    const V = 512;
    const d = maxAbsDiff(o.logits.subarray((p.prompt.length - 1) * V), p.prefill_last_logits);
    measured.push(`oracle vs reference tiny-v3-bf16 prefill logits: ${d.toExponential(3)}`);
    assert.ok(d <= 2e-5, `${d}`);
    for (const [layer, ref] of Object.entries(p.prefill_routing)) assert.deepEqual(o.routing.get(Number(layer))!.experts, ref.experts);
  });
});

for (const name of Object.keys(VARIANT_CONFIGS) as VariantName[]) {
  for (const format of ['bf16', 'fp8'] as const) {
    describe(`variant ${name} (${format})`, () => {
      let dir: string;
      let model: DeepseekModel;
      let oracle: ReturnType<typeof oracleForward>;
      before(async () => {
        dir = join(tmp, `${name}-${format}`);
        writeVariant(dir, name, format);
        model = await DeepseekModel.load(dir, kernels);
        oracle = oracleForward(dir, ALL);
      });
      after(() => model?.close());

      it('config parsed verbatim', () => {
        const want = VARIANT_CONFIGS[name];
        for (const f of ['q_lora_rank', 'v_head_dim', 'topk_method', 'scoring_func', 'n_shared_experts', 'moe_layer_freq', 'first_k_dense_replace', 'norm_topk_prob', 'routed_scaling_factor'] as const) {
          assert.deepEqual(model.config[f], want[f], f);
        }
        assert.deepEqual(model.config.rope_scaling, want.rope_scaling);
        assert.equal(model.config.quantization_config !== null, format === 'fp8');
      });

      const runs: Record<string, { logits: Float32Array[]; routing: Map<number, { experts: Int32Array[]; weights: Float32Array[] }> }> = {};
      for (const attn of ['absorb', 'naive'] as const) {
        it(`${attn}: prefill (all positions) + 3 decode steps match the float64 oracle`, () => {
          const V = model.config.vocab_size;
          const K = model.config.num_experts_per_tok!;
          const cache = model.createCache(1);
          const blockTable = Int32Array.of(0);
          const routing = new Map<number, { experts: Int32Array[]; weights: Float32Array[] }>();
          const onRouting = (l: number, ex: Int32Array, w: Float32Array) => {
            const r = routing.get(l) ?? { experts: [], weights: [] };
            for (let t = 0; t < ex.length / K; t++) { r.experts.push(ex.slice(t * K, (t + 1) * K)); r.weights.push(w.slice(t * K, (t + 1) * K)); }
            routing.set(l, r);
          };
          const logits: Float32Array[] = [];
          const pre = model.forward({ tokens: Int32Array.from(PROMPT), seqs: [{ blockTable, numCached: 0, numNew: PROMPT.length }] }, cache, { attn, allPositions: true, onRouting });
          for (let t = 0; t < PROMPT.length; t++) logits.push(pre.slice(t * V, (t + 1) * V));
          DECODE.forEach((tok, j) => {
            logits.push(model.forward({ tokens: Int32Array.of(tok), seqs: [{ blockTable, numCached: PROMPT.length + j, numNew: 1 }] }, cache, { attn, onRouting }));
          });
          let worst = 0;
          logits.forEach((row, t) => {
            const want = oracle.logits.subarray(t * V, (t + 1) * V);
            const d = maxAbsDiff(row, want);
            worst = Math.max(worst, d);
            let mag = 0;
            for (const v of want) mag = Math.max(mag, Math.abs(v));
            assert.ok(d <= 3e-5 + 2e-7 * mag, `position ${t}: logits differ from the oracle by ${d} (max |logit| ${mag})`);
          });
          assert.deepEqual([...routing.keys()].sort(), [...oracle.routing.keys()].sort(), 'MoE layers');
          const wtol = 1e-5 * Math.max(1, model.config.routed_scaling_factor);
          let worstW = 0;
          for (const [l, r] of routing) {
            const o = oracle.routing.get(l)!;
            r.experts.forEach((ex, t) => {
              assert.deepEqual(Array.from(ex), o.experts[t], `layer ${l} token ${t}: experts`);
              const d = maxAbsDiff(r.weights[t]!, o.weights[t]!);
              worstW = Math.max(worstW, d);
              assert.ok(d <= wtol, `layer ${l} token ${t}: weights differ by ${d}`);
            });
          }
          measured.push(`${name} ${format} ${attn} vs oracle: logits ${worst.toExponential(3)}, routing weights ${worstW.toExponential(3)}`);
          runs[attn] = { logits, routing };
        });
      }

      it('absorbed equals naive (2e-5)', (t) => {
        if (!runs.absorb || !runs.naive) return t.skip('a form failed above');
        let worst = 0;
        runs.absorb.logits.forEach((row, i) => { worst = Math.max(worst, maxAbsDiff(row, runs.naive!.logits[i]!)); });
        measured.push(`${name} ${format} absorb vs naive: ${worst.toExponential(3)}`);
        assert.ok(worst <= 2e-5, `${worst}`);
      });
    });
  }
}
