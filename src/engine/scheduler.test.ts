import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler } from './scheduler.ts';

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

test('chunked prefill under the token budget, then one token per step', () => {
  const s = new Scheduler({ numBlocks: 8, maxNumSeqs: 4, maxNumBatchedTokens: 100 });
  s.add(1, range(150));
  let o = s.schedule();
  assert.deepEqual(o.seqs.map((x) => [x.seqId, x.numCached, x.numNew, x.sample, x.blockTable]), [[1, 0, 100, false, [0, 1]]]);
  s.update(o, [null]);
  o = s.schedule();
  assert.deepEqual(o.seqs.map((x) => [x.numCached, x.numNew, x.sample, x.blockTable]), [[100, 50, true, [0, 1, 2]]]);
  assert.deepEqual(o.seqs[0]!.tokens, range(50, 100));
  s.update(o, [7]);
  o = s.schedule();
  assert.deepEqual(o.seqs.map((x) => [x.numCached, x.numNew, x.tokens, x.sample]), [[150, 1, [7], true]]);
});

test('running sequences decode while a new prompt prefills in the same step (one accounting)', () => {
  const s = new Scheduler({ numBlocks: 8, maxNumSeqs: 4, maxNumBatchedTokens: 64 });
  s.add(1, range(10));
  let o = s.schedule();
  s.update(o, [5]);
  s.add(2, range(100, 1000));
  o = s.schedule();
  assert.deepEqual(o.seqs.map((x) => [x.seqId, x.numCached, x.numNew, x.sample]), [[1, 10, 1, true], [2, 0, 63, false]]);
  assert.equal(o.numBatchedTokens, 64);
});

test('prefix cache: a second prompt sharing two full blocks reuses them (exact ids, ref counts)', () => {
  const s = new Scheduler({ numBlocks: 8, maxNumSeqs: 4, maxNumBatchedTokens: 512 });
  const shared = range(128, 1000);
  s.add(1, [...shared, 1, 2, 3]);
  let o = s.schedule();
  assert.deepEqual(o.seqs[0]!.blockTable, [0, 1, 2]);
  s.update(o, [9]);
  s.add(2, [...shared, 4, 5]);
  o = s.schedule();
  const two = o.seqs.find((x) => x.seqId === 2)!;
  assert.deepEqual([two.numCached, two.numNew, two.blockTable], [128, 2, [0, 1, 3]]);
  assert.equal(s.get(2).cachedPromptTokens, 128);
  assert.deepEqual([...s.blocks.refCount], [2, 2, 1, 1, 0, 0, 0, 0]);
  s.finish(1);
  assert.deepEqual([...s.blocks.refCount], [1, 1, 0, 1, 0, 0, 0, 0]);
  // Seq 1's blocks go to the free tail in reverse (2, then 1 and 0 still referenced by seq 2).
  assert.deepEqual(s.blocks.freeOrder(), [4, 5, 6, 7, 2]);
  s.finish(2);
  assert.deepEqual(s.blocks.freeOrder(), [4, 5, 6, 7, 2, 3, 1, 0]);
  assert.equal(s.blocks.usage(), 0);
});

test('a fully cached prompt still computes its last token (hits capped below it)', () => {
  const s = new Scheduler({ numBlocks: 4, maxNumSeqs: 4, maxNumBatchedTokens: 512 });
  const p = range(128);
  s.add(1, p);
  let o = s.schedule();
  s.update(o, [1]);
  s.finish(1);
  s.add(2, p);
  o = s.schedule();
  // 128 tokens = 2 full blocks, but only the first may be a hit: 64 tokens are recomputed.
  assert.deepEqual(o.seqs.map((x) => [x.numCached, x.numNew, x.sample]), [[64, 64, true]]);
  assert.equal(o.seqs[0]!.blockTable[0], 0);
});

test('out of blocks: the newest running sequence is preempted and later recomputed from the prefix cache', () => {
  // 3 blocks of 64. Two sequences of 60 prompt tokens each take a block; decoding past 64 needs more.
  const s = new Scheduler({ numBlocks: 3, maxNumSeqs: 4, maxNumBatchedTokens: 512 });
  s.add(1, range(63));
  s.add(2, range(63, 500));
  let o = s.schedule();
  assert.deepEqual(o.seqs.map((x) => x.blockTable), [[0], [1]]);
  s.update(o, [1, 2]); // both now 64 known tokens, 63 computed
  o = s.schedule();
  assert.deepEqual(o.seqs.map((x) => [x.seqId, x.numCached, x.numNew]), [[1, 63, 1], [2, 63, 1]]);
  s.update(o, [3, 4]); // 65 known, 64 computed: each needs a second block, only 1 free
  o = s.schedule();
  assert.deepEqual(o.preempted, [2]);
  assert.deepEqual(o.seqs.map((x) => [x.seqId, x.numCached, x.numNew, x.blockTable]), [[1, 64, 1, [0, 2]]]);
  assert.equal(s.numPreemptions, 1);
  assert.equal(s.get(2).status, 'waiting');
  assert.equal(s.numWaiting, 1);
  s.update(o, [5]);
  s.finish(1);
  // Seq 2 comes back: its full first block (registered before preemption) is a prefix hit.
  o = s.schedule();
  const two = o.seqs[0]!;
  assert.deepEqual([two.seqId, two.numCached, two.numNew, two.blockTable], [2, 64, 1, [1, 2]]);
  assert.deepEqual(two.tokens, [4]);
  assert.equal(s.get(2).cachedPromptTokens, 0); // usage reports the first admission only
});

test('max_num_seqs caps the running set; FCFS admission', () => {
  const s = new Scheduler({ numBlocks: 16, maxNumSeqs: 2, maxNumBatchedTokens: 512 });
  for (let i = 1; i <= 3; i++) s.add(i, [i]);
  const o = s.schedule();
  assert.deepEqual(o.seqs.map((x) => x.seqId), [1, 2]);
  assert.equal(s.numWaiting, 1);
  s.finish(1);
  s.update(o, [0, 0]);
  assert.deepEqual(s.schedule().seqs.map((x) => x.seqId), [2, 3]);
});

test('aborting a waiting or running sequence frees everything', () => {
  const s = new Scheduler({ numBlocks: 4, maxNumSeqs: 4, maxNumBatchedTokens: 512 });
  s.add(1, range(70));
  s.add(2, range(10));
  s.schedule();
  s.add(3, range(5));
  s.finish(3);
  s.finish(1);
  s.finish(2);
  assert.equal(s.blocks.usage(), 0);
  assert.equal(s.hasWork(), false);
  assert.throws(() => s.add(4, range(256)), /cannot fit/);
});
