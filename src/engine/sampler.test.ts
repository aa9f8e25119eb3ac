import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultSamplingParams as P, defaultSamplingParams, type SamplingParams } from './contracts.ts';
import { Rng } from './rng.ts';
import { argmax, logSoftmax, sample, sampleWithDraft } from './sampler.ts';

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

test('sampleWithDraft: the emitted token follows the target distribution whatever the draft (top-k/top-p/min-p, penalties)', () => {
  const logits = Float32Array.of(1.5, 0.2, 2.4, -0.7, 1.1, 0.9, -2, 0.4);
  const cases: Partial<SamplingParams>[] = [
    { temperature: 0.9 },
    { temperature: 1.3, topK: 4 },
    { temperature: 1, topP: 0.8, minP: 0.05 },
    { temperature: 0.7, frequencyPenalty: 0.5, presencePenalty: 0.2 },
  ];
  const counts = new Map([[2, 2], [4, 1]]);
  for (const over of cases) {
    const p = defaultSamplingParams(over);
    const rng = new Rng(17);
    // The target: what plain sample() draws, estimated from many draws.
    const N = 30000;
    const want = new Float64Array(8);
    for (let i = 0; i < N; i++) want[sample(logits, p, rng, new Set(), counts).token]!++;
    for (const draft of [2, 0, 6]) {
      const got = new Float64Array(8);
      let acc = 0;
      for (let i = 0; i < N; i++) {
        const r = sampleWithDraft(logits, p, rng, new Set(), counts, undefined, draft);
        got[r.token]!++;
        if (r.accepted) { acc++; assert.equal(r.token, draft); }
      }
      for (let t = 0; t < 8; t++) assert.ok(Math.abs(got[t]! - want[t]!) / N < 0.015, `${JSON.stringify(over)} draft ${draft} token ${t}: ${got[t]! / N} vs ${want[t]! / N}`);
      // Acceptance is the target's probability of the draft.
      assert.ok(Math.abs(acc - want[draft]!) / N < 0.015, `acceptance ${acc / N} vs p(d) ${want[draft]! / N}`);
    }
  }
});

test('sampleWithDraft greedy: accepts exactly the argmax of the processed logits; a masked draft is never accepted', () => {
  const logits = Float32Array.of(0.1, 3, 2.9, 0);
  const p = defaultSamplingParams({ temperature: 0 });
  const rng = new Rng(1);
  assert.deepEqual(sampleWithDraft(logits, p, rng, new Set(), new Map(), undefined, 1), { token: 1, accepted: true });
  assert.deepEqual(sampleWithDraft(logits, p, rng, new Set(), new Map(), undefined, 2), { token: 1, accepted: false });
  // A frequency penalty on token 1 makes 2 the argmax.
  assert.deepEqual(sampleWithDraft(logits, defaultSamplingParams({ temperature: 0, frequencyPenalty: 0.5 }), rng, new Set(), new Map([[1, 1]]), undefined, 2), { token: 2, accepted: true });
  const mask = Int32Array.of(0b1101); // token 1 not allowed
  const s = sampleWithDraft(logits, defaultSamplingParams({ temperature: 1 }), rng, new Set(), new Map(), mask, 1);
  assert.equal(s.accepted, false);
  assert.notEqual(s.token, 1);
});
