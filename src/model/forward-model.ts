// What the CLI's single-sequence loops need of a model, whichever device runs its forward: the CPU
// DeepseekModel (synchronous forward over a host LatentCache) or the GPU-resident GpuDeepseekModel
// (src/model/gpu/forward.ts: asynchronous forward over a GPU cache). `generateAsync` drives generate.ts's
// plain loop (generateLoop) for either: on the CPU model each forward is still one synchronous call (one
// await of a plain value per token, nothing per op).
import type { DeepseekConfig } from './config.ts';
import type { ForwardBatch } from './deepseek.ts';
import { generateBlocks, generateLoop, type GenerateOptions, type GenerateResult } from './generate.ts';

export interface ForwardModel<C> {
  readonly config: DeepseekConfig;
  createCache(numBlocks: number): C;
  forward(batch: ForwardBatch, cache: C, opts?: { attn?: 'absorb' | 'naive'; allPositions?: boolean }): Float32Array | Promise<Float32Array>;
}

/** generate.ts `generate` (without speculative decoding or tracing) over any ForwardModel: the same loop (generateLoop), awaited. */
export async function generateAsync<C>(model: ForwardModel<C>, prompt: readonly number[], opts: Omit<GenerateOptions, 'speculative' | 'tracer'>): Promise<GenerateResult> {
  const numBlocks = generateBlocks(prompt, opts);
  const cache = model.createCache(numBlocks);
  try {
    const fo = { attn: opts.attn };
    const loop = generateLoop(prompt, opts, numBlocks);
    let step = loop.next();
    while (!step.done) step = loop.next(await model.forward(step.value, cache, fo));
    return step.value;
  } finally {
    (cache as { destroy?: () => void }).destroy?.();
  }
}
