// ExpertLoadRecorder plugged into the model's onRouting callback on the tiny DeepSeek-V3 checkpoint:
// the recorded per-layer expert counts equal the histogram of the reference routing, and feed EPLB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadBackend } from '../../kernels/index.ts';
import { DeepseekModel } from '../../model/deepseek.ts';
import { REF_DIR, expected } from '../../../test/helpers.ts';
import { ExpertLoadRecorder } from './recorder.ts';
import { rebalanceExperts } from './eplb.ts';

test('recorder counts the routing of a real forward pass (tiny-v3-bf16) and feeds rebalanceExperts', async () => {
  const kernels = await loadBackend('ref');
  const model = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-bf16'), kernels);
  try {
    const c = model.config;
    const rec = new ExpertLoadRecorder({ numLayers: c.num_hidden_layers, numExperts: c.n_routed_experts!, topK: c.num_experts_per_tok!, window: 4096 });
    const p = expected('tiny-v3-bf16').prompts[0]!;
    model.forward({ tokens: Int32Array.from(p.prompt), seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: p.prompt.length }] }, model.createCache(1), { onRouting: rec.onRouting });
    const snap = rec.snapshot();
    const layers = Object.keys(p.prefill_routing).map(Number).sort((a, b) => a - b);
    assert.deepEqual(rec.recordedLayers(), layers);
    for (const l of layers) {
      const hist = new Array<number>(c.n_routed_experts!).fill(0);
      for (const row of p.prefill_routing[String(l)]!.experts) for (const e of row) hist[e]! += 1;
      assert.deepEqual(snap[l], hist, `layer ${l}`);
    }
    const moeRows = layers.map((l) => snap[l]!);
    const plan = rebalanceExperts(moeRows, 24, c.n_group!, 2, 8);
    assert.equal(plan.phy2log.length, layers.length);
    assert.ok(plan.logcnt.every((row) => row.reduce((a, b) => a + b, 0) === 24));
  } finally {
    model.close();
    await kernels.dispose();
  }
});
