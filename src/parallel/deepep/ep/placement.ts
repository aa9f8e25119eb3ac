// Where the routed experts live in an expert-parallel run. Without load statistics: E physical slots,
// slot p holds logical expert p, slot p sits on rank floor(p / (E/R)) (DeepEP's layout). With per-layer
// expert loads: EPLB (src/parallel/eplb, DeepSeek's rebalance_experts) replicates hot experts into
// E + redundant slots and packs them onto the R ranks; a token's choice of logical expert e is then sent
// to one of e's replicas, picked round-robin by token index (spreading a hot expert's tokens evenly).
import { rebalanceExperts } from '../../eplb/eplb.ts';
import { isMoeLayer, type DeepseekConfig } from '../../../model/config.ts';

export interface LayerPlacement {
  /** [P] logical expert of each physical slot. */
  phy2log: Int32Array;
  /** [E, maxcnt] physical slots of each logical expert (-1 padded). */
  log2phy: Int32Array;
  /** [E] replicas per logical expert. */
  logcnt: Int32Array;
  maxcnt: number;
}

export interface ExpertPlacement {
  readonly numRanks: number;
  readonly numLogical: number;
  /** P, a multiple of numRanks. */
  readonly numPhysical: number;
  /** Keyed by model layer index (MoE layers only). */
  readonly layers: ReadonlyMap<number, LayerPlacement>;
}

export class PlacementError extends Error {
  override name = 'PlacementError';
}

export function moeLayers(c: DeepseekConfig): number[] {
  return Array.from({ length: c.num_hidden_layers }, (_, i) => i).filter((i) => isMoeLayer(c, i));
}

/**
 * loads: [MoE layer][E] (as `seekd eplb --weights`), one row per MoE layer in layer order; `redundant`
 * extra slots in all (a multiple of R; default R, one per rank).
 */
export function placeExperts(c: DeepseekConfig, numRanks: number, loads?: number[][], redundant?: number): ExpertPlacement {
  const E = c.n_routed_experts;
  if (E === null) throw new PlacementError('the model has no routed experts');
  const layers = moeLayers(c);
  if (!loads) {
    if (E % numRanks !== 0) throw new PlacementError(`${E} routed experts do not split evenly over ${numRanks} ranks`);
    const identity: LayerPlacement = {
      phy2log: Int32Array.from({ length: E }, (_, i) => i),
      log2phy: Int32Array.from({ length: E }, (_, i) => i),
      logcnt: new Int32Array(E).fill(1),
      maxcnt: 1,
    };
    return { numRanks, numLogical: E, numPhysical: E, layers: new Map(layers.map((l) => [l, identity])) };
  }
  if (loads.length !== layers.length) throw new PlacementError(`expert loads have ${loads.length} rows, the model has ${layers.length} MoE layers`);
  for (const [i, row] of loads.entries()) {
    if (!Array.isArray(row) || row.length !== E) throw new PlacementError(`expert loads row ${i} has ${Array.isArray(row) ? row.length : 'no'} entries, expected ${E}`);
  }
  const extra = redundant ?? numRanks;
  if (extra < 0 || (E + extra) % numRanks !== 0) throw new PlacementError(`${E} experts + ${extra} redundant slots do not split evenly over ${numRanks} ranks`);
  const P = E + extra;
  const r = rebalanceExperts(loads, P, c.n_group ?? 1, 1, numRanks);
  const out = new Map<number, LayerPlacement>();
  layers.forEach((layer, i) => {
    const maxcnt = r.log2phy[i]![0]!.length;
    out.set(layer, {
      phy2log: Int32Array.from(r.phy2log[i]!),
      log2phy: Int32Array.from(r.log2phy[i]!.flat()),
      logcnt: Int32Array.from(r.logcnt[i]!),
      maxcnt,
    });
  });
  return { numRanks, numLogical: E, numPhysical: P, layers: out };
}

/** Local slots of `rank`: layer -> logical expert of each of its P/R slots. */
export function rankSlots(p: ExpertPlacement, rank: number): Map<number, number[]> {
  const per = p.numPhysical / p.numRanks;
  const out = new Map<number, number[]>();
  for (const [layer, lp] of p.layers) out.set(layer, Array.from(lp.phy2log.subarray(rank * per, (rank + 1) * per)));
  return out;
}

/** Logical top-k ids [T, K] -> physical slots, replica chosen round-robin by token index. */
export function toPhysical(lp: LayerPlacement, topk: Int32Array, T: number, K: number): Int32Array {
  const out = new Int32Array(T * K);
  for (let t = 0; t < T; t++) {
    for (let k = 0; k < K; k++) {
      const e = topk[t * K + k]!;
      out[t * K + k] = e < 0 ? -1 : lp.log2phy[e * lp.maxcnt + (t % lp.logcnt[e]!)]!;
    }
  }
  return out;
}
