// DeepSeek-V3's expert selection and its auxiliary-loss-free load balancing (arXiv 2412.19437 §2.1.2).
// The selection is not differentiated: it only decides which experts a token uses (gradients flow
// through the gating weights of the chosen experts, routing-weights in moe-ops.ts). It mirrors
// src/model/moe.ts `route` operation for operation (same roundings in f32, same tie rule), so a training
// forward picks exactly the experts the inference model picks:
//   choice = s + b (noaux_tc; b = e_score_correction_bias), groups ranked by the sum of their top-2
//   choices (group_limited_greedy: their max), the topk_group best groups kept, the other experts'
//   choices set to 0, then the k largest choices (ties: lower expert id).
// The bias is not a parameter either: after each optimizer step it moves by the update speed γ
// towards balance, b_i += γ · sign(mean load − load_i) (the paper's "decrease by γ if overloaded,
// increase by γ if underloaded"), from the loads of the step's whole batch.
import type { DeepseekConfig } from '../model/config.ts';
import type { FloatArray } from '../tensor/autograd/index.ts';

export class RoutingConfigError extends Error {
  override name = 'RoutingConfigError';
  readonly exitCode = 2;
}

/** The k largest of x[o .. o + n) in descending order, ties to the lower index (the kernels' topk rule). */
function topkRow(x: FloatArray, o: number, n: number, k: number, idx: Int32Array, io: number): void {
  const vals = new Float64Array(k);
  let filled = 0;
  for (let c = 0; c < n; c++) {
    const v = x[o + c]!;
    if (filled === k && !(v > vals[k - 1]!)) continue;
    let p = filled < k ? filled++ : k - 1;
    while (p > 0 && v > vals[p - 1]!) {
      vals[p] = vals[p - 1]!;
      idx[io + p] = idx[io + p - 1]!;
      p--;
    }
    vals[p] = v;
    idx[io + p] = c;
  }
}

/** Checks that the config routes the DeepSeek-V3 way (sigmoid scores) and returns (E, k). */
export function routingShape(c: DeepseekConfig): { E: number; K: number } {
  if (c.n_routed_experts === null || c.num_experts_per_tok === null) throw new RoutingConfigError('config has no routed experts');
  if (c.scoring_func !== 'sigmoid') throw new RoutingConfigError(`training supports scoring_func sigmoid (DeepSeek-V3), got ${c.scoring_func}`);
  return { E: c.n_routed_experts, K: c.num_experts_per_tok };
}

/**
 * Expert ids [T, k] for sigmoid scores [T, E] (any element type; choices are formed in the scores'
 * type, so f32 scores round as the inference route does) and the correction bias (noaux_tc).
 */
export function selectExperts(c: DeepseekConfig, scores: FloatArray, T: number, bias: FloatArray | null): Int32Array {
  const { E, K } = routingShape(c);
  const ctor = scores instanceof Float32Array ? Float32Array : Float64Array;
  const choice = new ctor(scores);
  if (c.topk_method === 'noaux_tc') {
    if (!bias) throw new RoutingConfigError('noaux_tc routing needs e_score_correction_bias');
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) choice[t * E + e] = choice[t * E + e]! + bias[e]!;
  }
  if (c.topk_method !== 'greedy' && c.n_group! > 1) {
    const G = c.n_group!, per = E / G, keepG = c.topk_group!;
    const gscore = new ctor(G);
    const keep = new Int32Array(keepG);
    const mask = new Uint8Array(G);
    for (let t = 0; t < T; t++) {
      for (let g = 0; g < G; g++) {
        const o = t * E + g * per;
        if (c.topk_method === 'group_limited_greedy') {
          let m = -Infinity;
          for (let j = 0; j < per; j++) m = Math.max(m, choice[o + j]!);
          gscore[g] = m;
        } else {
          let a = -Infinity, b = -Infinity;
          for (let j = 0; j < per; j++) {
            const v = choice[o + j]!;
            if (v > a) { b = a; a = v; } else if (v > b) b = v;
          }
          gscore[g] = a + b;
        }
      }
      topkRow(gscore, 0, G, keepG, keep, 0);
      mask.fill(0);
      for (const g of keep) mask[g] = 1;
      for (let g = 0; g < G; g++) if (!mask[g]) choice.fill(0, t * E + g * per, t * E + (g + 1) * per);
    }
  }
  const idx = new Int32Array(T * K);
  for (let t = 0; t < T; t++) topkRow(choice, t * E, E, K, idx, t * K);
  return idx;
}

/** Tokens routed to each expert: load [E] from ids [T, k]. */
export function expertLoad(idx: Int32Array, E: number): Int32Array {
  const load = new Int32Array(E);
  for (const e of idx) load[e]!++;
  return load;
}

/**
 * The auxiliary-loss-free bias step (§2.1.2): b_i += γ · sign(mean(load) − load_i), in place. `load`
 * counts the step's routed tokens per expert (over the whole batch, summed over micro-batches).
 */
export function updateRoutingBias(bias: FloatArray, load: ArrayLike<number>, gamma: number): void {
  const E = bias.length;
  if (load.length !== E) throw new RangeError(`load has ${load.length} experts, bias ${E}`);
  let mean = 0;
  for (let e = 0; e < E; e++) mean += load[e]!;
  mean /= E;
  for (let e = 0; e < E; e++) bias[e] = bias[e]! + gamma * Math.sign(mean - load[e]!);
}
