// DeepSeekMoE: the router (all three topk_methods, softmax or sigmoid scores) and the routed-expert
// computation behind a pluggable executor (the default runs experts locally; an expert-parallel
// executor can run them on other ranks).
// References: HF modeling_deepseek.py `MoEGate` (DeepSeek-V2: greedy / group_limited_greedy with softmax;
// DeepSeek-V3: noaux_tc with sigmoid + e_score_correction_bias) and deepseek-ai/DeepSeek-V3
// inference/model.py `Gate` / `MoE`.
import { groupSlice, type GroupSegments, type Kernels } from '../kernels/api.ts';
import type { DeepseekConfig } from './config.ts';
import type { ExpertWeights, MlpWeights, MoeWeights } from './weight-map.ts';
import { Workspace } from './workspace.ts';

export interface Routing {
  /** [T, k] expert ids, in descending order of the choice score (biased for noaux_tc). */
  experts: Int32Array;
  /** [T, k] final weights (after normalisation and routed_scaling_factor). */
  weights: Float32Array;
}

/**
 * Chooses k experts per token from router logits [T, E].
 * - scores: softmax over experts or sigmoid per expert (f32);
 * - choice = scores + e_score_correction_bias (noaux_tc) or scores;
 * - group-limited methods keep topk_group groups ranked by max score (group_limited_greedy) or by the
 *   sum of the top-2 biased scores (noaux_tc); other experts' choice scores become 0, as both HF
 *   (masked_fill 0.0) and the reference (multiply by the group mask) do;
 * - weights = unbiased scores of the chosen experts; normalised to sum 1 when norm_topk_prob and k > 1
 *   (HF semantics; DeepSeek's reference instead normalises iff sigmoid — the configs of the family
 *   agree: sigmoid ⇔ norm_topk_prob); then × routed_scaling_factor. One HF V2 quirk is kept: for
 *   model_type deepseek_v2, normalised weights are NOT scaled (DeepseekV2 MoEGate's `else` branch).
 */
export function route(k: Kernels, c: DeepseekConfig, logits: Float32Array, T: number, bias: Float32Array | undefined): Routing {
  const E = c.n_routed_experts!;
  const K = c.num_experts_per_tok!;
  const scores = new Float32Array(logits);
  if (c.scoring_func === 'softmax') k.softmax(scores, T, E);
  else for (let i = 0; i < scores.length; i++) scores[i] = 1 / (1 + Math.exp(-scores[i]!));
  const choice = new Float32Array(scores);
  if (c.topk_method === 'noaux_tc') {
    if (!bias) throw new Error('noaux_tc routing needs e_score_correction_bias');
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) choice[t * E + e] = choice[t * E + e]! + bias[e]!;
  }
  if (c.topk_method !== 'greedy' && c.n_group! > 1) {
    const G = c.n_group!;
    const per = E / G;
    const gscore = new Float32Array(T * G);
    for (let t = 0; t < T; t++) {
      for (let g = 0; g < G; g++) {
        const o = t * E + g * per;
        if (c.topk_method === 'group_limited_greedy') {
          let m = -Infinity;
          for (let j = 0; j < per; j++) m = Math.max(m, choice[o + j]!);
          gscore[t * G + g] = m;
        } else {
          let a = -Infinity, b = -Infinity; // top-2
          for (let j = 0; j < per; j++) {
            const v = choice[o + j]!;
            if (v > a) { b = a; a = v; } else if (v > b) b = v;
          }
          gscore[t * G + g] = a + b;
        }
      }
    }
    const keep = k.topk(gscore, T, G, c.topk_group!);
    const mask = new Uint8Array(G);
    for (let t = 0; t < T; t++) {
      mask.fill(0);
      for (let j = 0; j < c.topk_group!; j++) mask[keep.indices[t * c.topk_group! + j]!] = 1;
      for (let g = 0; g < G; g++) if (!mask[g]) choice.fill(0, t * E + g * per, t * E + (g + 1) * per);
    }
  }
  const top = k.topk(choice, T, E, K);
  const weights = new Float32Array(T * K);
  const v2 = c.model_type === 'deepseek_v2';
  for (let t = 0; t < T; t++) {
    let sum = 0;
    for (let j = 0; j < K; j++) {
      const w = scores[t * E + top.indices[t * K + j]!]!;
      weights[t * K + j] = w;
      sum += w;
    }
    const norm = K > 1 && c.norm_topk_prob;
    const mul = (norm ? 1 / (sum + 1e-20) : 1) * (norm && v2 ? 1 : c.routed_scaling_factor);
    for (let j = 0; j < K; j++) weights[t * K + j] = weights[t * K + j]! * mul;
  }
  return { experts: top.indices, weights };
}

/**
 * Runs the routed experts for a layer: returns [T, H] = Σ_j weights[t, j] · expert_{experts[t, j]}(x[t]).
 * The result may be a buffer the executor reuses on its next run (localMoeExecutor's is): use it first.
 */
export interface MoeExecutor {
  run(layer: number, x: Float32Array, numTokens: number, topkIdx: Int32Array, topkWeights: Float32Array): Float32Array;
}

/** What an executor factory sees of the model. */
export interface MoeContext {
  config: DeepseekConfig;
  kernels: Kernels;
  /** MoE weights of a decoder layer (undefined for dense layers). */
  moe(layer: number): MoeWeights | undefined;
}

export type MoeExecutorFactory = (ctx: MoeContext) => MoeExecutor;

/**
 * y[M, H] = down(silu(gate x) * up x). With `ws`, the intermediates and y are its buffers (backend
 * memory: written in place, nothing staged or copied out; y valid until the workspace's next `mlp*` use).
 */
export function mlp(k: Kernels, w: MlpWeights, x: Float32Array, m: number, ws?: Workspace): Float32Array {
  const buf = (name: string, n: number) => ws?.get(name, n);
  const g = k.matmul(x, m, w.gate, buf('mlpGate', m * w.gate.rows));
  const u = k.matmul(x, m, w.up, buf('mlpUp', m * w.up.rows));
  return k.matmul(k.siluMul(g, u, g), m, w.down, buf('mlpDown', m * w.down.rows));
}

/**
 * The (token, slot) assignments of a batch grouped by expert: the contiguous grouped layout without
 * padding (DeepGEMM's psum form). Row r of the grouped activations is assignment order[r] (= t·k + j);
 * expert e owns rows [segments.start[e], segments.start[e] + segments.count[e]).
 */
export interface ExpertPlan {
  rows: number;
  order: Int32Array;
  segments: GroupSegments;
}

/** Counting sort of the T·k assignments idx [T, k] by expert (stable: token order within an expert). */
export function planByExpert(idx: Int32Array, T: number, K: number, E: number): ExpertPlan {
  const R = T * K;
  const start = new Int32Array(E);
  const count = new Int32Array(E);
  for (let i = 0; i < R; i++) {
    const e = idx[i]!;
    if (!(e >= 0 && e < E)) throw new RangeError(`expert id ${e} outside [0, ${E})`);
    count[e]!++;
  }
  for (let e = 1; e < E; e++) start[e] = start[e - 1]! + count[e - 1]!;
  const fill = start.slice();
  const order = new Int32Array(R);
  for (let i = 0; i < R; i++) order[fill[idx[i]!]!++] = i;
  return { rows: R, order, segments: { start, count } };
}

/** Grouped activations [rows, H]: row r = x[token of assignment order[r]]. */
export function gatherRows(plan: ExpertPlan, x: Float32Array, H: number, K: number): Float32Array {
  const xs = new Float32Array(plan.rows * H);
  for (let r = 0; r < plan.rows; r++) {
    const t = (plan.order[r]! / K) | 0;
    xs.set(x.subarray(t * H, (t + 1) * H), r * H);
  }
  return xs;
}

/** out[T, H] = Σ over assignments of weight · expert output row (added in grouped-row order). */
export function scatterWeighted(plan: ExpertPlan, y: Float32Array, wts: Float32Array, T: number, H: number, K: number): Float32Array {
  const out = new Float32Array(T * H);
  for (let r = 0; r < plan.rows; r++) {
    const a = plan.order[r]!;
    const o = ((a / K) | 0) * H;
    const wt = wts[a]!;
    for (let j = 0; j < H; j++) out[o + j] = out[o + j]! + wt * y[r * H + j]!;
  }
  return out;
}

/** The stacked routed experts of an MoE layer, for the executors that run them in this model. */
function loadedExperts(ctx: MoeContext, layer: number): ExpertWeights {
  const w = ctx.moe(layer);
  if (!w) throw new Error(`layer ${layer} is not an MoE layer`);
  if (!w.experts) throw new Error(`layer ${layer}: routed experts not loaded (routedExperts: false) but run locally`);
  return w.experts;
}

/** Per grouped row r: the token it reads (order[r] / k) and its routing weight (wts[order[r]]). */
export function expertRows(plan: ExpertPlan, wts: Float32Array, K: number): { token: Int32Array; weight: Float32Array } {
  const token = new Int32Array(plan.rows), weight = new Float32Array(plan.rows);
  for (let r = 0; r < plan.rows; r++) {
    const a = plan.order[r]!;
    token[r] = (a / K) | 0;
    weight[r] = wts[a]!;
  }
  return { token, weight };
}

/**
 * The default executor: groups the (token, slot) pairs by expert and runs each projection of ALL
 * experts as one grouped product over the stacked weights (gate, up, siluMul, down: three grouped
 * kernel calls per layer whatever the number of active experts), then adds the weighted outputs into
 * [T, H]. The gather and the combine are kernel ops too (gatherRows, scatterAddRows: on the wasm pool,
 * in place), and every intermediate lives in a workspace in backend memory, so nothing is staged or
 * copied out between the five calls. Returns a workspace buffer: valid until this executor's next run.
 */
export const localMoeExecutor: MoeExecutorFactory = (ctx) => {
  const ws = new Workspace(ctx.kernels);
  return {
    run(layer, x, T, idx, wts) {
      const ex = loadedExperts(ctx, layer);
      const k = ctx.kernels;
      const H = ctx.config.hidden_size;
      const K = ctx.config.num_experts_per_tok!;
      const I = ex.gate.rows;
      const plan = planByExpert(idx, T, K, ex.gate.groups);
      const R = plan.rows;
      const { token, weight } = expertRows(plan, wts, K);
      const xs = k.gatherRows(x, H, token, ws.get('xs', R * H));
      const g = k.groupedMatmul(xs, R, ex.gate, plan.segments, ws.get('gate', R * I));
      const u = k.groupedMatmul(xs, R, ex.up, plan.segments, ws.get('up', R * I));
      const y = k.groupedMatmul(k.siluMul(g, u, g), R, ex.down, plan.segments, ws.get('down', R * H));
      return k.scatterAddRows(y, H, token, weight, ws.get('out', T * H).fill(0));
    },
  };
};

/**
 * The reference executor (the oracle the grouped path is tested against): one expert at a time, each
 * expert's rows through three plain matmuls on its slice of the stacked weights.
 */
export const perExpertMoeExecutor: MoeExecutorFactory = (ctx) => ({
  run(layer, x, T, idx, wts) {
    const ex = loadedExperts(ctx, layer);
    const H = ctx.config.hidden_size;
    const K = ctx.config.num_experts_per_tok!;
    const E = ex.gate.groups;
    const plan = planByExpert(idx, T, K, E);
    const xs = gatherRows(plan, x, H, K);
    const y = new Float32Array(plan.rows * H);
    for (let e = 0; e < E; e++) {
      const r0 = plan.segments.start[e]!, n = plan.segments.count[e]!;
      if (n === 0) continue;
      const ye = mlp(ctx.kernels, { gate: groupSlice(ex.gate, e), up: groupSlice(ex.up, e), down: groupSlice(ex.down, e) }, xs.subarray(r0 * H, (r0 + n) * H), n);
      y.set(ye, r0 * H);
    }
    return scatterWeighted(plan, y, wts, T, H, K);
  },
});
