// The engine's ModelRunner over the DeepSeek model: owns the paged latent cache and forwards each
// scheduler step as one varlen batch. Sizing: numBlocks defaults to what maxModelLen × maxNumSeqs needs.
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { DeepseekModel, type MoeExecutorFactory } from '../model/deepseek.ts';
import type { LatentCache } from '../model/latent-cache.ts';
import type { ModelRunner, RunnerBatch } from './contracts.ts';

/** Routed experts held elsewhere (expert parallelism: ExpertParallel): the executor and its lifecycle. */
export interface RoutedExpertsHost {
  readonly factory: MoeExecutorFactory;
  close(): Promise<void>;
}

export interface RunnerOptions {
  /**
   * Starts the holder of the routed experts (e.g. the expert-parallel ranks) for this runner: the model
   * then loads without them and its MoE runs through the holder's executor. Each load (a rebuild after a
   * failure too) starts a fresh one; dispose closes it.
   */
  routedExperts?: (dir: string) => Promise<RoutedExpertsHost>;
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

  private constructor(readonly model: DeepseekModel, private readonly kernels: Kernels, numBlocks: number, private readonly experts: RoutedExpertsHost | null) {
    this.vocabSize = model.config.vocab_size;
    this.numBlocks = numBlocks;
    this.cache = model.createCache(numBlocks);
  }

  static async load(dir: string, opts: RunnerOptions): Promise<DeepseekRunner> {
    const experts = opts.routedExperts ? await opts.routedExperts(dir) : null;
    let kernels: Kernels | null = null;
    try {
      kernels = await loadBackend(opts.backend ?? 'ref', { threads: opts.threads ?? 1 });
      const moe = experts ? { moe: experts.factory, routedExperts: false } : {};
      const model = await DeepseekModel.load(dir, kernels, { onProgress: opts.onProgress, mtp: false, quantize: opts.quantize, ...moe });
      return new DeepseekRunner(model, kernels, opts.numBlocks, experts);
    } catch (e) {
      await kernels?.dispose();
      await experts?.close();
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
    try {
      this.model.close();
      await this.kernels.dispose();
    } finally {
      await this.experts?.close();
    }
  }
}
