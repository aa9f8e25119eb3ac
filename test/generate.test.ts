// generate(): greedy equals the reference tokens (and its logits rows are the distributions that
// produced them), chunked prefill changes nothing, temperature sampling is seeded and follows the
// distribution, stop ids end generation.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadBackend, type Kernels } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { generate, sampleToken, seededRandom } from '../src/model/generate.ts';
import { REF_DIR, expected, maxAbsDiff } from './helpers.ts';

describe('generate', () => {
  let k: Kernels;
  let model: DeepseekModel;
  before(async () => {
    k = await loadBackend('ref');
    model = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-bf16'), k);
  });
  after(async () => { model?.close(); await k?.dispose(); });

  it('greedy: the reference tokens; logits[j] produced ids[j]; chunked prefill gives the same', () => {
    const p = expected('tiny-v3-bf16').prompts.find((x) => x.prompt.length === 12)!;
    const r = generate(model, p.prompt, { maxTokens: 16 });
    assert.deepEqual(r.ids, p.greedy_tokens);
    assert.ok(maxAbsDiff(r.logits[0]!, p.prefill_last_logits) <= 2e-5);
    assert.ok(maxAbsDiff(r.logits[5]!, p.decode_logits[4]!) <= 2e-5);
    const chunked = generate(model, p.prompt, { maxTokens: 16, prefillChunk: 5, attn: 'naive' });
    assert.deepEqual(chunked.ids, p.greedy_tokens);
  });

  it('temperature sampling is deterministic per seed and differs across seeds', () => {
    const prompt = [1, 2, 3];
    const a = generate(model, prompt, { maxTokens: 12, temperature: 1.5, seed: 7 });
    const b = generate(model, prompt, { maxTokens: 12, temperature: 1.5, seed: 7 });
    const c = generate(model, prompt, { maxTokens: 12, temperature: 1.5, seed: 8 });
    assert.deepEqual(a.ids, b.ids);
    assert.notDeepEqual(a.ids, c.ids);
  });

  it('sampleToken follows softmax(logits / T)', () => {
    const logits = Float32Array.of(0, Math.log(3), 0, -Infinity);
    const rand = seededRandom(1);
    const counts = [0, 0, 0, 0];
    const N = 20000;
    for (let i = 0; i < N; i++) counts[sampleToken(logits, 1, rand)]!++;
    // p = [0.2, 0.6, 0.2, 0]; 5 sigma of a binomial with N = 20000 is ≈ 0.014.
    assert.ok(Math.abs(counts[1]! / N - 0.6) < 0.015, `${counts}`);
    assert.ok(Math.abs(counts[0]! / N - 0.2) < 0.015, `${counts}`);
    assert.equal(counts[3], 0);
    assert.equal(sampleToken(logits, 0, rand), 1);
  });

  it('stops after a stop id (included) and honours maxTokens 0', () => {
    const p = expected('tiny-v3-bf16').prompts[0]!;
    const r = generate(model, p.prompt, { maxTokens: 16, stopIds: [p.greedy_tokens[2]!] });
    assert.deepEqual(r.ids, p.greedy_tokens.slice(0, 3));
    assert.deepEqual(generate(model, p.prompt, { maxTokens: 0 }).ids, []);
  });
});
