// Speculative decoding inside the engine (continuous batching), against a drafter double that proposes the
// true greedy continuation except where told to err: greedy output is the plain output token for token
// (concurrent requests, chunked prefill, preemption, prefix hits, stops inside an accepted run, penalties,
// logprobs, guided masks), the drafter's cache covers every valid position, and the bookkeeping of drafted
// and accepted tokens adds up. The model-level MTP drafter is tested in test/speculative-engine.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultSamplingParams as P, type Delta, type SamplingParams, type TokenConstraint } from './contracts.ts';
import { Engine, type SpecStepStats } from './engine.ts';
import { FakeRunner, byteDecoder, greedyReference, type FakeDrafter } from './testing/fake-runner.ts';

const V = 300;
const tok = { ...byteDecoder, eosTokenIds: [299] };

function engine(drafter: FakeDrafter | null, numBlocks = 64, over: Partial<ConstructorParameters<typeof Engine>[2]> = {}) {
  const runner = new FakeRunner(V, numBlocks, 0, drafter);
  const e = new Engine(runner, tok, { maxModelLen: 1024, maxNumSeqs: 16, maxNumBatchedTokens: 256, maxWaiting: 64, ...over });
  const spec = { steps: 0, seqs: 0, drafted: 0, accepted: 0, perPos: [] as number[] };
  e.observer = {
    onSpec: (s: SpecStepStats) => {
      spec.steps++; spec.seqs += s.seqs; spec.drafted += s.drafted; spec.accepted += s.accepted;
      s.perPos.forEach((n, j) => { spec.perPos[j] = (spec.perPos[j] ?? 0) + (n ?? 0); });
    },
  };
  return { runner, e, spec };
}

async function collect(it: AsyncIterable<Delta>) {
  const ids: number[] = [];
  const lps: number[] = [];
  let finish: Extract<Delta, { type: 'finish' }> | undefined;
  for await (const d of it) {
    if (d.type === 'text') { ids.push(...d.tokenIds); for (const l of d.logprobs ?? []) lps.push(l.logprob); }
    if (d.type === 'finish') finish = d;
  }
  return { ids, lps, finish: finish! };
}

const prompt = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (i * 37 + seed * 11) % 256);
/** Errs on about one draft position in three, deterministically. */
const sometimesWrong: FakeDrafter['wrong'] = (pos, t) => ((pos * 2654435761 + t) >>> 0) % 3 === 0;

for (const k of [1, 3]) {
  test(`K=${k}: 12 concurrent greedy requests (chunked prefill) equal the cache-free reference; drafts add up`, async () => {
    const prompts = Array.from({ length: 12 }, (_, i) => prompt(20 + i * 29, i));
    const ref = prompts.map((p) => greedyReference(p, 40, V, new Set([299])).filter((t) => t !== 299));
    const { e, runner, spec } = engine({ k, wrong: sometimesWrong }, 64, { maxNumBatchedTokens: 96 });
    const out = await Promise.all(prompts.map((p) => collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 40 }) }))));
    assert.deepEqual(out.map((r) => r.ids), ref);
    out.forEach((r, i) => assert.equal(r.finish.usage.completionTokens, ref[i]!.length + (ref[i]!.length < 40 ? 1 : 0)));
    assert.equal(runner.drafterMismatches, 0);
    assert.ok(spec.drafted > 0 && spec.accepted > 0 && spec.accepted < spec.drafted, JSON.stringify(spec));
    assert.equal(spec.perPos.reduce((a, b) => a + b, 0), spec.accepted);
    assert.ok(spec.perPos.length <= k);
    // Fewer forwards than tokens: accepted drafts save steps.
    const plain = engine(null, 64, { maxNumBatchedTokens: 96 });
    await Promise.all(prompts.map((p) => collect(plain.e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 40 }) }))));
    assert.ok(runner.forwards < plain.runner.forwards, `${runner.forwards} vs ${plain.runner.forwards} forwards`);
    assert.equal(e.kvUsage(), 0);
  });
}

test('a perfect drafter: every draft accepted, K + 1 tokens a step, exactly max_tokens', async () => {
  const { e, runner, spec } = engine({ k: 3 });
  const p = prompt(50, 4);
  const r = await collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 33, ignoreEos: true }) }));
  assert.deepEqual(r.ids, greedyReference(p, 33, V));
  assert.equal(spec.accepted, spec.drafted);
  // 1 token from the prefill, then 8 steps of 4 tokens (the last capped so that exactly 33 come out).
  assert.equal(runner.forwards, 1 + 8);
  assert.equal(r.finish.reason, 'length');
});

test('a stop token inside an accepted run ends the output there', async () => {
  const p = prompt(40, 8);
  const ref = greedyReference(p, 30, V);
  const stopAt = ref[9]!;
  const first = ref.indexOf(stopAt);
  const { e } = engine({ k: 3 });
  const r = await collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 30, stopTokenIds: [stopAt] }) }));
  assert.deepEqual(r.ids, ref.slice(0, first));
  assert.equal(r.finish.stopReason, stopAt);
  assert.equal(r.finish.usage.completionTokens, first + 1);
});

test('preemption under a tiny KV cache, with drafts in flight, still gives the reference tokens', async () => {
  const { e, runner, spec } = engine({ k: 2, wrong: sometimesWrong }, 7, { maxModelLen: 200 });
  const prompts = Array.from({ length: 4 }, (_, i) => prompt(60, i + 3));
  const out = await Promise.all(prompts.map((p) => collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 100, ignoreEos: true }) }))));
  assert.ok(e.scheduler.numPreemptions > 0, 'expected preemptions');
  out.forEach((r, i) => assert.deepEqual(r.ids, greedyReference(prompts[i]!, 100, V)));
  assert.ok(spec.accepted > 0);
  assert.equal(runner.drafterMismatches, 0);
  assert.equal(e.kvUsage(), 0);
});

test('prefix-cache hits and drafts: a repeated prompt gives the same tokens', async () => {
  const { e } = engine({ k: 2, wrong: sometimesWrong });
  const p = prompt(200, 9);
  const a = await collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 20 }) }));
  const b = await collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 20 }) }));
  assert.equal(b.finish.usage.cachedTokens, 192);
  assert.deepEqual(a.ids, b.ids);
  assert.deepEqual(a.ids, greedyReference(p, 20, V, new Set([299])).filter((t) => t !== 299));
});

test('penalties and logprobs: the same tokens and logprobs with and without speculation', async () => {
  const params: Partial<SamplingParams> = { temperature: 0, maxTokens: 40, frequencyPenalty: 0.7, presencePenalty: 0.3, repetitionPenalty: 1.2, logprobs: 2, ignoreEos: true };
  const p = prompt(30, 5);
  const plain = await collect(engine(null).e.generate({ prompt: p, params: P(params) }));
  const { e, spec } = engine({ k: 3, wrong: sometimesWrong });
  const sp = await collect(e.generate({ prompt: p, params: P(params) }));
  assert.deepEqual(sp.ids, plain.ids);
  assert.deepEqual(sp.lps, plain.lps);
  assert.equal(sp.lps.length, 40);
  // The penalties change the greedy path, so the drafter (which ignores them) is often wrong, sometimes right.
  assert.ok(spec.drafted > 0);
});

test('a guided mask holds at every verified position (drafts outside it are rejected)', async () => {
  // Only even tokens below 200 are allowed; the drafter proposes the unconstrained argmax.
  const evens = new Int32Array(Math.ceil(V / 32));
  for (let t = 0; t < 200; t += 2) evens[t >> 5]! |= 1 << (t & 31);
  const seen: number[] = [];
  const guided = {
    async create(): Promise<TokenConstraint> {
      return { mask: () => evens, accept: (t: number) => { seen.push(t); return t % 2 === 0; }, done: false, dispose() {} };
    },
  };
  const p = prompt(25, 2);
  const plain = await collect(engine(null).e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 30, guided }) }));
  seen.length = 0;
  const { e } = engine({ k: 3 });
  const sp = await collect(e.generate({ prompt: p, params: P({ temperature: 0, maxTokens: 30, guided }) }));
  assert.deepEqual(sp.ids, plain.ids);
  assert.ok(sp.ids.every((t) => t % 2 === 0 && t < 200));
  // The constraint saw exactly the emitted tokens, in order (never a rejected draft).
  assert.deepEqual(seen, sp.ids);
});

test('sampling with speculation: deterministic per seed, every token inside top-k', async () => {
  const run = async (seed: number) => {
    const { e } = engine({ k: 2, wrong: sometimesWrong });
    return collect(e.generate({ prompt: prompt(30, 1), params: P({ temperature: 0.8, topK: 5, seed, maxTokens: 30, ignoreEos: true }) }));
  };
  const a = await run(3), b = await run(3), c = await run(4);
  assert.deepEqual(a.ids, b.ids);
  assert.notDeepEqual(a.ids, c.ids);
  // Each token is one of the 5 most likely after its history.
  const hist = prompt(30, 1);
  for (const t of a.ids) {
    const l = FakeRunner.logitsFor(hist, V);
    const top = Array.from(l.keys()).sort((x, y) => l[y]! - l[x]! || x - y).slice(0, 5);
    assert.ok(top.includes(t), `token ${t} not in top-5 ${top}`);
    hist.push(t);
  }
});
