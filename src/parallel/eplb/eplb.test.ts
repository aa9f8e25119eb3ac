import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rebalanceExperts, balancedPacking, replicateExperts, EplbArgumentError, gpuLoads } from './eplb.ts';
import { mulberry32 } from '../../tensor/random.ts';

// README test vector of deepseek-ai/EPLB (values in /work/shared/notes/deepseek-open-source-week.md §5).
const W = [
  [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
  [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
];

test('README vector: hierarchical policy (4 groups, 2 nodes, 8 GPUs, 16 replicas)', () => {
  const r = rebalanceExperts(W, 16, 4, 2, 8);
  assert.deepEqual(r.phy2log, [
    [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
    [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1],
  ]);
  assert.deepEqual(r.logcnt, [[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1], [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1]]);
  assert.deepEqual(r.log2phy, [
    [[12, -1], [15, 13], [11, -1], [6, -1], [7, 5], [0, 2], [1, -1], [3, -1], [4, -1], [9, -1], [8, 10], [14, -1]],
    [[13, -1], [15, 11], [8, -1], [14, -1], [9, -1], [10, 12], [2, 4], [0, -1], [6, 3], [7, -1], [1, -1], [5, -1]],
  ]);
  // Layer 0: node 0 (GPUs 0-3, slots 0-7) holds groups 1 and 2, i.e. experts 3..8.
  assert.deepEqual([...new Set(r.phy2log[0]!.slice(0, 8))].sort((a, b) => a - b), [3, 4, 5, 6, 7, 8]);
});

test('global policy vector (same weight, 3 nodes: 4 % 3 != 0)', () => {
  const r = rebalanceExperts(W, 16, 4, 3, 8);
  assert.deepEqual(r.phy2log, [
    [10, 6, 10, 7, 0, 2, 11, 4, 5, 9, 5, 4, 8, 3, 1, 1],
    [1, 10, 2, 4, 5, 11, 5, 0, 6, 7, 6, 3, 8, 8, 9, 7],
  ]);
});

test('ties: stable descending sort and lowest-index pack / first-max replica', () => {
  // Equal loads keep index order: 0->pack0, 1->pack1, 2->pack0 (tie), 3->pack1.
  assert.deepEqual(balancedPacking([[1, 1, 1, 1]], 2), { packIndex: [[0, 1, 0, 1]], rankInPack: [[0, 0, 1, 1]] });
  assert.deepEqual(rebalanceExperts([[1, 1, 1, 1]], 4, 1, 1, 2).phy2log, [[0, 2, 1, 3]]);
  // First maximum wins: experts 1 and 2 tie at 5, so the extra slot goes to 1, then 2 (5 > 2.5).
  assert.deepEqual(replicateExperts([[3, 5, 5]], 5).phy2log, [[0, 1, 2, 1, 2]]);
  // float32 cast: these two loads differ in float64 but are equal in float32, so the lower index wins.
  const a = 16777217; // 2^24 + 1 rounds to 2^24 in float32
  assert.deepEqual(replicateExperts([[16777216, a]], 3).phy2log, [[0, 1, 0]]);
});

test('invalid arguments are refused with EplbArgumentError', () => {
  const bad: Array<[string, () => unknown, string]> = [
    ['replicas % gpus', () => rebalanceExperts(W, 15, 4, 2, 8), 'numReplicas'],
    ['gpus % nodes', () => rebalanceExperts(W, 12, 4, 4, 6), 'numNodes'],
    ['groups > experts', () => rebalanceExperts([[1, 2]], 4, 4, 1, 2), 'numGroups'],
    ['experts % groups', () => rebalanceExperts(W, 16, 5, 1, 8), 'numGroups'],
    ['negative load', () => rebalanceExperts([[1, -1, 2, 3]], 4, 1, 1, 2), 'weight'],
    ['NaN load', () => rebalanceExperts([[1, NaN, 2, 3]], 4, 1, 1, 2), 'weight'],
    ['infinite load', () => rebalanceExperts([[1, Infinity, 2, 3]], 4, 1, 1, 2), 'weight'],
    ['fewer replicas than experts', () => rebalanceExperts(W, 8, 4, 2, 8), 'numReplicas'],
    ['ragged', () => rebalanceExperts([[1, 2, 3, 4], [1, 2, 3]], 4, 1, 1, 2), 'weight'],
    ['empty', () => rebalanceExperts([], 4, 1, 1, 2), 'weight'],
    ['zero gpus', () => rebalanceExperts(W, 16, 4, 2, 0), 'numGpus'],
    ['fractional replicas', () => rebalanceExperts(W, 16.5, 4, 2, 8), 'numReplicas'],
  ];
  for (const [what, fn, arg] of bad) {
    assert.throws(fn, (e: unknown) => e instanceof EplbArgumentError && e.argument === arg, what);
  }
});


test('properties on random loads (seeded): coverage, equal slots, groups on one node, load conserved, maps consistent', () => {
  const rnd = mulberry32(1234);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  for (let trial = 0; trial < 200; trial++) {
    const numNodes = pick([1, 2, 4]);
    const gpusPerNode = pick([1, 2, 4]);
    const numGpus = numNodes * gpusPerNode;
    const numGroups = numNodes * pick([1, 2, 3]) + (rnd() < 0.25 ? 1 : 0); // sometimes not a multiple -> global
    const groupSize = pick([1, 2, 4, 8]);
    const E = numGroups * groupSize;
    const numReplicas = Math.ceil((E + Math.floor(rnd() * E)) / numGpus) * numGpus;
    const L = 1 + Math.floor(rnd() * 3);
    const weight = Array.from({ length: L }, () => Array.from({ length: E }, () => (rnd() < 0.1 ? 0 : Math.floor(rnd() * 1000) + (rnd() < 0.3 ? 0.5 : 0))));
    const { phy2log, log2phy, logcnt } = rebalanceExperts(weight, numReplicas, numGroups, numNodes, numGpus);
    const hierarchical = numGroups % numNodes === 0;
    const perGpu = numReplicas / numGpus;
    for (let l = 0; l < L; l++) {
      const p2l = phy2log[l]!;
      assert.equal(p2l.length, numReplicas);
      // Every logical expert has at least one replica, and logcnt counts them.
      const counts = new Array<number>(E).fill(0);
      for (const e of p2l) counts[e]! += 1;
      assert.deepEqual(counts, logcnt[l]);
      assert.ok(counts.every((c) => c >= 1));
      // log2phy lists exactly the slots of each expert (and -1 padding).
      for (let e = 0; e < E; e++) {
        const slots = log2phy[l]![e]!.filter((p) => p >= 0);
        assert.equal(slots.length, counts[e]);
        assert.ok(log2phy[l]![e]!.slice(slots.length).every((p) => p === -1));
        for (const p of slots) assert.equal(p2l[p], e);
      }
      // Hierarchical: every group lives on a single node (slots of a node are contiguous).
      if (hierarchical) {
        const perNode = numReplicas / numNodes;
        const nodeOf = new Map<number, number>();
        p2l.forEach((e, p) => {
          const g = Math.floor(e / groupSize);
          const n = Math.floor(p / perNode);
          if (nodeOf.has(g)) assert.equal(nodeOf.get(g), n, `group ${g} split over nodes`);
          nodeOf.set(g, n);
        });
      }
      // Load conservation: GPUs (perGpu slots each, by construction of the slot layout) sum to the total.
      const loads = gpuLoads(weight[l]!, p2l, logcnt[l]!, numGpus);
      const total = weight[l]!.reduce((a, b) => a + b, 0);
      const sum = loads.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - total) <= 1e-9 * Math.max(1, total), `load ${sum} vs ${total}`);
      assert.equal(perGpu * numGpus, p2l.length);
    }
  }
});
