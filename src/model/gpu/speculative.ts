// MTP speculative decoding on the GPU-resident model: mtp.ts speculativeLoop (the drafting, verification,
// acceptance and seeded PRNG draws of generateSpeculative, in the same order) driven with the main forward
// and the MTP module awaited on the GPU. Greedy output is token for token the plain greedy output.
import type { GenerateOptions, GenerateResult } from '../generate.ts';
import { checkSpeculative, speculativeBlocks, speculativeLoop, type SpecStats, type SpeculativeOptions } from '../mtp.ts';
import type { GpuDeepseekModel } from './forward.ts';

export async function generateSpeculativeGpu(model: GpuDeepseekModel, prompt: readonly number[], opts: Omit<GenerateOptions, 'speculative' | 'tracer'>,
  spec: Pick<SpeculativeOptions, 'numSpeculativeTokens'>): Promise<GenerateResult & { spec: SpecStats }> {
  const sp: SpeculativeOptions = { method: 'mtp', numSpeculativeTokens: spec.numSpeculativeTokens };
  checkSpeculative(prompt, sp, model.mtpModules);
  const c = model.config;
  const numBlocks = speculativeBlocks(prompt.length, opts.maxTokens, sp.numSpeculativeTokens);
  const cache = model.createCache(numBlocks);
  const mtpCache = model.createMtpCache(numBlocks);
  try {
    const loop = speculativeLoop(c.vocab_size, c.hidden_size, prompt, Int32Array.from({ length: numBlocks }, (_, i) => i), opts, sp);
    for (let r = loop.next(); ; ) {
      if (r.done) return r.value;
      const call = r.value;
      if (call.kind === 'mtp') {
        r = loop.next(await model.mtpForward(call.batch, call.hidden, mtpCache));
      } else {
        let hidden!: Float32Array;
        const logits = await model.forward(call.batch, cache, { allPositions: call.allPositions, onHidden: (h) => { hidden = h; } });
        r = loop.next({ logits, hidden });
      }
    }
  } finally {
    cache.destroy();
    mtpCache.destroy();
  }
}
