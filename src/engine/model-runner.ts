// The engine's ModelRunner over the DeepSeek model: owns the paged latent cache and forwards each
// scheduler step as one varlen batch. Sizing: numBlocks defaults to what maxModelLen × maxNumSeqs needs.
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { DeepseekModel, type MoeExecutorFactory } from '../model/deepseek.ts';
import type { LatentCache } from '../model/latent-cache.ts';
import { ModelInputError } from '../model/deepseek.ts';
import type { DraftRequest, ModelRunner, RunnerBatch } from './contracts.ts';
import { draftLoop } from './mtp-draft.ts';

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
  /**
   * MTP speculative decoding: the checkpoint's first MTP module drafts up to this many tokens per step
   * (chained for more than one); the runner then keeps the last forward's hidden states and a one-layer
   * latent cache for the module, indexed by the same block tables as the main cache.
   */
  numSpeculativeTokens?: number;
  onProgress?: (done: number, total: number) => void;
}

export class DeepseekRunner implements ModelRunner {
  readonly vocabSize: number;
  readonly numBlocks: number;
  readonly maxDraftTokens: number;
  private readonly cache: LatentCache;
  private readonly mtpCache: LatentCache | null;
  /** Speculative decoding: the last forward's batch and its final hidden states [T, H]. */
  #last: { batch: RunnerBatch; hidden: Float32Array | null } | null = null;

  private constructor(readonly model: DeepseekModel, private readonly kernels: Kernels, numBlocks: number, private readonly experts: RoutedExpertsHost | null, numSpeculativeTokens: number) {
    this.vocabSize = model.config.vocab_size;
    this.numBlocks = numBlocks;
    this.cache = model.createCache(numBlocks);
    this.maxDraftTokens = numSpeculativeTokens;
    this.mtpCache = numSpeculativeTokens > 0 ? model.createMtpCache(numBlocks) : null;
  }

  static async load(dir: string, opts: RunnerOptions): Promise<DeepseekRunner> {
    const K = opts.numSpeculativeTokens ?? 0;
    if (!Number.isSafeInteger(K) || K < 0) throw new RangeError(`numSpeculativeTokens must be an integer >= 0, got ${K}`);
    const experts = opts.routedExperts ? await opts.routedExperts(dir) : null;
    let kernels: Kernels | null = null;
    try {
      kernels = await loadBackend(opts.backend ?? 'ref', { threads: opts.threads ?? 1 });
      const moe = experts ? { moe: experts.factory, routedExperts: false } : {};
      const model = await DeepseekModel.load(dir, kernels, { onProgress: opts.onProgress, mtp: K > 0, quantize: opts.quantize, ...moe });
      if (K > 0 && model.mtpModules === 0) {
        model.close();
        throw new ModelInputError('speculative decoding (--speculative mtp) needs an MTP module: this checkpoint has none (num_nextn_predict_layers is 0 or its model.layers.<num_hidden_layers>.* tensors are missing)');
      }
      return new DeepseekRunner(model, kernels, opts.numBlocks, experts, K);
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
    const logitRows = batch.seqs.some((s) => s.logitRows !== undefined) ? batch.seqs.map((s) => s.logitRows ?? 1) : undefined;
    if (!this.mtpCache) return this.model.forward(batch, this.cache, logitRows ? { logitRows } : {});
    const last: { batch: RunnerBatch; hidden: Float32Array | null } = { batch, hidden: null };
    this.#last = null; // a forward that throws leaves nothing to draft from
    const H = this.model.config.hidden_size;
    const out = this.model.forward(batch, this.cache, { ...(logitRows ? { logitRows } : {}), onHidden: (h) => { last.hidden = h.slice(0, batch.tokens.length * H); } });
    this.#last = last;
    return out;
  }

  /** MTP drafts for the requests (mtp-draft.ts draftLoop), each module step run synchronously. */
  draft(reqs: readonly DraftRequest[]): number[][] {
    const last = this.#last;
    if (!this.mtpCache || !last?.hidden) throw new Error('draft() needs a forward with speculative decoding enabled first');
    const loop = draftLoop({ batch: last.batch, hidden: last.hidden }, reqs, this.model.config.hidden_size, this.vocabSize);
    for (let r = loop.next(); ; ) {
      if (r.done) return r.value;
      const c = r.value;
      r = loop.next(this.model.mtpForward(c.batch, c.hidden, this.mtpCache, c.logitRows ? { logitRows: c.logitRows } : {}));
    }
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
