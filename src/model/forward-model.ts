// What the CLI's single-sequence loops need of a model, whichever device runs its forward: the CPU
// DeepseekModel (synchronous forward over a host LatentCache) or the GPU-resident GpuDeepseekModel
// (src/model/gpu/forward.ts: asynchronous forward over a GPU cache). `generateAsync` is generate.ts's
// plain loop for either: on the CPU model each forward is still one synchronous call (one await of a
// plain value per token, nothing per op).
import type { DeepseekConfig } from './config.ts';
import type { ForwardBatch } from './deepseek.ts';
import { LatentCache } from './latent-cache.ts';
import { sampleToken, seededRandom, type GenerateOptions, type GenerateResult } from './generate.ts';

export interface ForwardModel<C> {
  readonly config: DeepseekConfig;
  createCache(numBlocks: number): C;
  forward(batch: ForwardBatch, cache: C, opts?: { attn?: 'absorb' | 'naive'; allPositions?: boolean }): Float32Array | Promise<Float32Array>;
}

/** generate.ts `generate` (without speculative decoding or tracing) over any ForwardModel. */
export async function generateAsync<C>(model: ForwardModel<C>, prompt: readonly number[], opts: Omit<GenerateOptions, 'speculative' | 'tracer'>): Promise<GenerateResult> {
  if (prompt.length === 0) throw new RangeError('generate: empty prompt');
  const maxTokens = Math.max(0, Math.floor(opts.maxTokens));
  const cache = model.createCache(Math.max(1, LatentCache.blocksFor(prompt.length + maxTokens)));
  try {
    const numBlocks = Math.max(1, LatentCache.blocksFor(prompt.length + maxTokens));
    const blockTable = Int32Array.from({ length: numBlocks }, (_, i) => i);
    const rand = seededRandom(opts.seed ?? 0);
    const fo = { attn: opts.attn };
    const ids: number[] = [];
    const logits: Float32Array[] = [];
    if (maxTokens === 0) return { ids, logits };
    const chunk = Math.max(1, opts.prefillChunk ?? prompt.length);
    let row!: Float32Array;
    for (let s = 0; s < prompt.length; s += chunk) {
      const n = Math.min(chunk, prompt.length - s);
      row = await model.forward({ tokens: Int32Array.from(prompt.slice(s, s + n)), seqs: [{ blockTable, numCached: s, numNew: n }] }, cache, fo);
    }
    let pos = prompt.length;
    for (;;) {
      const id = sampleToken(row, opts.temperature ?? 0, rand);
      ids.push(id);
      logits.push(row);
      if (ids.length >= maxTokens || opts.stopIds?.includes(id)) break;
      row = await model.forward({ tokens: Int32Array.of(id), seqs: [{ blockTable, numCached: pos, numNew: 1 }] }, cache, fo);
      pos++;
    }
    return { ids, logits };
  } finally {
    (cache as { destroy?: () => void }).destroy?.();
  }
}
