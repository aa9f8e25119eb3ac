// The model's absorbed attention on the wasm FlashMLA kernel (f32 SIMD, cache in wasm memory) against the
// same model on the reference FlashMLA (f64): decode, one-shot prefill and the 23-token prompt prefilled
// in chunks of 5 (new tokens attend to the cached prefix plus themselves), logits within 2e-5.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadBackend, type Kernels } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { REF_DIR, expected, maxAbsDiff } from './helpers.ts';

describe('model attention through the wasm FlashMLA kernel (tiny-v3-bf16)', () => {
  let kernels: Kernels;
  let wasmMla: DeepseekModel;
  let refMla: DeepseekModel;
  before(async () => {
    kernels = await loadBackend('wasm', { threads: 2 });
    wasmMla = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-bf16'), kernels); // auto: the wasm kernel
    refMla = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-bf16'), kernels, { flashMla: 'ref' });
  });
  after(async () => {
    wasmMla?.close();
    refMla?.close();
    await kernels?.dispose();
  });

  it('chunked prefill (chunks of 5) and 4 decode steps match the reference kernel, and the reference logits', () => {
    const p = expected('tiny-v3-bf16').prompts.find((x) => x.prompt.length === 23)!;
    const V = wasmMla.config.vocab_size;
    const run = (m: DeepseekModel): Float32Array[] => {
      const cache = m.createCache(1);
      const blockTable = Int32Array.of(0);
      const outs: Float32Array[] = [];
      for (let s = 0; s < 23; s += 5) {
        const n = Math.min(5, 23 - s);
        outs.push(m.forward({ tokens: Int32Array.from(p.prompt.slice(s, s + n)), seqs: [{ blockTable, numCached: s, numNew: n }] }, cache, { allPositions: true }));
      }
      for (let i = 0; i < 4; i++) {
        outs.push(m.forward({ tokens: Int32Array.of(p.greedy_tokens[i]!), seqs: [{ blockTable, numCached: 23 + i, numNew: 1 }] }, cache));
      }
      return outs;
    };
    const a = run(wasmMla);
    const b = run(refMla);
    a.forEach((x, i) => assert.ok(maxAbsDiff(x, b[i]!) <= 2e-5, `step ${i}: ${maxAbsDiff(x, b[i]!)}`));
    const last = a[4]!.subarray(2 * V); // chunk at 20 holds positions 20..22
    assert.ok(maxAbsDiff(last, p.prefill_last_logits) <= 2e-5, `prefill logits vs reference: ${maxAbsDiff(last, p.prefill_last_logits)}`);
  });
});
