// Token sampling for one sequence's logits row, in vLLM's order (vllm/v1/sample/sampler.py):
// logit bias → penalties (repetition over prompt+output, frequency and presence over output) → greedy if
// temperature is 0 → temperature → top-k → top-p → min-p → draw from the softmax with the request's
// own PRNG. Logprobs are the log-softmax of the raw model logits (vLLM's default "raw_logprobs").
// Guided decoding's token bitmask sets every token outside it to -inf after the penalties, before
// greedy/temperature and the filters.
import type { SamplingParams } from './contracts.ts';
import type { Rng } from './rng.ts';

export interface SampleResult {
  token: number;
  /** Present when params.logprobs !== null: the sampled token's logprob and the top-k alternatives. */
  logprob?: number;
  top?: { tokenId: number; logprob: number }[];
}

/** Token id → count in the sequence's output so far (for frequency/presence penalties). */
export type Counts = Map<number, number>;

export function logSoftmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(row.length);
  for (let i = 0; i < row.length; i++) out[i] = row[i]! - lse;
  return out;
}

/** Index of the maximum (ties to the lower index; NaN never wins). */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < row.length; i++) {
    const v = row[i]!;
    if (v > bv) { bv = v; best = i; }
  }
  return best;
}

/** Indices of the k largest values, descending, ties to the lower index. */
export function topIndices(row: ArrayLike<number>, k: number): number[] {
  const idx = Array.from({ length: row.length }, (_, i) => i);
  idx.sort((a, b) => (row[b]! - row[a]!) || (a - b));
  return idx.slice(0, k);
}

/**
 * Samples one token. `logits` is not modified. `promptSeen` holds the prompt's token ids (for the
 * repetition penalty), `outputCounts` the output's counts. `mask` (guided decoding) allows only its tokens; absent, every token.
 */
export function sample(
  logits: Float32Array,
  p: SamplingParams,
  rng: Rng,
  promptSeen: ReadonlySet<number>,
  outputCounts: Counts,
  mask?: Int32Array,
): SampleResult {
  const x = processedLogits(logits, p, promptSeen, outputCounts, mask);
  const token = p.temperature === 0 ? argmax(x) : drawFiltered(x, p, rng);
  return withLogprobs(logits, p, token);
}

/**
 * Verifies one draft token (speculative decoding) against this row, as vLLM's rejection sampler does for a
 * drafter that proposes its argmax (q is one-hot at the draft): greedy accepts the draft iff it is the
 * argmax of the processed logits (and emits that argmax either way); sampling accepts it with probability
 * p(draft) under the request's processed distribution p (penalties, mask, temperature, top-k/top-p/min-p)
 * and otherwise draws from p with the draft removed, renormalized. Either way the emitted token is
 * distributed as p: P(t) = p(d)[t = d] + (1 - p(d)) p(t)[t != d] / (1 - p(d)) = p(t).
 */
export function sampleWithDraft(
  logits: Float32Array,
  p: SamplingParams,
  rng: Rng,
  promptSeen: ReadonlySet<number>,
  outputCounts: Counts,
  mask: Int32Array | undefined,
  draft: number,
): SampleResult & { accepted: boolean } {
  const x = processedLogits(logits, p, promptSeen, outputCounts, mask);
  let token: number;
  if (p.temperature === 0) {
    token = argmax(x);
  } else {
    const t = targetWeights(x, p);
    const at = t.ids ? t.ids.indexOf(draft) : draft < t.w.length ? draft : -1;
    const pd = at >= 0 ? t.w[at]! / t.total : 0;
    if (pd > 0 && rng.next() < pd) {
      token = draft;
    } else {
      // The residual: p without the draft, renormalized.
      if (at >= 0) { t.w[at] = 0; t.total = t.w.reduce((a, b) => a + b, 0); }
      token = t.total > 0 ? drawWeighted(t, rng) : draft;
    }
  }
  return { ...withLogprobs(logits, p, token), accepted: token === draft };
}

/** Logits after logit bias, penalties and the guided mask (a copy when anything applies; `logits` is never modified). */
function processedLogits(logits: Float32Array, p: SamplingParams, promptSeen: ReadonlySet<number>, outputCounts: Counts, mask?: Int32Array): Float32Array {
  const V = logits.length;
  let x: Float32Array = logits;
  if (p.logitBias && p.logitBias.length > 0) {
    x = logits.slice();
    for (const [t, b] of p.logitBias) if (t < V) x[t] = x[t]! + b;
  }
  const penalize = p.repetitionPenalty !== 1 || p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
  if (penalize) {
    if (x === logits) x = logits.slice();
    if (p.repetitionPenalty !== 1) {
      const r = p.repetitionPenalty;
      const apply = (t: number) => { if (t < V) x[t] = x[t]! > 0 ? x[t]! / r : x[t]! * r; };
      const seen = new Set<number>(promptSeen);
      for (const t of outputCounts.keys()) seen.add(t);
      for (const t of seen) apply(t);
    }
    for (const [t, c] of outputCounts) {
      if (t >= V) continue;
      x[t] = x[t]! - p.frequencyPenalty * c - (c > 0 ? p.presencePenalty : 0);
    }
  }

  if (mask) {
    if (x === logits) x = logits.slice();
    applyMask(x, mask);
  }
  return x;
}

/** The sampled token's logprob and the top alternatives (raw logits), when the request asks for them. */
function withLogprobs(logits: Float32Array, p: SamplingParams, token: number): SampleResult {
  if (p.logprobs === null) return { token };
  const lp = logSoftmax(logits);
  const top = p.logprobs > 0 ? topIndices(lp, p.logprobs).map((t) => ({ tokenId: t, logprob: lp[t]! })) : [];
  return { token, logprob: lp[token]!, top };
}

/** Sets x[t] = -inf for every token t whose bit is clear in `mask` (bit t & 31 of word t >> 5). */
export function applyMask(x: Float32Array, mask: Int32Array): void {
  const V = x.length;
  for (let w = 0, base = 0; base < V; w++, base += 32) {
    const bits = w < mask.length ? mask[w]! : 0;
    if (bits === -1) continue;
    const end = Math.min(base + 32, V);
    if (bits === 0) { x.fill(-Infinity, base, end); continue; }
    // Only the clear bits (each step drops the lowest one).
    for (let z = ~bits; z !== 0; z &= z - 1) {
      const t = base + 31 - Math.clz32(z & -z);
      if (t < end) x[t] = -Infinity;
    }
  }
}

/**
 * The distribution a request samples from, as weights over candidate ids (null: every id, in id order):
 * softmax(x / temperature) restricted by top-k, top-p and min-p (candidates sorted by logit, descending,
 * ties to the lower id, so filtering is deterministic). `total` is the sum of `w`.
 */
export function targetWeights(x: Float32Array, p: SamplingParams): { ids: Int32Array | null; w: Float64Array; total: number } {
  const V = x.length;
  const inv = 1 / p.temperature;
  if ((p.topK <= 0 || p.topK >= V) && p.topP >= 1 && p.minP <= 0) {
    // Plain temperature sampling: no ordering needed.
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (x[i]! > max) max = x[i]!;
    const w = new Float64Array(V);
    let total = 0;
    for (let i = 0; i < V; i++) total += w[i] = Math.exp((x[i]! - max) * inv);
    return { ids: null, w, total };
  }
  let cand: number[];
  if (p.topK > 0 && p.topK < V) cand = topIndices(x, p.topK);
  else {
    cand = Array.from({ length: V }, (_, i) => i);
    cand.sort((a, b) => (x[b]! - x[a]!) || (a - b));
  }
  const max = x[cand[0]!]! * inv;
  let probs = cand.map((t) => Math.exp(x[t]! * inv - max));
  const sum = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((v) => v / sum);

  let keep = probs.length;
  if (p.topP < 1) {
    let acc = 0;
    for (let i = 0; i < probs.length; i++) {
      acc += probs[i]!;
      if (acc >= p.topP) { keep = i + 1; break; }
    }
  }
  if (p.minP > 0) {
    const thr = p.minP * probs[0]!;
    let k = 0;
    while (k < keep && probs[k]! >= thr) k++;
    keep = Math.max(1, k);
  }
  const w = Float64Array.from(probs.slice(0, keep));
  return { ids: Int32Array.from(cand.slice(0, keep)), w, total: probs.slice(0, keep).reduce((a, b) => a + b, 0) };
}

/** One draw from targetWeights' weights with the request's PRNG; the last positive weight if rounding runs out. */
function drawWeighted(t: { ids: Int32Array | null; w: Float64Array; total: number }, rng: Rng): number {
  const { ids, w } = t;
  let u = rng.next() * t.total;
  let lastPos = 0;
  for (let i = 0; i < w.length; i++) {
    if (w[i]! <= 0) continue;
    lastPos = i;
    u -= w[i]!;
    if (u < 0) return ids ? ids[i]! : i;
  }
  return ids ? ids[lastPos]! : lastPos;
}

function drawFiltered(x: Float32Array, p: SamplingParams, rng: Rng): number {
  return drawWeighted(targetWeights(x, p), rng);
}
