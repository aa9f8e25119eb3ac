// The engine's ModelRunner on WebGPU: the GPU-resident forward (src/model/gpu/forward.ts) over a paged
// latent cache held on the GPU. Each scheduler step is one varlen forward: one command encoder, the
// logits of the sampled rows read back, nothing else. Weights load through the `webgpu` kernel backend
// (host arrays, uploaded once). MTP speculative decoding as model-runner.ts DeepseekRunner does it, on the
// GPU: the forward also reads back the hidden states, draft() runs the MTP module over a one-layer GPU
// cache. No expert parallelism on this runner.
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { DeepseekModel, ModelInputError } from '../model/deepseek.ts';
import { GpuDeepseekModel, type GpuLatentCache } from '../model/gpu/forward.ts';
import type { DraftRequest, ModelRunner, RunnerBatch } from './contracts.ts';
import type { RunnerOptions } from './model-runner.ts';
import { draftLoop } from './mtp-draft.ts';

export class GpuDeepseekRunner implements ModelRunner {
  readonly vocabSize: number;
  readonly numBlocks: number;
  readonly maxDraftTokens: number;
  private readonly cache: GpuLatentCache;
  private readonly mtpCache: GpuLatentCache | null;
  /** Speculative decoding: the last forward's batch and its final hidden states [T, H]. */
  #last: { batch: RunnerBatch; hidden: Float32Array | null } | null = null;

  private constructor(readonly model: DeepseekModel | null, private readonly gpu: GpuDeepseekModel, private readonly kernels: Kernels | null,
    numBlocks: number, numSpeculativeTokens = 0) {
    this.vocabSize = gpu.config.vocab_size;
    this.numBlocks = numBlocks;
    this.cache = gpu.createCache(numBlocks);
    this.maxDraftTokens = numSpeculativeTokens;
    this.mtpCache = numSpeculativeTokens > 0 ? gpu.createMtpCache(numBlocks) : null;
  }

  /** A runner over a GPU model loaded by other means (a browser page: src/model/gpu/load-bytes.ts); dispose closes it. */
  static fromGpuModel(gpu: GpuDeepseekModel, numBlocks: number): GpuDeepseekRunner {
    return new GpuDeepseekRunner(null, gpu, null, numBlocks);
  }

  static async load(dir: string, opts: RunnerOptions): Promise<GpuDeepseekRunner> {
    if (opts.routedExperts) throw new ModelInputError('expert parallelism (--ep) is not available on the WebGPU runner: the GPU forward runs the routed experts itself');
    const K = opts.numSpeculativeTokens ?? 0;
    if (!Number.isSafeInteger(K) || K < 0) throw new RangeError(`numSpeculativeTokens must be an integer >= 0, got ${K}`);
    const kernels = await loadBackend('webgpu');
    let model: DeepseekModel | null = null;
    let gpu: GpuDeepseekModel | null = null;
    try {
      model = await DeepseekModel.load(dir, kernels, { onProgress: opts.onProgress, mtp: K > 0, quantize: opts.quantize });
      if (K > 0 && model.mtpModules === 0) {
        throw new ModelInputError('speculative decoding (--speculative mtp) needs an MTP module: this checkpoint has none (num_nextn_predict_layers is 0 or its model.layers.<num_hidden_layers>.* tensors are missing)');
      }
      gpu = await GpuDeepseekModel.create(model);
      // The weights live on the GPU now: the host model drops its layers' references (collectable).
      model.close();
      return new GpuDeepseekRunner(model, gpu, kernels, opts.numBlocks, K);
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

  async forward(batch: RunnerBatch): Promise<Float32Array> {
    const logitRows = batch.seqs.some((s) => s.logitRows !== undefined) ? batch.seqs.map((s) => s.logitRows ?? 1) : undefined;
    if (!this.mtpCache) return this.gpu.forward(batch, this.cache, logitRows ? { logitRows } : {});
    const last: { batch: RunnerBatch; hidden: Float32Array | null } = { batch, hidden: null };
    this.#last = null; // a forward that throws leaves nothing to draft from
    const out = await this.gpu.forward(batch, this.cache, { ...(logitRows ? { logitRows } : {}), onHidden: (h) => { last.hidden = h; } });
    this.#last = last;
    return out;
  }

  /** MTP drafts for the requests (mtp-draft.ts draftLoop), each module step awaited on the GPU. */
  async draft(reqs: readonly DraftRequest[]): Promise<number[][]> {
    const last = this.#last;
    if (!this.mtpCache || !last?.hidden) throw new Error('draft() needs a forward with speculative decoding enabled first');
    const loop = draftLoop({ batch: last.batch, hidden: last.hidden }, reqs, this.gpu.config.hidden_size, this.vocabSize);
    for (let r = loop.next(); ; ) {
      if (r.done) return r.value;
      const c = r.value;
      r = loop.next(await this.gpu.mtpForward(c.batch, c.hidden, this.mtpCache, c.logitRows ? { logitRows: c.logitRows } : {}));
    }
  }

  async dispose(): Promise<void> {
    this.cache.destroy();
    this.mtpCache?.destroy();
    this.gpu.close();
    this.model?.close();
    await this.kernels?.dispose();
  }
}
