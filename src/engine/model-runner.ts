// The engine's ModelRunner over the DeepSeek model: owns the paged latent cache and forwards each
// scheduler step as one varlen batch. Sizing: numBlocks defaults to what maxModelLen × maxNumSeqs needs.
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { DeepseekModel, type MoeExecutorFactory } from '../model/deepseek.ts';
import type { LatentCache } from '../model/latent-cache.ts';
import { ModelInputError } from '../model/deepseek.ts';
import type { DraftRequest, ModelRunner, RunnerBatch } from './contracts.ts';

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

  /**
   * The MTP module over each request's valid positions of the last forward (its hidden states, the next
   * tokens), in one varlen batch, writing its cache; each request's first draft is the argmax of its last
   * position's draft logits, and further drafts chain the module on its own output hidden state, one
   * position further each time (DeepSeek-V3 §2.2; vLLM's deepseek_mtp proposer drafts the argmax too).
   */
  draft(reqs: readonly DraftRequest[]): number[][] {
    const last = this.#last;
    if (!this.mtpCache || !last?.hidden) throw new Error('draft() needs a forward with speculative decoding enabled first');
    const H = this.model.config.hidden_size, V = this.vocabSize;
    const starts: number[] = [];
    let o = 0;
    for (const s of last.batch.seqs) { starts.push(o); o += s.numNew; }
    let T = 0;
    for (const r of reqs) {
      const s = last.batch.seqs[r.index];
      if (!s || r.numValid < 1 || r.numValid > s.numNew || r.nextTokens.length !== r.numValid) throw new RangeError(`draft: bad request for sequence ${r.index}`);
      T += r.numValid;
    }
    const tokens = new Int32Array(T);
    const hidden = new Float32Array(T * H);
    o = 0;
    for (const r of reqs) {
      tokens.set(r.nextTokens, o);
      hidden.set(last.hidden.subarray(starts[r.index]! * H, (starts[r.index]! + r.numValid) * H), o * H);
      o += r.numValid;
    }
    const seqOf = (r: DraftRequest) => last.batch.seqs[r.index]!;
    let out = this.model.mtpForward(
      { tokens, seqs: reqs.map((r) => ({ blockTable: seqOf(r).blockTable, numCached: seqOf(r).numCached, numNew: r.numValid })) },
      hidden, this.mtpCache, { logitRows: reqs.map((r) => (r.numDrafts > 0 ? 1 : 0)) });
    const drafts: number[][] = reqs.map(() => []);
    let active = reqs.flatMap((r, j) => (r.numDrafts > 0 ? [j] : []));
    for (let step = 0; active.length > 0; step++) {
      active.forEach((j, row) => drafts[j]!.push(argmaxRow(out.logits, row, V)));
      const next = active.filter((j) => reqs[j]!.numDrafts > step + 1);
      if (next.length === 0) break;
      const h = new Float32Array(next.length * H);
      next.forEach((j, n) => { const row = active.indexOf(j); h.set(out.hidden.subarray(row * H, (row + 1) * H), n * H); });
      // The module at the drafted token's position reads that token and its own previous output.
      out = this.model.mtpForward({
        tokens: Int32Array.from(next, (j) => drafts[j]![step]!),
        seqs: next.map((j) => ({ blockTable: seqOf(reqs[j]!).blockTable, numCached: seqOf(reqs[j]!).numCached + reqs[j]!.numValid + step, numNew: 1 })),
      }, h, this.mtpCache);
      active = next;
    }
    return drafts;
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

/** Index of the largest logit of row `row` of a [rows, V] matrix (ties to the lower id). */
function argmaxRow(logits: Float32Array, row: number, V: number): number {
  let best = 0, bv = -Infinity;
  for (let v = 0; v < V; v++) {
    const x = logits[row * V + v]!;
    if (x > bv) { bv = x; best = v; }
  }
  return best;
}
