// A real DeepSeek-V3-architecture model (the random-weight test model) behind the server: batching changes nothing.
// 16 concurrent greedy requests return what the same requests return one at a time, and the engine's
// token ids equal `seekd generate` (the model's own single-sequence loop) for the same prompt.
// Small on purpose (12 new tokens each) so the file runs in a few seconds on 2 cores.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import OpenAI from 'openai';
import { defaultSamplingParams } from '../engine/contracts.ts';
import { Llm } from '../engine/llm.ts';
import { ensureRandomModel } from '../engine/builtin/random-model.ts';
import { backendNames } from '../kernels/index.ts';
import { startServer } from './http.ts';

const backend = backendNames().includes('wasm') ? 'wasm' : 'ref';
const dir = ensureRandomModel();
const llm = await Llm.load({ model: dir, modelId: 'seekd-builtin', backend, maxNumSeqs: 16, maxModelLen: 512 });
const srv = await startServer({ port: 0, webDir: null }, llm);
const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'x', maxRetries: 0 });
after(async () => { await srv.shutdown(1000); await llm.close(); });

const topics = ['the sea', 'numbers', 'a cat', 'music', 'rain', 'the moon', 'bread', 'trains', 'code', 'snow', 'maps', 'tea', 'stars', 'bees', 'clocks', 'paper'];
const req = (i: number) => ({
  model: 'seekd-builtin', temperature: 0, max_tokens: 12, ignore_eos: true,
  messages: [{ role: 'user' as const, content: `Tell me about ${topics[i]}.${' Please.'.repeat(i % 5)}` }],
});

test('16 concurrent greedy chat requests equal the same requests one at a time', async () => {
  const alone: string[] = [];
  for (let i = 0; i < 16; i++) alone.push((await client.chat.completions.create(req(i) as never)).choices[0]!.message.content!);
  const together = await Promise.all(Array.from({ length: 16 }, async (_, i) => (await client.chat.completions.create(req(i) as never)).choices[0]!.message.content!));
  assert.deepEqual(together, alone);
  assert.equal(new Set(alone).size > 1, true, 'different prompts give different answers');
  assert.equal(llm.engine.kvUsage(), 0);
});

test('engine token ids (batched with others) equal `seekd generate` for the same prompt', async () => {
  const prompts = [0, 5, 9].map((i) => llm.renderChat([{ role: 'user', content: `Tell me about ${topics[i]}.` }]).ids);
  const params = defaultSamplingParams({ temperature: 0, maxTokens: 12, ignoreEos: true });
  const outs = await Promise.all(prompts.map(async (p) => {
    const ids: number[] = [];
    for await (const d of llm.engine.generate({ prompt: p, params })) if (d.type === 'text') ids.push(...d.tokenIds);
    return ids;
  }));
  const cli = execFileSync(process.execPath, ['bin/seekd.mjs', 'generate', '--model', dir, '--backend', backend, '--ids', prompts[1]!.join(','), '--max-tokens', '12'], {
    cwd: new URL('../..', import.meta.url).pathname, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
  });
  assert.deepEqual(outs[1], cli.trim().split(',').map(Number));
});
