// Differentiable pieces of DeepSeekMoE (arXiv 2412.19437 §2.1.2): the gating weights of the chosen
// experts, the weighted combine of the experts' outputs, and the complementary sequence-wise balance
// loss. Shapes: T tokens, E routed experts, k experts per token, R = T·k routed rows in the grouped
// (by expert) order of model/moe.ts planByExpert: row r holds assignment order[r] = t·k + j.
import { AutogradError, makeResult, type Tensor } from '../tensor/autograd/index.ts';

/**
 * Gating weights g [T, k] of the chosen experts idx [T, k] from scores s [T, E]:
 * g_j = s_{idx_j} · c / (Σ_j s_{idx_j} + 1e-20) when normalized (norm_topk_prob and k > 1), else s_{idx_j} · c,
 * with c = routed_scaling_factor — the inference route's formula and roundings. The gradient reaches
 * only the chosen scores (the selection itself is a constant).
 */
export function routingWeights(scores: Tensor, idx: Int32Array, K: number, normalize: boolean, factor: number): Tensor {
  const E = scores.shape[scores.shape.length - 1]!;
  const T = scores.size / E;
  if (idx.length !== T * K) throw new AutogradError(`idx has ${idx.length} entries, want ${T}x${K}`, 'routingWeights');
  const s = scores.data;
  const y = new (scores.ctor)(T * K);
  const sums = new Float64Array(T);
  const norm = normalize && K > 1;
  for (let t = 0; t < T; t++) {
    let sum = 0;
    for (let j = 0; j < K; j++) sum += s[t * E + idx[t * K + j]!]!;
    sums[t] = sum + 1e-20;
    const mul = (norm ? 1 / sums[t]! : 1) * factor;
    for (let j = 0; j < K; j++) y[t * K + j] = s[t * E + idx[t * K + j]!]! * mul;
  }
  return makeResult(y, [T, K], {
    name: 'routingWeights',
    inputs: [scores],
    backward(dy) {
      const ds = new (scores.ctor)(scores.size);
      for (let t = 0; t < T; t++) {
        if (!norm) {
          for (let j = 0; j < K; j++) ds[t * E + idx[t * K + j]!]! += dy[t * K + j]! * factor;
          continue;
        }
        // g_j = c·s_j/S: dg_j/ds_i = c·(δij/S − s_j/S²).
        const S = sums[t]!;
        let dot = 0;
        for (let j = 0; j < K; j++) dot += dy[t * K + j]! * s[t * E + idx[t * K + j]!]!;
        for (let j = 0; j < K; j++) ds[t * E + idx[t * K + j]!]! += factor * (dy[t * K + j]! / S - dot / (S * S));
      }
      return [ds];
    },
  });
}

/**
 * out [T, H] = Σ_j g[t, j] · y[row of (t, j)] for the experts' outputs y [R, H] in grouped order,
 * added in grouped-row order (as model/moe.ts scatterWeighted, so f32 sums round the same).
 */
export function combineExperts(y: Tensor, gates: Tensor, order: Int32Array, T: number, K: number): Tensor {
  const H = y.shape[y.shape.length - 1]!;
  const R = order.length;
  if (y.size !== R * H || gates.size !== T * K || R !== T * K) throw new AutogradError(`y ${y.size}, gates ${gates.size} for ${T}x${K} rows of ${H}`, 'combineExperts');
  const out = new (y.ctor)(T * H);
  for (let r = 0; r < R; r++) {
    const a = order[r]!;
    const o = ((a / K) | 0) * H;
    const w = gates.data[a]!;
    for (let i = 0; i < H; i++) out[o + i] = out[o + i]! + w * y.data[r * H + i]!;
  }
  return makeResult(out, [T, H], {
    name: 'combineExperts',
    inputs: [y, gates],
    backward(dout) {
      const dy = new (y.ctor)(y.size), dg = new (gates.ctor)(gates.size);
      for (let r = 0; r < R; r++) {
        const a = order[r]!;
        const o = ((a / K) | 0) * H;
        const w = gates.data[a]!;
        let dot = 0;
        for (let i = 0; i < H; i++) {
          dy[r * H + i] = w * dout[o + i]!;
          dot += dout[o + i]! * y.data[r * H + i]!;
        }
        dg[a] = dot;
      }
      return [dy, dg];
    },
  });
}

/**
 * The complementary sequence-wise balance loss (§2.1.2, eqs. 17-20), per sequence of T_s tokens:
 *   L = α Σ_i f_i P_i,  f_i = E/(k·T_s) Σ_t 1[i ∈ chosen(t)],  P_i = 1/T_s Σ_t s_{i,t} / Σ_j s_{j,t},
 * averaged over the sequences. f is a count (no gradient); the gradient flows through P into the
 * sigmoid scores s [T, E].
 */
export function seqBalanceLoss(scores: Tensor, idx: Int32Array, K: number, seqLens: readonly number[], alpha: number): Tensor {
  const E = scores.shape[scores.shape.length - 1]!;
  const T = scores.size / E;
  if (seqLens.reduce((a, b) => a + b, 0) !== T) throw new AutogradError(`sequences cover ${seqLens.reduce((a, b) => a + b, 0)} of ${T} tokens`, 'seqBalanceLoss');
  const s = scores.data;
  const nSeq = seqLens.length;
  const f = new Float64Array(nSeq * E);
  const z = new Float64Array(T); // Σ_j s_{j,t}
  let loss = 0;
  let t0 = 0;
  seqLens.forEach((n, q) => {
    const P = new Float64Array(E);
    for (let t = t0; t < t0 + n; t++) {
      for (let j = 0; j < K; j++) f[q * E + idx[t * K + j]!]! += E / (K * n);
      let sum = 0;
      for (let e = 0; e < E; e++) sum += s[t * E + e]!;
      z[t] = sum;
      for (let e = 0; e < E; e++) P[e]! += s[t * E + e]! / sum / n;
    }
    for (let e = 0; e < E; e++) loss += alpha * f[q * E + e]! * P[e]!;
    t0 += n;
  });
  const out = new (scores.ctor)(1);
  out[0] = loss / nSeq;
  return makeResult(out, [], {
    name: 'seqBalanceLoss',
    inputs: [scores],
    backward(dl) {
      const ds = new (scores.ctor)(scores.size);
      let t0 = 0;
      seqLens.forEach((n, q) => {
        // L_q = Σ_i a_i s_{i,t}/z_t summed over t with a_i = α f_i / n:  dL/ds_{i,t} = (a_i − Σ_j a_j s_{j,t}/z_t) / z_t.
        const c = dl[0]! / nSeq;
        for (let t = t0; t < t0 + n; t++) {
          let dot = 0;
          for (let e = 0; e < E; e++) dot += alpha * f[q * E + e]! / n * s[t * E + e]!;
          dot /= z[t]!;
          for (let e = 0; e < E; e++) ds[t * E + e] = c * (alpha * f[q * E + e]! / n - dot) / z[t]!;
        }
        t0 += n;
      });
      return [ds];
    },
  });
}
