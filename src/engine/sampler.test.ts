import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultSamplingParams as P } from './contracts.ts';
import { Rng } from './rng.ts';
import { argmax, logSoftmax, sample } from './sampler.ts';

const none = new Set<number>();
const logits = Float32Array.from([1, 3, 2, 3, -1, 0.5]);

test('greedy picks the max, ties to the lower id', () => {
  assert.equal(argmax(logits), 1);
  assert.equal(sample(logits, P({ temperature: 0 }), new Rng(1), none, new Map()).token, 1);
});

test('the seeded PRNG is reproducible and seeds differ', () => {
  const a = new Rng(42), b = new Rng(42), c = new Rng(43);
  const xa = Array.from({ length: 5 }, () => a.nextU32());
  assert.deepEqual(xa, Array.from({ length: 5 }, () => b.nextU32()));
  assert.notDeepEqual(xa, Array.from({ length: 5 }, () => c.nextU32()));
  const draws = (seed: number) => { const r = new Rng(seed); return Array.from({ length: 20 }, () => sample(logits, P({ temperature: 1 }), r, none, new Map()).token); };
  assert.deepEqual(draws(7), draws(7));
});

test('sampling frequencies follow the softmax at temperature 1', () => {
  const rng = new Rng(123);
  const counts = new Array(6).fill(0);
  const N = 20000;
  for (let i = 0; i < N; i++) counts[sample(logits, P({ temperature: 1 }), rng, none, new Map()).token]++;
  const p = Array.from(logSoftmax(logits), Math.exp);
  for (let v = 0; v < 6; v++) assert.ok(Math.abs(counts[v] / N - p[v]!) < 0.015, `token ${v}: ${counts[v] / N} vs ${p[v]}`);
});

test('top_k, top_p and min_p restrict the candidates', () => {
  const rng = new Rng(5);
  const seen = (params: Parameters<typeof P>[0]) => {
    const s = new Set<number>();
    for (let i = 0; i < 2000; i++) s.add(sample(logits, P(params), rng, none, new Map()).token);
    return [...s].sort();
  };
  assert.deepEqual(seen({ topK: 2 }), [1, 3]);
  // Probabilities ≈ [.052,.384,.141,.384,.007,.032]: top_p 0.75 keeps the two .384s, 0.8 adds id 2.
  assert.deepEqual(seen({ topP: 0.75 }), [1, 3]);
  assert.deepEqual(seen({ topP: 0.8 }), [1, 2, 3]);
  // min_p 0.3: keep p >= 0.3 * .384 = .115, i.e. ids 1, 2, 3.
  assert.deepEqual(seen({ minP: 0.3 }), [1, 2, 3]);
  assert.deepEqual(seen({ temperature: 0.01 }), [1, 3]);
});

test('penalties: repetition over prompt+output, frequency/presence over output', () => {
  const counts = new Map([[1, 2]]);
  // frequency 1 × 2 + presence 0.5 takes id 1 from 3 to 0.5: id 3 wins greedily.
  assert.equal(sample(logits, P({ temperature: 0, frequencyPenalty: 1, presencePenalty: 0.5 }), new Rng(0), none, counts).token, 3);
  // repetition 2 on ids 1 and 3 (prompt): 3 -> 1.5, so id 2 (2.0) wins.
  assert.equal(sample(logits, P({ temperature: 0, repetitionPenalty: 2 }), new Rng(0), new Set([1, 3]), new Map()).token, 2);
  // negative logits are multiplied: id 4 (-1) becomes -2 and stays last.
  assert.equal(logits[4], -1);
});

test('logprobs: the sampled token and the top alternatives from the raw log-softmax', () => {
  const r = sample(logits, P({ temperature: 0, logprobs: 2 }), new Rng(0), none, new Map());
  const lp = logSoftmax(logits);
  assert.equal(r.logprob, lp[1]);
  assert.deepEqual(r.top, [{ tokenId: 1, logprob: lp[1] }, { tokenId: 3, logprob: lp[3] }]);
  const s = Array.from(lp, Math.exp).reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(s - 1) < 1e-12);
});
