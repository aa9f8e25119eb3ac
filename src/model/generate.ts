// A minimal single-sequence generation loop on the model: prefill the prompt, then decode one token at
// a time through the latent cache, greedily (temperature 0) or by seeded temperature sampling.
// (The engine in src/engine does batching and scheduling; this is for the CLI and tests.)
import { LatentCache } from './latent-cache.ts';
import type { DeepseekModel, ForwardBatch, ForwardOptions } from './deepseek.ts';
import { mulberry32 } from '../tensor/random.ts';
import { generateSpeculative, type SpecStats, type SpeculativeOptions } from './mtp.ts';

export interface GenerateOptions {
  maxTokens: number;
  /** 0 (default) = greedy argmax. */
  temperature?: number;
  /** PRNG seed for temperature sampling (default 0). */
  seed?: number;
  /** Stop after generating one of these ids (it is included in the output). */
  stopIds?: readonly number[];
  attn?: ForwardOptions['attn'];
  /** Prefill in chunks of this many tokens (default: the whole prompt at once). */
  prefillChunk?: number;
  /** Records per-layer spans of every forward pass (see src/platform/tracer.ts). */
  tracer?: ForwardOptions['tracer'];
  /** MTP speculative decoding (mtp.ts): the module drafts, the main model verifies 1 + K positions per forward. */
  speculative?: SpeculativeOptions;
}

export interface GenerateResult {
  ids: number[];
  /** logits[j] is the distribution that produced ids[j] ([vocab] each). */
  logits: Float32Array[];
  /** With `speculative`: draft tokens proposed and accepted, verify steps. */
  spec?: SpecStats;
}

/** Deterministic 32-bit PRNG (mulberry32) returning floats in [0, 1). */
export const seededRandom = mulberry32;

export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** Samples from softmax(logits / temperature) with `rand` in [0, 1). */
export function sampleToken(logits: Float32Array, temperature: number, rand: () => number): number {
  if (!(temperature > 0)) return argmax(logits);
  let mx = -Infinity;
  for (const v of logits) mx = Math.max(mx, v);
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) { p[i] = Math.exp((logits[i]! - mx) / temperature); sum += p[i]!; }
  let u = rand() * sum;
  for (let i = 0; i < p.length; i++) {
    u -= p[i]!;
    if (u < 0) return i;
  }
  return p.length - 1;
}

export function generate(model: DeepseekModel, prompt: readonly number[], opts: GenerateOptions): GenerateResult {
  if (opts.speculative) return generateSpeculative(model, prompt, opts, opts.speculative);
  const cache: LatentCache = model.createCache(generateBlocks(prompt, opts));
  const fo: ForwardOptions = { attn: opts.attn, tracer: opts.tracer };
  const loop = generateLoop(prompt, opts, cache.numBlocks);
  let step = loop.next();
  while (!step.done) step = loop.next(model.forward(step.value, cache, fo));
  return step.value;
}

/** Cache blocks the plain loop needs for `prompt` and opts.maxTokens (throws on an empty prompt). */
export function generateBlocks(prompt: readonly number[], opts: Pick<GenerateOptions, 'maxTokens'>): number {
  if (prompt.length === 0) throw new RangeError('generate: empty prompt');
  return Math.max(1, LatentCache.blocksFor(prompt.length + Math.max(0, Math.floor(opts.maxTokens))));
}

/**
 * The plain single-sequence loop (prefill in chunks, then one token per forward, sampling by
 * opts.temperature/seed, stopping at maxTokens or a stop id) as a coroutine over blocks [0, numBlocks) of
 * one cache: it yields each forward's batch and is resumed with that forward's last-row logits. Driven
 * synchronously by `generate` and with awaits by forward-model.ts `generateAsync` (the GPU model), so both
 * run the same loop.
 */
export function* generateLoop(prompt: readonly number[], opts: Omit<GenerateOptions, 'speculative' | 'tracer'>, numBlocks: number): Generator<ForwardBatch, GenerateResult, Float32Array> {
  const maxTokens = Math.max(0, Math.floor(opts.maxTokens));
  const blockTable = Int32Array.from({ length: numBlocks }, (_, i) => i);
  const rand = seededRandom(opts.seed ?? 0);
  const ids: number[] = [];
  const logits: Float32Array[] = [];
  if (maxTokens === 0) return { ids, logits };
  const chunk = Math.max(1, opts.prefillChunk ?? prompt.length);
  let row!: Float32Array;
  for (let s = 0; s < prompt.length; s += chunk) {
    const n = Math.min(chunk, prompt.length - s);
    row = yield { tokens: Int32Array.from(prompt.slice(s, s + n)), seqs: [{ blockTable, numCached: s, numNew: n }] };
  }
  let pos = prompt.length;
  for (;;) {
    const id = sampleToken(row, opts.temperature ?? 0, rand);
    ids.push(id);
    logits.push(row);
    if (ids.length >= maxTokens || opts.stopIds?.includes(id)) break;
    row = yield { tokens: Int32Array.of(id), seqs: [{ blockTable, numCached: pos, numNew: 1 }] };
    pos++;
  }
  return { ids, logits };
}
