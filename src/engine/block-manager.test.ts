import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockManager, OutOfBlocksError, blockHashes, hashBlock } from './block-manager.ts';

test('allocation hands out blocks in id order and counts references', () => {
  const bm = new BlockManager(4, 4);
  assert.deepEqual(bm.freeOrder(), [0, 1, 2, 3]);
  assert.deepEqual(bm.allocate(2), [0, 1]);
  assert.deepEqual([...bm.refCount], [1, 1, 0, 0]);
  assert.equal(bm.usage(), 0.5);
  assert.throws(() => bm.allocate(3), (e: unknown) => e instanceof OutOfBlocksError && e.requested === 3 && e.free === 2);
});

test('release frees a sequence tail first; eviction follows the free queue (LRU)', () => {
  const bm = new BlockManager(4, 4);
  const a = bm.allocate(2); // [0, 1]
  const h = blockHashes([1, 2, 3, 4, 5, 6, 7, 8], 4);
  bm.register(a[0]!, h[0]!);
  bm.register(a[1]!, h[1]!);
  bm.release(a);
  // Freed in reverse: block 1 (the tail) is evicted before block 0.
  assert.deepEqual(bm.freeOrder(), [2, 3, 1, 0]);
  assert.deepEqual(bm.allocate(1), [2]);
  // Both cached blocks are found; acquiring takes them out of the free queue.
  assert.deepEqual(bm.lookup(h), [0, 1]);
  bm.acquire([0, 1]);
  assert.deepEqual([...bm.refCount], [1, 1, 1, 0]);
  assert.deepEqual(bm.freeOrder(), [3]);
  // A second user of the same prefix shares them.
  bm.acquire([0, 1]);
  assert.deepEqual([...bm.refCount], [2, 2, 1, 0]);
  bm.release([0, 1]);
  bm.release([0, 1]);
  assert.deepEqual(bm.freeOrder(), [3, 1, 0]);
  // Allocating 2 takes 3, then evicts block 1 (its hash leaves the cache); block 0 survives.
  assert.deepEqual(bm.allocate(2), [3, 1]);
  assert.equal(bm.cachedBlock(h[1]!), undefined);
  assert.equal(bm.cachedBlock(h[0]!), 0);
  assert.deepEqual(bm.lookup(h), [0]);
  assert.equal(bm.blockHash[1], null);
  assert.equal(bm.queries, 4);
  assert.equal(bm.hits, 3);
});

test('hashes chain on the parent: equal blocks after different prefixes differ', () => {
  const x = blockHashes([1, 2, 9, 9], 2);
  const y = blockHashes([3, 4, 9, 9], 2);
  assert.notEqual(x[1], y[1]);
  assert.equal(x[1], hashBlock(x[0]!, [9, 9]));
  assert.equal(blockHashes([1, 2, 9], 2).length, 1); // partial blocks are not hashed
});

test('a duplicate registration keeps the first copy; releasing twice is an error', () => {
  const bm = new BlockManager(3, 2);
  const [a, b] = bm.allocate(2);
  bm.register(a!, 'h');
  bm.register(b!, 'h');
  assert.equal(bm.cachedBlock('h'), a);
  assert.equal(bm.blockHash[b!], null);
  bm.release([a!, b!]);
  assert.throws(() => bm.release([a!]), /no references/);
});
