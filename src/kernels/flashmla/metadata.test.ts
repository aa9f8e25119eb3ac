// getMlaMetadata against hand-computed schedules (FlashMLA's integer algorithm: payload =
// ceil(Σ(ceil(len/64)+5)/parts) + 5, greedy walk), and coverage invariants on random batches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getMlaMetadata, numSmParts, allWorkItems, validateMetadata } from './metadata.ts';
import { FlashMlaError } from './types.ts';
import { Rng } from './testing.ts';

const rows = (m: Int32Array) => Array.from({ length: m.length / 8 }, (_, p) => Array.from(m.subarray(p * 8, p * 8 + 8)));

test('num_sm_parts: H800 (132 SMs), hQ 128, sQ 1, hKv 1 gives 66', () => {
  assert.equal(numSmParts(132, 128, 1), 66);
  assert.equal(numSmParts(132, 64, 1), 132);
  assert.equal(numSmParts(132, 256, 2), 16); // 132/2 = 66, / ceil(256/64) = 4 -> 16
  assert.equal(numSmParts(2, 256, 1), 1);
});

test('seqlens [100, 300, 64], 2 parts: payload 17, no split', () => {
  // nb = [2, 5, 1]; total = 7 + 10 + 6 = 23; payload = ceil(23/2) + 5 = 17.
  // part 0: req 0 (7 ≤ 17, left 10), req 1 (10 ≤ 10, left 0), req 2 needs 6 > 0 and 0 − 5 ≤ 0: stop.
  const m = getMlaMetadata(Int32Array.from([100, 300, 64]), 128, 1, 2);
  assert.deepEqual(rows(m.tileSchedulerMetadata), [[0, 0, 1, 300, 0, 0, 0, 0], [2, 0, 2, 64, 0, 0, 0, 0]]);
  assert.deepEqual(Array.from(m.numSplits), [0, 1, 2, 3]);
});

test('seqlens [1000], 4 parts: one request split three ways, one empty part', () => {
  // nb = 16; total 21; payload = ceil(21/4) + 5 = 11. Parts take 6, 6 blocks (splits), then the last 4
  // (4 + 5 ≤ 11); part 3 starts at request 1 = b and is empty.
  const m = getMlaMetadata(Int32Array.from([1000]), 16, 1, 4);
  assert.deepEqual(rows(m.tileSchedulerMetadata), [
    [0, 0, 0, 384, 0, 0, 0, 0],
    [0, 384, 0, 768, 1, 0, 0, 0],
    [0, 768, 0, 1000, 2, 0, 0, 0],
    [1, 0, 0, 1000, 0, 0, 0, 0],
  ]);
  assert.deepEqual(Array.from(m.numSplits), [0, 3]);
  const items = allWorkItems(m, Int32Array.from([1000]));
  assert.deepEqual(items.map((i) => [i.part, i.batchIdx, i.splitIdx, i.blockBegin, i.blockEnd, i.noSplit]), [
    [0, 0, 0, 0, 6, false], [1, 0, 1, 6, 12, false], [2, 0, 2, 12, 16, false],
  ]);
});

test('seqlens [0, 130, 0], 3 parts: zero-length requests cost the overhead only', () => {
  // nb = [0, 3, 0]; total = 5 + 8 + 5 = 18; payload = 6 + 5 = 11.
  // part 0: req 0 (5, left 6), req 1 needs 8 > 6: take 6 − 5 = 1 block (split 1).
  // part 1: from block 1 of req 1: rest 2 + 5 ≤ 11 (left 4); req 2 needs 5 > 4 and 4 − 5 ≤ 0: stop.
  // part 2: req 2.
  const m = getMlaMetadata(Int32Array.from([0, 130, 0]), 16, 1, 3);
  assert.deepEqual(rows(m.tileSchedulerMetadata), [
    [0, 0, 1, 64, 0, 0, 0, 0],
    [1, 64, 1, 130, 1, 0, 0, 0],
    [2, 0, 2, 0, 0, 0, 0, 0],
  ]);
  assert.deepEqual(Array.from(m.numSplits), [0, 1, 3, 4]);
});

test('one part takes the whole batch unsplit', () => {
  const lens = Int32Array.from([5, 4096, 0, 77]);
  const m = getMlaMetadata(lens, 128, 1, 1);
  assert.deepEqual(rows(m.tileSchedulerMetadata), [[0, 0, 3, 77, 0, 0, 0, 0]]);
  assert.deepEqual(Array.from(m.numSplits), [0, 1, 2, 3, 4]);
});

test('random batches: every block of every request is scheduled exactly once, splits ≤ parts', () => {
  const rng = new Rng(7);
  for (let trial = 0; trial < 300; trial++) {
    const b = 1 + rng.int(70);
    const lens = Int32Array.from({ length: b }, () => (rng.int(4) === 0 ? 0 : rng.int(9000)));
    const parts = 1 + rng.int(140);
    const m = getMlaMetadata(lens, 16, 1, parts);
    const items = validateMetadata(m, lens); // throws on a gap, overlap or split mismatch
    assert.equal(m.numSplits[b], items.length);
    for (let i = 0; i < b; i++) assert.ok(m.numSplits[i + 1]! - m.numSplits[i]! <= parts);
  }
});

test('stale metadata and bad arguments are typed errors', () => {
  const m = getMlaMetadata(Int32Array.from([100, 200]), 16, 1, 3);
  assert.throws(() => validateMetadata(m, Int32Array.from([100, 900])), (e: unknown) => e instanceof FlashMlaError && e.rule === 'bad-metadata');
  assert.throws(() => validateMetadata(m, Int32Array.from([100])), FlashMlaError);
  assert.throws(() => getMlaMetadata(Int32Array.from([-1]), 16, 1, 2), (e: unknown) => e instanceof FlashMlaError && e.rule === 'bad-seqlen');
  assert.throws(() => getMlaMetadata(Int32Array.from([1]), 16, 1, 0), (e: unknown) => e instanceof FlashMlaError && e.rule === 'bad-metadata');
  assert.throws(() => getMlaMetadata(Int32Array.from([1]), 16, 0, 2), FlashMlaError);
});

test('empty batch: one empty part, numSplits [0]', () => {
  const m = getMlaMetadata(new Int32Array(0), 16, 1, 2);
  assert.deepEqual(Array.from(m.numSplits), [0]);
  assert.deepEqual(validateMetadata(m, new Int32Array(0)), []);
});
