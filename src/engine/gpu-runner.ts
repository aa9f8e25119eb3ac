// The engine's ModelRunner on WebGPU: the GPU-resident forward (src/model/gpu/forward.ts) over a paged
// latent cache held on the GPU. Each scheduler step is one varlen forward: one command encoder, the
// logits of the sampled rows read back, nothing else. Weights load through the `webgpu` kernel backend
// (host arrays, uploaded once). No expert parallelism and no MTP drafting on this runner yet.
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { DeepseekModel, ModelInputError } from '../model/deepseek.ts';
import { GpuDeepseekModel, type GpuLatentCache } from '../model/gpu/forward.ts';
import type { ModelRunner, RunnerBatch } from './contracts.ts';
import type { RunnerOptions } from './model-runner.ts';

export class GpuDeepseekRunner implements ModelRunner {
  readonly vocabSize: number;
  readonly numBlocks: number;
  private readonly cache: GpuLatentCache;

  private constructor(readonly model: DeepseekModel | null, private readonly gpu: GpuDeepseekModel, private readonly kernels: Kernels | null, numBlocks: number) {
    this.vocabSize = gpu.config.vocab_size;
    this.numBlocks = numBlocks;
    this.cache = gpu.createCache(numBlocks);
  }

  /** A runner over a GPU model loaded by other means (a browser page: src/model/gpu/load-bytes.ts); dispose closes it. */
  static fromGpuModel(gpu: GpuDeepseekModel, numBlocks: number): GpuDeepseekRunner {
    return new GpuDeepseekRunner(null, gpu, null, numBlocks);
  }

  static async load(dir: string, opts: RunnerOptions): Promise<GpuDeepseekRunner> {
    if (opts.routedExperts) throw new ModelInputError('expert parallelism (--ep) is not available on the WebGPU runner: the GPU forward runs the routed experts itself');
    if ((opts.numSpeculativeTokens ?? 0) > 0) throw new ModelInputError('speculative decoding is not available on the WebGPU runner yet');
    const kernels = await loadBackend('webgpu');
    let model: DeepseekModel | null = null;
    let gpu: GpuDeepseekModel | null = null;
    try {
      model = await DeepseekModel.load(dir, kernels, { onProgress: opts.onProgress, mtp: false, quantize: opts.quantize });
      gpu = await GpuDeepseekModel.create(model);
      // The weights live on the GPU now: the host model drops its layers' references (collectable).
      model.close();
      return new GpuDeepseekRunner(model, gpu, kernels, opts.numBlocks);
    } catch (e) {
      gpu?.close();
      model?.close();
      await kernels.dispose();
      throw e;
    }
  }

  get maxPositions(): number {
    return this.gpu.config.max_position_embeddings;
  }

  forward(batch: RunnerBatch): Promise<Float32Array> {
    const logitRows = batch.seqs.some((s) => s.logitRows !== undefined) ? batch.seqs.map((s) => s.logitRows ?? 1) : undefined;
    return this.gpu.forward(batch, this.cache, logitRows ? { logitRows } : {});
  }

  async dispose(): Promise<void> {
    this.cache.destroy();
    this.gpu.close();
    this.model?.close();
    await this.kernels?.dispose();
  }
}
