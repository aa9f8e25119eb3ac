// MTP speculative decoding for one sequence (DeepSeek-V3 §2.2 / §5.4.3; vLLM's deepseek_mtp proposer
// and rejection sampler). Each step the MTP module drafts K tokens (chained: draft k + 1 reads the
// module's own output hidden state of draft k), the main model verifies [last token, d_1..d_K] in one
// forward of 1 + K positions (logits of every position), and the accepted prefix plus one token from the
// main model's distribution (the correction, or the bonus when every draft is accepted) is emitted.
// The latent caches (the main one and the module's own) are positional: positions past the accepted
// ones hold rejected drafts' latents until the next step overwrites them, and attention never reads
// past a sequence's length, so nothing is rolled back.
// Greedy (temperature 0): a draft is accepted while it equals the main model's argmax, so the output is
// the plain greedy output token for token. Sampling: draft d ~ q, accepted with probability
// min(1, p(d)/q(d)), else the token is drawn from norm(max(0, p - q)) (Leviathan et al. 2023; vLLM's
// RejectionSampler), so every emitted token is distributed as p.
import { LatentCache } from './latent-cache.ts';
import type { DeepseekModel, ForwardBatch, ForwardOptions } from './deepseek.ts';
import { argmax, seededRandom, type GenerateOptions, type GenerateResult } from './generate.ts';
import { ModelInputError } from './deepseek.ts';

export interface SpeculativeOptions {
  method: 'mtp';
  /** Tokens the MTP module drafts per step (K >= 1; DeepSeek-V3's module is trained for 1). */
  numSpeculativeTokens: number;
  /**
   * Tests only: proposes the greedy drafts for positions pos + 1 .. pos + k instead of the MTP module
   * (to drive the accept/reject paths with known drafts).
   */
  draftOverride?: (pos: number, k: number) => number[];
  /** Tests only: the MTP drafts of each step for positions pos + 1.., with the draft logits they came from. */
  onDraft?: (pos: number, drafts: readonly number[], logits: readonly Float32Array[]) => void;
}

export interface SpecStats {
  /** Draft tokens proposed (and verified). */
  drafted: number;
  /** Draft tokens accepted. */
  accepted: number;
  /** Verify steps (main-model forwards after the prefill). */
  steps: number;
}

/** softmax(logits / temperature) in f64. */
export function probs(logits: Float32Array, temperature: number): Float64Array {
  let mx = -Infinity;
  for (const v of logits) mx = Math.max(mx, v);
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) { p[i] = Math.exp((logits[i]! - mx) / temperature); sum += p[i]!; }
  for (let i = 0; i < p.length; i++) p[i] = p[i]! / sum;
  return p;
}

/** A draw from a probability vector (or unnormalized non-negative weights summing to `total`). */
export function drawFrom(p: Float64Array, rand: () => number, total = 1): number {
  let u = rand() * total;
  let lastPos = -1;
  for (let i = 0; i < p.length; i++) {
    if (p[i]! > 0) lastPos = i;
    u -= p[i]!;
    if (u < 0) return i;
  }
  return lastPos >= 0 ? lastPos : p.length - 1;
}

/**
 * Verifies drafts d_1..d_K against the main model's rows target[0..K] (target[j] is the distribution of
 * the token after d_j, target[0] the one after the last emitted token). `draftProbs[j]` is q of d_{j+1}
 * (unused when greedy). Returns the number accepted and the tokens to emit: d_1..d_a and one more
 * (the correction at a < K, else the bonus from target[K]).
 */
export function verifyDrafts(target: readonly Float32Array[], drafts: readonly number[], draftProbs: readonly (Float64Array | null)[],
  temperature: number, rand: () => number): { accepted: number; tokens: number[] } {
  const K = drafts.length;
  if (target.length !== K + 1) throw new RangeError(`verifyDrafts: ${target.length} target rows for ${K} drafts`);
  const tokens: number[] = [];
  if (!(temperature > 0)) {
    let a = 0;
    while (a < K && drafts[a] === argmax(target[a]!)) tokens.push(drafts[a++]!);
    tokens.push(argmax(target[a]!));
    return { accepted: a, tokens };
  }
  for (let j = 0; j < K; j++) {
    const p = probs(target[j]!, temperature);
    const q = draftProbs[j]!;
    const d = drafts[j]!;
    const pd = p[d]!, qd = q[d]!;
    if (qd > 0 && rand() < Math.min(1, pd / qd)) { tokens.push(d); continue; }
    // Rejected: the token comes from the residual norm(max(0, p - q)).
    const r = new Float64Array(p.length);
    let total = 0;
    for (let i = 0; i < p.length; i++) { r[i] = Math.max(0, p[i]! - q[i]!); total += r[i]!; }
    tokens.push(total > 0 ? drawFrom(r, rand, total) : drawFrom(p, rand));
    return { accepted: j, tokens };
  }
  tokens.push(drawFrom(probs(target[K]!, temperature), rand));
  return { accepted: K, tokens };
}

/**
 * One model call the speculative loop asks for: a main-model forward (logits of every new position with
 * `allPositions`, else of the last) or an MTP module step; either answers with its logits and the final
 * hidden states of the same call ([T, H] for a forward, the module's rows for an MTP step).
 */
export type SpecCall =
  | { kind: 'forward'; batch: ForwardBatch; allPositions: boolean }
  | { kind: 'mtp'; batch: ForwardBatch; hidden: Float32Array };
export interface SpecReply {
  logits: Float32Array;
  hidden: Float32Array;
}

/** KV blocks a speculative run needs: verification writes up to K positions past the last emitted token. */
export function speculativeBlocks(promptLen: number, maxTokens: number, K: number): number {
  return Math.max(1, LatentCache.blocksFor(promptLen + Math.max(0, Math.floor(maxTokens)) + K));
}

/**
 * The speculative loop for one sequence over block table `blockTable` (speculativeBlocks long), as a
 * coroutine yielding each model call and receiving its reply: the CPU model answers synchronously
 * (generateSpeculative), the GPU model with awaits (gpu/speculative.ts). Same drafting, verification and
 * PRNG draws in the same order for both.
 */
export function* speculativeLoop(V: number, H: number, prompt: readonly number[], blockTable: Int32Array, opts: GenerateOptions,
  spec: SpeculativeOptions): Generator<SpecCall, GenerateResult & { spec: SpecStats }, SpecReply> {
  const K = spec.numSpeculativeTokens;
  const temperature = opts.temperature ?? 0;
  const greedy = !(temperature > 0);
  const maxTokens = Math.max(0, Math.floor(opts.maxTokens));
  const stats: SpecStats = { drafted: 0, accepted: 0, steps: 0 };
  const ids: number[] = [];
  const logits: Float32Array[] = [];
  if (maxTokens === 0) return { ids, logits, spec: stats };
  const rand = seededRandom(opts.seed ?? 0);

  // Prefill, keeping the main model's hidden states of every prompt position for the MTP module.
  const n = prompt.length;
  const chunk = Math.max(1, opts.prefillChunk ?? n);
  let pendHidden = new Float32Array(n * H);
  let row!: Float32Array;
  for (let s = 0; s < n; s += chunk) {
    const m = Math.min(chunk, n - s);
    const r: SpecReply = yield { kind: 'forward', batch: { tokens: Int32Array.from(prompt.slice(s, s + m)), seqs: [{ blockTable, numCached: s, numNew: m }] }, allPositions: false };
    row = r.logits;
    pendHidden.set(r.hidden.subarray(0, m * H), s * H);
  }
  const emit = (id: number, dist: Float32Array): boolean => {
    ids.push(id);
    logits.push(dist);
    return ids.length >= maxTokens || (opts.stopIds?.includes(id) ?? false);
  };
  let last = greedy ? argmax(row) : drawFrom(probs(row, temperature), rand);
  if (emit(last, row)) return { ids, logits, spec: stats };
  // MTP inputs not yet run through the module: positions [pendStart, pos), their main hidden states and
  // the tokens that follow them.
  let pos = n; // main cache holds positions [0, pos); `last` sits at position pos
  let pendStart = 0;
  let pendNext = Int32Array.from([...prompt.slice(1), last]);
  for (;;) {
    const k = Math.min(K, maxTokens - ids.length - 1);
    const drafts: number[] = [];
    const q: (Float64Array | null)[] = [];
    const draftLogits: Float32Array[] = [];
    if (k > 0 && spec.draftOverride) {
      drafts.push(...spec.draftOverride(pos, k).slice(0, k));
      q.push(...drafts.map(() => null));
    } else if (k > 0) {
      let out: SpecReply = yield { kind: 'mtp', batch: { tokens: pendNext, seqs: [{ blockTable, numCached: pendStart, numNew: pendNext.length }] }, hidden: pendHidden };
      for (let i = 0; ; i++) {
        const qi = greedy ? null : probs(out.logits, temperature);
        const d = greedy ? argmax(out.logits) : drawFrom(qi!, rand);
        drafts.push(d);
        q.push(qi);
        draftLogits.push(out.logits);
        if (i + 1 >= k) break;
        // Chain: the module at position pos + i reads draft d and its own output hidden state.
        out = yield { kind: 'mtp', batch: { tokens: Int32Array.of(d), seqs: [{ blockTable, numCached: pos + i, numNew: 1 }] }, hidden: out.hidden };
      }
    }
    if (draftLogits.length > 0) spec.onDraft?.(pos, drafts, draftLogits);
    // Verify [last, d_1..d_k] at positions pos..pos+k in one forward.
    const T = 1 + drafts.length;
    const verified: SpecReply = yield { kind: 'forward', batch: { tokens: Int32Array.from([last, ...drafts]), seqs: [{ blockTable, numCached: pos, numNew: T }] }, allPositions: true };
    const all = verified.logits;
    const rows = Array.from({ length: T }, (_, j) => all.subarray(j * V, (j + 1) * V));
    const v = verifyDrafts(rows, drafts, q, temperature, rand);
    stats.steps++;
    stats.drafted += drafts.length;
    stats.accepted += v.accepted;
    for (let j = 0; j < v.tokens.length; j++) {
      if (emit(v.tokens[j]!, rows[j]!.slice())) return { ids, logits, spec: stats };
    }
    // Positions pos..pos+a now hold [last, d_1..d_a]; the module next reads them with the tokens after.
    const a = v.accepted;
    pendStart = pos;
    pendHidden = verified.hidden.slice(0, (a + 1) * H);
    pendNext = Int32Array.from(v.tokens);
    pos += a + 1;
    last = v.tokens[a]!;
  }
}

/** Checks shared by the CPU and GPU speculative loops: a prompt, K >= 1, an MTP module (unless drafts are overridden). */
export function checkSpeculative(prompt: readonly number[], spec: SpeculativeOptions, mtpModules: number): void {
  if (prompt.length === 0) throw new RangeError('generate: empty prompt');
  const K = spec.numSpeculativeTokens;
  if (!Number.isSafeInteger(K) || K < 1) throw new RangeError(`numSpeculativeTokens must be an integer >= 1, got ${K}`);
  if (!spec.draftOverride && mtpModules === 0) {
    throw new ModelInputError('--speculative mtp needs an MTP module (num_nextn_predict_layers >= 1 and its model.layers.<num_hidden_layers>.* tensors)');
  }
}

/** generate() with MTP speculation: same result shape, plus the draft counts. */
export function generateSpeculative(model: DeepseekModel, prompt: readonly number[], opts: GenerateOptions,
  spec: SpeculativeOptions): GenerateResult & { spec: SpecStats } {
  checkSpeculative(prompt, spec, model.mtpModules);
  const c = model.config;
  const H = c.hidden_size;
  const numBlocks = speculativeBlocks(prompt.length, opts.maxTokens, spec.numSpeculativeTokens);
  const cache = model.createCache(numBlocks);
  const mtpCache = spec.draftOverride ? null : model.createMtpCache(numBlocks);
  const fo: ForwardOptions = { attn: opts.attn, tracer: opts.tracer };
  const loop = speculativeLoop(c.vocab_size, H, prompt, Int32Array.from({ length: numBlocks }, (_, i) => i), opts, spec);
  for (let r = loop.next(); ; ) {
    if (r.done) return r.value;
    const call = r.value;
    if (call.kind === 'mtp') {
      r = loop.next(model.mtpForward(call.batch, call.hidden, mtpCache!, fo));
    } else {
      let hidden!: Float32Array;
      const T = call.batch.tokens.length;
      const logits = model.forward(call.batch, cache, { ...fo, allPositions: call.allPositions, onHidden: (h) => { hidden = h.slice(0, T * H); } });
      r = loop.next({ logits, hidden });
    }
  }
}
