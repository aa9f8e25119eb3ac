// DeepEP `Buffer.get_dispatch_layout` (https://github.com/deepseek-ai/DeepEP/blob/main/deep_ep/buffer.py,
// kernels in csrc/kernels/layout.cu): which ranks and experts each token goes to. Experts are split in
// contiguous blocks: expert e lives on rank floor(e / (E / R)). topk id -1 means "no expert".
import { DeepEPShapeError } from './errors.ts';

export interface DispatchLayout {
  /** [R] tokens that have at least one expert on rank r (each counted once per rank). */
  numTokensPerRank: Int32Array;
  /** [E] (token, k) pairs routed to expert e. */
  numTokensPerExpert: Int32Array;
  /** [T, R] 1 if token t goes to rank r. */
  isTokenInRank: Uint8Array;
  numTokens: number;
  numRanks: number;
  numExperts: number;
}

export function checkTopk(op: string, topkIdx: Int32Array, numTokens: number, numExperts: number): number {
  if (numTokens < 0 || !Number.isInteger(numTokens)) throw new DeepEPShapeError(op, 'numTokens', `must be a non-negative integer, got ${numTokens}`);
  if (numTokens === 0) return 0;
  if (topkIdx.length % numTokens !== 0) throw new DeepEPShapeError(op, 'topkIdx', `length ${topkIdx.length} is not a multiple of ${numTokens} tokens`);
  const k = topkIdx.length / numTokens;
  for (let i = 0; i < topkIdx.length; i++) {
    const e = topkIdx[i]!;
    if (e < -1 || e >= numExperts) throw new DeepEPShapeError(op, 'topkIdx', `expert id ${e} at [${Math.floor(i / k)}, ${i % k}] outside [-1, ${numExperts})`);
  }
  return k;
}

/** topkIdx: [T, K] Int32 with -1 for unused slots. */
export function getDispatchLayout(topkIdx: Int32Array, numTokens: number, numExperts: number, numRanks: number): DispatchLayout {
  if (!Number.isInteger(numRanks) || numRanks < 1 || numExperts % numRanks !== 0) {
    throw new DeepEPShapeError('get_dispatch_layout', 'numExperts', `${numExperts} experts do not split evenly over ${numRanks} ranks`);
  }
  const k = checkTopk('get_dispatch_layout', topkIdx, numTokens, numExperts);
  const perRank = numExperts / numRanks;
  const numTokensPerRank = new Int32Array(numRanks);
  const numTokensPerExpert = new Int32Array(numExperts);
  const isTokenInRank = new Uint8Array(numTokens * numRanks);
  for (let t = 0; t < numTokens; t++) {
    for (let j = 0; j < k; j++) {
      const e = topkIdx[t * k + j]!;
      if (e < 0) continue;
      numTokensPerExpert[e]!++;
      const r = (e / perRank) | 0;
      if (!isTokenInRank[t * numRanks + r]) {
        isTokenInRank[t * numRanks + r] = 1;
        numTokensPerRank[r]!++;
      }
    }
  }
  return { numTokensPerRank, numTokensPerExpert, isTokenInRank, numTokens, numRanks, numExperts };
}
