// Expert-parallelism load balancer: a port of DeepSeek's EPLB.
// Reference: https://github.com/deepseek-ai/EPLB/blob/main/eplb.py (commit d52c72d)
//
// Shapes: weight [L][E] (load of each logical expert per MoE layer), phy2log [L][R] (logical expert of
// each physical slot), log2phy [L][E][maxcnt] (slots of each logical expert, -1 padded), logcnt [L][E].
// Slot p lives on GPU floor(p / (R / numGpus)).
//
// Numerics follow the reference exactly: loads are cast to float32 (Math.fround) and every sum and
// quotient the reference does on float32 tensors is rounded to float32 here too, so ties break the same
// way. Orders: a stable descending sort (equal loads keep their index order) and "first minimum /
// first maximum wins" for the pack and replica choices, which is what Python's min() and torch's max()
// on CPU do.
import { EplbArgumentError } from './errors.ts';

export { EplbArgumentError } from './errors.ts';

export interface RebalanceResult {
  /** [L][R] logical expert held by each physical slot. */
  phy2log: number[][];
  /** [L][E][maxcnt] physical slots of each logical expert, padded with -1. */
  log2phy: number[][][];
  /** [L][E] number of replicas of each logical expert. */
  logcnt: number[][];
}

const f32 = Math.fround;

/** Indices of `row` sorted by value, largest first; equal values keep ascending index order. */
export function stableArgsortDesc(row: ArrayLike<number>): number[] {
  const idx = Array.from({ length: row.length }, (_, i) => i);
  // Array.prototype.sort is stable (ES2019), so only the value decides.
  return idx.sort((a, b) => (row[b]! > row[a]! ? 1 : row[b]! < row[a]! ? -1 : 0));
}

/**
 * Packs the n items of each row into m packs of exactly n/m items each, greedily: items in descending
 * load order go to the lightest pack that still has room (lowest index on ties).
 * Returns pack index and rank within the pack of every item, both [X][n].
 */
export function balancedPacking(weight: number[][], numPacks: number): { packIndex: number[][]; rankInPack: number[][] } {
  const packIndex: number[][] = [];
  const rankInPack: number[][] = [];
  for (const row of weight) {
    const n = row.length;
    if (n % numPacks !== 0) throw new EplbArgumentError(`balancedPacking: ${n} items do not split into ${numPacks} packs`, 'numPacks', numPacks);
    const perPack = n / numPacks;
    if (perPack === 1) {
      packIndex.push(row.map((_, i) => i));
      rankInPack.push(row.map(() => 0));
      continue;
    }
    const pi = new Array<number>(n).fill(-1);
    const rk = new Array<number>(n).fill(-1);
    const packW = new Array<number>(numPacks).fill(0);
    const packN = new Array<number>(numPacks).fill(0);
    for (const item of stableArgsortDesc(row)) {
      let best = -1;
      for (let p = 0; p < numPacks; p++) {
        if (packN[p]! < perPack && (best < 0 || packW[p]! < packW[best]!)) best = p;
      }
      pi[item] = best;
      rk[item] = packN[best]!;
      packW[best] = f32(packW[best]! + row[item]!);
      packN[best]! += 1;
    }
    packIndex.push(pi);
    rankInPack.push(rk);
  }
  return { packIndex, rankInPack };
}

/**
 * Replicates the numLog experts of each row into numPhy slots so that the largest per-replica load is
 * minimised: slots 0..numLog-1 hold each expert once, each extra slot goes to argmax(load / count).
 * Returns phy2log and the replica rank of each slot ([X][numPhy]) and the count of each expert ([X][numLog]).
 */
export function replicateExperts(weight: number[][], numPhy: number): { phy2log: number[][]; rank: number[][]; logcnt: number[][] } {
  const phy2log: number[][] = [];
  const rank: number[][] = [];
  const logcnt: number[][] = [];
  for (const row of weight) {
    const numLog = row.length;
    if (numPhy < numLog) throw new EplbArgumentError(`replicateExperts: ${numPhy} slots for ${numLog} experts`, 'numReplicas', numPhy);
    const p2l = Array.from({ length: numPhy }, (_, i) => (i < numLog ? i : -1));
    const rk = new Array<number>(numPhy).fill(0);
    const cnt = new Array<number>(numLog).fill(1);
    for (let i = numLog; i < numPhy; i++) {
      let best = 0;
      let bestV = f32(row[0]! / cnt[0]!);
      for (let e = 1; e < numLog; e++) {
        const v = f32(row[e]! / cnt[e]!);
        if (v > bestV) { best = e; bestV = v; }
      }
      p2l[i] = best;
      rk[i] = cnt[best]!;
      cnt[best]! += 1;
    }
    phy2log.push(p2l);
    rank.push(rk);
    logcnt.push(cnt);
  }
  return { phy2log, rank, logcnt };
}

/** Inverse of each row permutation. */
function inverse(perm: number[][]): number[][] {
  return perm.map((row) => {
    const inv = new Array<number>(row.length);
    row.forEach((v, i) => { inv[v] = i; });
    return inv;
  });
}

/**
 * The hierarchical policy: groups packed onto nodes, experts replicated within each node, replicas
 * packed onto the node's GPUs. Returns phy2log [L][R], the replica rank of each slot [L][R] and logcnt.
 * `weight` must already be float32-rounded and validated.
 */
export function rebalanceHierarchical(weight: number[][], numPhysical: number, numGroups: number, numNodes: number, numGpus: number): { phy2log: number[][]; phyrank: number[][]; logcnt: number[][] } {
  const L = weight.length;
  const E = weight[0]!.length;
  const groupSize = E / numGroups;
  const groupsPerNode = numGroups / numNodes;
  const perGpu = numPhysical / numGpus;
  const logPerNode = E / numNodes;
  const phyPerNode = numPhysical / numNodes;

  // Step 1: pack groups onto nodes, renumber experts node-major ("mlog").
  const groupLoad = weight.map((row) => {
    const out = new Array<number>(numGroups);
    for (let g = 0; g < numGroups; g++) {
      let s = 0;
      for (let j = 0; j < groupSize; j++) s = f32(s + row[g * groupSize + j]!);
      out[g] = s;
    }
    return out;
  });
  const groupPack = balancedPacking(groupLoad, numNodes);
  const log2mlog = groupPack.packIndex.map((packs, l) => {
    const out = new Array<number>(E);
    for (let g = 0; g < numGroups; g++) {
      const base = (packs[g]! * groupsPerNode + groupPack.rankInPack[l]![g]!) * groupSize;
      for (let j = 0; j < groupSize; j++) out[g * groupSize + j] = base + j;
    }
    return out;
  });
  const mlog2log = inverse(log2mlog);

  // Step 2: replicate within each node. Rows are (layer, node) pairs: [L*N][E/N].
  const mlogLoad: number[][] = [];
  for (let l = 0; l < L; l++) {
    for (let n = 0; n < numNodes; n++) {
      const row = new Array<number>(logPerNode);
      for (let i = 0; i < logPerNode; i++) row[i] = weight[l]![mlog2log[l]![n * logPerNode + i]!]!;
      mlogLoad.push(row);
    }
  }
  const rep = replicateExperts(mlogLoad, phyPerNode);

  // Step 3: pack each node's replicas (load / count) onto its GPUs, then map back to logical ids.
  const phyLoad = rep.phy2log.map((p2m, x) => p2m.map((m) => f32(mlogLoad[x]![m]! / rep.logcnt[x]![m]!)));
  const gpuPack = balancedPacking(phyLoad, numGpus / numNodes);
  const phy2pphy = gpuPack.packIndex.map((packs, x) => packs.map((p, i) => p * perGpu + gpuPack.rankInPack[x]![i]!));
  const pphy2phy = inverse(phy2pphy);

  const phy2log: number[][] = [];
  const phyrank: number[][] = [];
  const logcnt: number[][] = [];
  for (let l = 0; l < L; l++) {
    const p2l = new Array<number>(numPhysical);
    const prk = new Array<number>(numPhysical);
    for (let n = 0; n < numNodes; n++) {
      const x = l * numNodes + n;
      for (let q = 0; q < phyPerNode; q++) {
        const phy = pphy2phy[x]![q]!;
        const mlog = rep.phy2log[x]![phy]! + n * logPerNode;
        p2l[n * phyPerNode + q] = mlog2log[l]![mlog]!;
        prk[n * phyPerNode + q] = rep.rank[x]![phy]!;
      }
    }
    phy2log.push(p2l);
    phyrank.push(prk);
    logcnt.push(log2mlog[l]!.map((m) => rep.logcnt[l * numNodes + Math.floor(m / logPerNode)]![m % logPerNode]!));
  }
  return { phy2log, phyrank, logcnt };
}

function checkCount(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new EplbArgumentError(`${name} must be a positive integer, got ${v}`, name, v);
}

/** Checks shapes and loads; returns the loads rounded to float32 as the reference's `.float()` does. */
export function validateWeight(weight: unknown): number[][] {
  if (!Array.isArray(weight) || weight.length === 0) throw new EplbArgumentError('weight must be a non-empty array of layers, each an array of expert loads', 'weight');
  let E = -1;
  return weight.map((row: unknown, l) => {
    if (!Array.isArray(row) && !ArrayBuffer.isView(row)) throw new EplbArgumentError(`weight[${l}] is not an array of expert loads`, 'weight');
    const r = Array.from(row as ArrayLike<unknown>);
    if (E < 0) E = r.length;
    if (r.length === 0) throw new EplbArgumentError(`weight[${l}] has no experts`, 'weight');
    if (r.length !== E) throw new EplbArgumentError(`ragged weight: layer ${l} has ${r.length} experts, layer 0 has ${E}`, 'weight', r.length);
    return r.map((v, e) => {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
        throw new EplbArgumentError(`weight[${l}][${e}] must be a finite non-negative load, got ${String(v)}`, 'weight');
      }
      return f32(v);
    });
  });
}

/**
 * Chooses how many replicas each logical expert gets and where they go.
 * Hierarchical policy when numGroups % numNodes == 0, global policy (groups = nodes = 1) otherwise.
 */
export function rebalanceExperts(weight: number[][], numReplicas: number, numGroups: number, numNodes: number, numGpus: number): RebalanceResult {
  checkCount('numReplicas', numReplicas);
  checkCount('numGroups', numGroups);
  checkCount('numNodes', numNodes);
  checkCount('numGpus', numGpus);
  const w = validateWeight(weight);
  const L = w.length;
  const E = w[0]!.length;
  if (numGroups > E) throw new EplbArgumentError(`more groups (${numGroups}) than experts (${E})`, 'numGroups', numGroups);
  if (E % numGroups !== 0) throw new EplbArgumentError(`${E} experts do not split into ${numGroups} equal groups`, 'numGroups', numGroups);
  if (numReplicas % numGpus !== 0) throw new EplbArgumentError(`${numReplicas} replicas do not split evenly over ${numGpus} GPUs`, 'numReplicas', numReplicas);
  if (numReplicas < E) throw new EplbArgumentError(`fewer replicas (${numReplicas}) than logical experts (${E})`, 'numReplicas', numReplicas);

  const hierarchical = numGroups % numNodes === 0;
  // Only the hierarchical policy uses the node count (the global one runs with nodes = 1).
  if (hierarchical && numGpus % numNodes !== 0) throw new EplbArgumentError(`${numGpus} GPUs do not split evenly over ${numNodes} nodes`, 'numNodes', numNodes);
  const { phy2log, phyrank, logcnt } = hierarchical
    ? rebalanceHierarchical(w, numReplicas, numGroups, numNodes, numGpus)
    : rebalanceHierarchical(w, numReplicas, 1, 1, numGpus);

  let maxcnt = 0;
  for (const row of logcnt) for (const c of row) maxcnt = Math.max(maxcnt, c);
  const log2phy: number[][][] = [];
  for (let l = 0; l < L; l++) {
    const table = Array.from({ length: E }, () => new Array<number>(maxcnt).fill(-1));
    for (let p = 0; p < numReplicas; p++) table[phy2log[l]![p]!]![phyrank[l]![p]!] = p;
    log2phy.push(table);
  }
  return { phy2log, log2phy, logcnt };
}

/** Which policy rebalanceExperts uses for these arguments. */
export function policyOf(numGroups: number, numNodes: number): 'hierarchical' | 'global' {
  return numGroups % numNodes === 0 ? 'hierarchical' : 'global';
}

/** Per-GPU load of a placement: each slot carries its expert's load divided by the expert's replica count. */
export function gpuLoads(weightRow: number[], phy2logRow: number[], logcntRow: number[], numGpus: number): number[] {
  const per = phy2logRow.length / numGpus;
  const out = new Array<number>(numGpus).fill(0);
  phy2logRow.forEach((e, p) => { out[Math.floor(p / per)]! += weightRow[e]! / logcntRow[e]!; });
  return out;
}

/** Balance of a set of loads: max over mean (1 = perfect). */
export function imbalance(loads: number[]): number {
  const mean = loads.reduce((a, b) => a + b, 0) / loads.length;
  return mean === 0 ? 1 : Math.max(...loads) / mean;
}

/** GPU loads with no replication: E experts placed contiguously, E/numGpus per GPU (E must divide). */
export function contiguousGpuLoads(weightRow: number[], numGpus: number): number[] {
  const E = weightRow.length;
  const out = new Array<number>(numGpus).fill(0);
  weightRow.forEach((v, e) => { out[Math.floor((e * numGpus) / E)]! += v; });
  return out;
}
