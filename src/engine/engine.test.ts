import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultSamplingParams as P, type Delta } from './contracts.ts';
import { Engine, EngineOverloadedError, PromptTooLongError } from './engine.ts';
import { FakeRunner, byteDecoder, greedyReference } from './testing/fake-runner.ts';

const V = 300;
const tok = { ...byteDecoder, eosTokenIds: [299] };

function engine(numBlocks = 64, over: Partial<ConstructorParameters<typeof Engine>[2]> = {}, delayMs = 0) {
  const runner = new FakeRunner(V, numBlocks, delayMs);
  return { runner, e: new Engine(runner, tok, { maxModelLen: 1024, maxNumSeqs: 16, maxNumBatchedTokens: 256, maxWaiting: 64, ...over }) };
}

async function collect(it: AsyncIterable<Delta>) {
  const ids: number[][] = [];
  const text: string[] = [];
  let finish: Extract<Delta, { type: 'finish' }> | undefined;
  for await (const d of it) {
    if (d.type === 'text') { (ids[d.index] ??= []).push(...d.tokenIds); text[d.index] = (text[d.index] ?? '') + d.text; }
    if (d.type === 'finish') finish = d;
  }
  return { ids, text, finish: finish! };
}

const prompt = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (i * 37 + seed * 11) % 256);

test('greedy output equals the cache-free reference; 16 concurrent requests equal the same run alone', async () => {
  const prompts = Array.from({ length: 16 }, (_, i) => prompt(20 + i * 13, i));
  const ref = prompts.map((p) => greedyReference(p, 24, V, new Set([299])));
  const alone: number[][] = [];
  for (const p of prompts) {
    const { e } = engine();
    alone.push((await collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 24 }) }))).ids[0]!);
  }
  const { e, runner } = engine(64, { maxNumBatchedTokens: 128 });
  const together = await Promise.all(prompts.map((p) => collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 24 }) }))));
  assert.deepEqual(alone, ref.map((r) => r.filter((t) => t !== 299)));
  assert.deepEqual(together.map((r) => r.ids[0]), alone);
  assert.ok(Math.max(...runner.batchSizes) >= 8, `batches: ${runner.batchSizes}`);
  assert.equal(e.kvUsage(), 0);
});

test('preemption under a tiny KV cache still gives the reference tokens', async () => {
  const { e } = engine(6, { maxModelLen: 200 });
  const prompts = Array.from({ length: 4 }, (_, i) => prompt(60, i + 3));
  const out = await Promise.all(prompts.map((p) => collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 100, ignoreEos: true }) }))));
  assert.ok(e.scheduler.numPreemptions > 0, 'expected preemptions');
  out.forEach((r, i) => assert.deepEqual(r.ids[0], greedyReference(prompts[i]!, 100, V)));
  assert.equal(e.kvUsage(), 0);
});

test('usage reports prefix-cache hits; a repeated prompt is served from the cache', async () => {
  const { e } = engine();
  const p = prompt(200, 9);
  const a = await collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 3 }) }));
  const b = await collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 3 }) }));
  assert.deepEqual(a.finish.usage, { promptTokens: 200, completionTokens: 3, cachedTokens: 0 });
  assert.deepEqual(b.finish.usage, { promptTokens: 200, completionTokens: 3, cachedTokens: 192 });
  assert.deepEqual(a.ids, b.ids);
});

test('stop strings, stop ids, EOS and max_tokens', async () => {
  const { e } = engine();
  const p = prompt(30, 1);
  const ref = greedyReference(p, 40, V);
  const full = byteDecoder.decode(ref.slice(0, 40));
  // A stop string taken from the middle of the greedy text: output ends right before it.
  const stop = full.slice(10, 13);
  const r = await collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 40, ignoreEos: true, stop: [stop] }) }));
  assert.equal(r.finish.reason, 'stop');
  assert.equal(r.finish.stopReason, stop);
  assert.equal(r.text[0], full.slice(0, full.indexOf(stop)));
  const r2 = await collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 40, ignoreEos: true, stopTokenIds: [ref[5]!] }) }));
  assert.equal(r2.finish.reason, 'stop');
  assert.equal(r2.finish.stopReason, ref[5]);
  assert.equal(r2.text[0], byteDecoder.decode(ref.slice(0, ref.indexOf(ref[5]!))));
  const r3 = await collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 7, ignoreEos: true }) }));
  assert.deepEqual([r3.finish.reason, r3.ids[0]], ['length', ref.slice(0, 7)]);
});

test('seeded sampling is reproducible, batched or not; n choices use seed + i', async () => {
  const p = prompt(40, 2);
  const params = P({ temperature: 1, topP: 0.9, maxTokens: 12, seed: 1234, n: 3, ignoreEos: true });
  const { e } = engine();
  const [a, b] = await Promise.all([collect(e.generate({ prompt: p, params })), collect(e.generate({ prompt: p, params }))]);
  assert.deepEqual(a.ids, b.ids);
  assert.equal(a.ids.length, 3);
  assert.notDeepEqual(a.ids[0], a.ids[1]);
  const single = await collect(e.generate({ prompt: p, params: { ...params, n: 1, seed: 1235 } }));
  assert.deepEqual(single.ids[0], a.ids[1]);
});

test('abort frees the blocks and ends the stream; overload and context limits refuse at once', async () => {
  const { e } = engine(64, { maxWaiting: 2, maxNumSeqs: 1 }, 2);
  const ac = new AbortController();
  const it = e.generate({ prompt: prompt(100, 4), params: P({ temperature: 0, maxTokens: 500, ignoreEos: true }), signal: ac.signal });
  let n = 0;
  let last: Delta | undefined;
  for await (const d of it) {
    last = d;
    if (d.type === 'text' && ++n === 5) { assert.ok(e.kvUsage() > 0); ac.abort(); }
  }
  assert.equal(last?.type, 'finish');
  assert.equal(last?.type === 'finish' && last.reason, 'abort');
  assert.equal(e.kvUsage(), 0);
  assert.equal(e.numLive, 0);
  assert.throws(() => e.generate({ prompt: prompt(1000, 1), params: P({ maxTokens: 100 }) }), PromptTooLongError);
  const busy = [0, 1].map(() => e.generate({ prompt: [1, 2], params: P({ maxTokens: 2 }) }));
  assert.throws(() => e.generate({ prompt: [1, 2], params: P({ maxTokens: 2 }) }), EngineOverloadedError);
  await Promise.all(busy.map(collect));
  await e.drain();
  assert.throws(() => e.generate({ prompt: [1], params: P() }), /shutting down/);
});
