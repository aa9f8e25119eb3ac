// The engine over the WebGPU runner (GPU-resident forward and cache): concurrent greedy requests with
// chunked prefill (varlen steps mixing prefill chunks and decodes) give DeepSeek's reference greedy tokens
// on tiny-v3 (test data in ../shared/testdata/deepseek-ref).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { defaultSamplingParams as P, type Delta } from './contracts.ts';
import { Engine } from './engine.ts';
import { GpuDeepseekRunner } from './gpu-runner.ts';
import { byteDecoder } from './testing/fake-runner.ts';
import { closeDevice } from '../kernels/webgpu/device.ts';
import { REF_DIR, expected } from '../../test/helpers.ts';

after(() => closeDevice());

async function ids(it: AsyncIterable<Delta>): Promise<number[]> {
  const out: number[] = [];
  for await (const d of it) if (d.type === 'text') out.push(...d.tokenIds);
  return out;
}

test('4 concurrent greedy requests, prefill in chunks of 8 tokens: the reference greedy tokens (tiny-v3-fp8)', async () => {
  const runner = await GpuDeepseekRunner.load(join(REF_DIR, 'tiny-v3-fp8'), { numBlocks: 8 });
  try {
    const e = new Engine(runner, byteDecoder, { maxModelLen: 128, maxNumSeqs: 4, maxNumBatchedTokens: 8, maxWaiting: 8 });
    const prompts = expected('tiny-v3-fp8').prompts;
    const got = await Promise.all(prompts.map((p) => ids(e.generate({ prompt: p.prompt, params: P({ temperature: 0, maxTokens: 16, ignoreEos: true }) }))));
    assert.deepEqual(got, prompts.map((p) => p.greedy_tokens));
    assert.equal(e.kvUsage(), 0);
  } finally {
    await runner.dispose();
  }
});

test('speculative decoding on the WebGPU runner (the MTP module on the GPU drafts 2): the reference greedy tokens', async () => {
  const runner = await GpuDeepseekRunner.load(join(REF_DIR, 'tiny-v3-bf16'), { numBlocks: 8, numSpeculativeTokens: 2 });
  try {
    assert.equal(runner.maxDraftTokens, 2);
    const e = new Engine(runner, byteDecoder, { maxModelLen: 128, maxNumSeqs: 4, maxNumBatchedTokens: 16, maxWaiting: 8 });
    let drafted = 0;
    e.observer = { onSpec: (s) => { drafted += s.drafted; } };
    const prompts = expected('tiny-v3-bf16').prompts;
    const got = await Promise.all(prompts.map((p) => ids(e.generate({ prompt: p.prompt, params: P({ temperature: 0, maxTokens: 16, ignoreEos: true }) }))));
    assert.deepEqual(got, prompts.map((p) => p.greedy_tokens));
    assert.ok(drafted > 0, 'the runner drafted');
  } finally {
    await runner.dispose();
  }
});

test('the WebGPU runner refuses expert parallelism', async () => {
  const dir = join(REF_DIR, 'tiny-v3-fp8');
  await assert.rejects(GpuDeepseekRunner.load(dir, { numBlocks: 1, routedExperts: async () => { throw new Error('not started'); } }), /expert parallelism/);
});
