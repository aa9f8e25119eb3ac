// The engine's ModelRunner over the DeepSeek model: owns the paged latent cache and forwards each
// scheduler step as one varlen batch. Sizing: numBlocks defaults to what maxModelLen × maxNumSeqs needs.
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { DeepseekModel } from '../model/deepseek.ts';
import type { LatentCache } from '../model/latent-cache.ts';
import type { ModelRunner, RunnerBatch } from './contracts.ts';

export interface RunnerOptions {
  backend?: string;
  threads?: number;
  numBlocks: number;
  /** Quantize BF16/F16/F32 linear weights to FP8 while loading. */
  quantize?: 'fp8';
  onProgress?: (done: number, total: number) => void;
}

export class DeepseekRunner implements ModelRunner {
  readonly vocabSize: number;
  readonly numBlocks: number;
  private readonly cache: LatentCache;

  private constructor(readonly model: DeepseekModel, private readonly kernels: Kernels, numBlocks: number) {
    this.vocabSize = model.config.vocab_size;
    this.numBlocks = numBlocks;
    this.cache = model.createCache(numBlocks);
  }

  static async load(dir: string, opts: RunnerOptions): Promise<DeepseekRunner> {
    const kernels = await loadBackend(opts.backend ?? 'ref', { threads: opts.threads ?? 1 });
    try {
      const model = await DeepseekModel.load(dir, kernels, { onProgress: opts.onProgress, mtp: false, quantize: opts.quantize });
      return new DeepseekRunner(model, kernels, opts.numBlocks);
    } catch (e) {
      await kernels.dispose();
      throw e;
    }
  }

  get maxPositions(): number {
    return this.model.config.max_position_embeddings;
  }

  forward(batch: RunnerBatch): Float32Array {
    return this.model.forward(batch, this.cache);
  }

  async dispose(): Promise<void> {
    this.model.close();
    await this.kernels.dispose();
  }
}
