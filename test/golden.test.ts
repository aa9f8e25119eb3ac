// Golden test: our forward pass against the outputs of DeepSeek's own reference implementation
// (inference/model.py, float32) on the two tiny checkpoints in ../shared/testdata/deepseek-ref, in both
// MLA forms. Tolerances (README's suggestion for a float32 engine): logits 2e-5 max abs over the vocab,
// greedy tokens and expert choices identical (same order), routing weights 1e-5, and the residual
// stream after each block 2e-5·max(1, |x|) (it reaches |x| ≈ 4; both sides are float32).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { backendNames, loadBackend, type Kernels } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { LatentCache } from '../src/model/latent-cache.ts';
import { RopeTable } from '../src/model/rope.ts';
import { softmaxScale } from '../src/model/config.ts';
import { REF_DIR, VARIANTS, argmax, expected, maxAbsDiff, type RoutingRef } from './helpers.ts';

const LOGIT_TOL = 2e-5;
const WEIGHT_TOL = 1e-5;
const measured: Record<string, number> = {};

function checkRouting(where: string, layer: number, experts: Int32Array, weights: Float32Array, ref: RoutingRef, row0: number, k: number): number {
  let worst = 0;
  ref.experts.forEach((want, t) => {
    const got = Array.from(experts.subarray((row0 + t) * k, (row0 + t + 1) * k));
    assert.deepEqual(got, want, `${where} layer ${layer} token ${t}: experts`);
    const gw = weights.subarray((row0 + t) * k, (row0 + t + 1) * k);
    const d = maxAbsDiff(gw, ref.weights[t]!);
    assert.ok(d <= WEIGHT_TOL, `${where} layer ${layer} token ${t}: weights differ by ${d}`);
    worst = Math.max(worst, d);
  });
  return worst;
}

// Every registered CPU backend runs the whole model: `ref` (the oracle backend) and the optimized ones
// (wasm with 2 threads, so its worker pool is exercised too). `webgpu`'s synchronous ops are ref's; its
// GPU-resident forward has its own golden test (gpu-forward.test.ts).
const BACKENDS = ['ref', ...backendNames().filter((b) => b !== 'ref' && b !== 'webgpu')];

for (const backend of BACKENDS) for (const variant of VARIANTS) {
  describe(`golden ${variant} on ${backend}`, () => {
    let kernels: Kernels;
    let model: DeepseekModel;
    before(async () => {
      kernels = await loadBackend(backend, { threads: backend === 'ref' ? 1 : 2 });
      model = await DeepseekModel.load(join(REF_DIR, variant), kernels);
    });
    after(async () => {
      model?.close();
      await kernels?.dispose();
    });

    it('softmax scale and RoPE cos/sin match the reference tables', () => {
      const e = expected(variant);
      assert.ok(Math.abs(softmaxScale(model.config) - e.softmax_scale) < 1e-7);
      const rope = new RopeTable(model.config);
      const pos = Int32Array.from({ length: e.rope_freqs_cis.positions }, (_, i) => i);
      const { cos, sin } = rope.rows(pos);
      const d = Math.max(maxAbsDiff(cos, e.rope_freqs_cis.cos.flat()), maxAbsDiff(sin, e.rope_freqs_cis.sin.flat()));
      assert.ok(d <= 2e-6, `cos/sin differ by ${d}`);
    });

    for (const attn of ['absorb', 'naive'] as const) {
      it(`${attn}: prefill + 16 greedy decode steps, routing and block outputs match the reference`, () => {
        // Compare against the reference's own output for the same MLA form.
        const e = expected(variant, attn);
        const c = model.config;
        const K = c.num_experts_per_tok!;
        let worstLogit = 0, worstW = 0, worstBlock = 0;
        for (const p of e.prompts) {
          const L = p.prompt.length;
          const cache = model.createCache(LatentCache.blocksFor(L + 16));
          const blockTable = Int32Array.from({ length: cache.numBlocks }, (_, i) => i);
          const routing = new Map<number, { experts: Int32Array; weights: Float32Array }>();
          const blocks = new Map<number, Float32Array>();
          let logits = model.forward({ tokens: Int32Array.from(p.prompt), seqs: [{ blockTable, numCached: 0, numNew: L }] }, cache, {
            attn,
            onRouting: (l, ex, w) => routing.set(l, { experts: ex.slice(), weights: w.slice() }),
            onBlockOut: (l, h) => blocks.set(l, h.slice((L - 1) * c.hidden_size, L * c.hidden_size)),
          });
          worstLogit = Math.max(worstLogit, maxAbsDiff(logits, p.prefill_last_logits));
          assert.ok(maxAbsDiff(logits, p.prefill_last_logits) <= LOGIT_TOL, `prompt len ${L}: prefill logits`);
          assert.equal(argmax(logits), p.greedy_tokens[0]);
          for (const [layer, ref] of Object.entries(p.prefill_routing)) {
            const r = routing.get(Number(layer));
            assert.ok(r, `no routing reported for layer ${layer}`);
            worstW = Math.max(worstW, checkRouting(`prefill len ${L}`, Number(layer), r.experts, r.weights, ref, 0, K));
          }
          assert.equal(routing.size, Object.keys(p.prefill_routing).length, 'MoE layer set');
          for (const [layer, ref] of Object.entries(p.prefill_block_out_last)) {
            const got = blocks.get(Number(layer))!;
            let d = 0;
            for (let i = 0; i < ref.length; i++) d = Math.max(d, Math.abs(got[i]! - ref[i]!) / Math.max(1, Math.abs(ref[i]!)));
            assert.ok(d <= 2e-5, `prompt len ${L}: block ${layer} output differs by ${d} (relative)`);
            worstBlock = Math.max(worstBlock, d);
          }
          for (let j = 0; j < 16; j++) {
            const tok = p.greedy_tokens[j]!;
            routing.clear();
            logits = model.forward({ tokens: Int32Array.of(tok), seqs: [{ blockTable, numCached: L + j, numNew: 1 }] }, cache, {
              attn, onRouting: (l, ex, w) => routing.set(l, { experts: ex.slice(), weights: w.slice() }),
            });
            const d = maxAbsDiff(logits, p.decode_logits[j]!);
            worstLogit = Math.max(worstLogit, d);
            assert.ok(d <= LOGIT_TOL, `prompt len ${L} decode step ${j}: logits differ by ${d}`);
            const next = argmax(logits);
            assert.equal(next, j < 15 ? p.greedy_tokens[j + 1] : p.next_token_after_decode, `decode step ${j}: greedy token`);
            for (const [layer, ref] of Object.entries(p.decode_routing[j]!)) {
              const r = routing.get(Number(layer))!;
              worstW = Math.max(worstW, checkRouting(`decode ${j}`, Number(layer), r.experts, r.weights, ref, 0, K));
            }
          }
        }
        measured[`${backend} ${variant} ${attn} logits`] = worstLogit;
        measured[`${backend} ${variant} ${attn} routing weights`] = worstW;
        measured[`${backend} ${variant} ${attn} block out (rel)`] = worstBlock;
      });
    }
  });
}

after(() => {
  // Measured maxima, for the record (node:test prints diagnostics).
  for (const [k, v] of Object.entries(measured)) console.log(`# max diff ${k}: ${v.toExponential(3)}`);
});
