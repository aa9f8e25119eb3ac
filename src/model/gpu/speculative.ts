// MTP speculative decoding on the GPU-resident model: mtp.ts generateSpeculative's loop (same drafting,
// verification and acceptance: verifyDrafts, probs, drawFrom; the same seeded PRNG draws in the same
// order), with the main forward and the MTP module awaited on the GPU. Each step: the module drafts K
// tokens (chained on its own output hidden state), the model verifies [last, d_1..d_K] in one forward of
// 1 + K positions reading back their logits and hidden states, the accepted drafts plus one token are
// emitted. Greedy output is token for token the plain greedy output.
import { LatentCache } from '../latent-cache.ts';
import { argmax, seededRandom, type GenerateOptions, type GenerateResult } from '../generate.ts';
import { ModelInputError } from '../deepseek.ts';
import { drawFrom, probs, verifyDrafts, type SpecStats, type SpeculativeOptions } from '../mtp.ts';
import type { GpuDeepseekModel } from './forward.ts';

export async function generateSpeculativeGpu(model: GpuDeepseekModel, prompt: readonly number[], opts: Omit<GenerateOptions, 'speculative' | 'tracer'>,
  spec: Pick<SpeculativeOptions, 'numSpeculativeTokens'>): Promise<GenerateResult & { spec: SpecStats }> {
  if (prompt.length === 0) throw new RangeError('generate: empty prompt');
  const K = spec.numSpeculativeTokens;
  if (!Number.isSafeInteger(K) || K < 1) throw new RangeError(`numSpeculativeTokens must be an integer >= 1, got ${K}`);
  if (model.mtpModules === 0) {
    throw new ModelInputError('--speculative mtp needs an MTP module (num_nextn_predict_layers >= 1 and its model.layers.<num_hidden_layers>.* tensors)');
  }
  const c = model.config;
  const H = c.hidden_size, V = c.vocab_size;
  const temperature = opts.temperature ?? 0;
  const greedy = !(temperature > 0);
  const maxTokens = Math.max(0, Math.floor(opts.maxTokens));
  const stats: SpecStats = { drafted: 0, accepted: 0, steps: 0 };
  const ids: number[] = [];
  const logits: Float32Array[] = [];
  if (maxTokens === 0) return { ids, logits, spec: stats };
  // Verification writes up to K positions past the last emitted token.
  const numBlocks = Math.max(1, LatentCache.blocksFor(prompt.length + maxTokens + K));
  const cache = model.createCache(numBlocks);
  const mtpCache = model.createMtpCache(numBlocks);
  try {
    const blockTable = Int32Array.from({ length: numBlocks }, (_, i) => i);
    const rand = seededRandom(opts.seed ?? 0);
    // Prefill, keeping the main model's hidden states of every prompt position for the MTP module.
    const n = prompt.length;
    const chunk = Math.max(1, opts.prefillChunk ?? n);
    let pendHidden = new Float32Array(n * H);
    let row!: Float32Array;
    for (let s = 0; s < n; s += chunk) {
      const m = Math.min(chunk, n - s);
      row = await model.forward({ tokens: Int32Array.from(prompt.slice(s, s + m)), seqs: [{ blockTable, numCached: s, numNew: m }] }, cache,
        { onHidden: (h) => pendHidden.set(h.subarray(0, m * H), s * H) });
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
    let pos = n; // the main cache holds positions [0, pos); `last` sits at position pos
    let pendStart = 0;
    let pendNext = Int32Array.from([...prompt.slice(1), last]);
    for (;;) {
      const k = Math.min(K, maxTokens - ids.length - 1);
      const drafts: number[] = [];
      const q: (Float64Array | null)[] = [];
      if (k > 0) {
        let out = await model.mtpForward({ tokens: pendNext, seqs: [{ blockTable, numCached: pendStart, numNew: pendNext.length }] }, pendHidden, mtpCache);
        for (let i = 0; ; i++) {
          const qi = greedy ? null : probs(out.logits, temperature);
          const d = greedy ? argmax(out.logits) : drawFrom(qi!, rand);
          drafts.push(d);
          q.push(qi);
          if (i + 1 >= k) break;
          // Chain: the module at position pos + i reads draft d and its own output hidden state.
          out = await model.mtpForward({ tokens: Int32Array.of(d), seqs: [{ blockTable, numCached: pos + i, numNew: 1 }] }, out.hidden, mtpCache);
        }
      }
      // Verify [last, d_1..d_k] at positions pos..pos+k in one forward.
      const T = 1 + drafts.length;
      let vh!: Float32Array;
      const all = await model.forward({ tokens: Int32Array.from([last, ...drafts]), seqs: [{ blockTable, numCached: pos, numNew: T }] }, cache,
        { allPositions: true, onHidden: (h) => { vh = h; } });
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
      pendHidden = vh.slice(0, (a + 1) * H);
      pendNext = Int32Array.from(v.tokens);
      pos += a + 1;
      last = v.tokens[a]!;
    }
  } finally {
    cache.destroy();
    mtpCache.destroy();
  }
}
