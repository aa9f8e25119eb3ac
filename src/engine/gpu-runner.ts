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

  /**
   * The MTP module over each request's valid positions of the last forward (its hidden states, the next
   * tokens) in one varlen batch writing its cache; each request's first draft is the argmax of its last
   * position's draft logits, further drafts chain the module on its own output hidden state (as
   * model-runner.ts DeepseekRunner.draft).
   */
  async draft(reqs: readonly DraftRequest[]): Promise<number[][]> {
    const last = this.#last;
    if (!this.mtpCache || !last?.hidden) throw new Error('draft() needs a forward with speculative decoding enabled first');
    const H = this.gpu.config.hidden_size, V = this.vocabSize;
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
    let out = await this.gpu.mtpForward(
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
      out = await this.gpu.mtpForward({
        tokens: Int32Array.from(next, (j) => drafts[j]![step]!),
        seqs: next.map((j) => ({ blockTable: seqOf(reqs[j]!).blockTable, numCached: seqOf(reqs[j]!).numCached + reqs[j]!.numValid + step, numNew: 1 })),
      }, h, this.mtpCache);
      active = next;
    }
    return drafts;
  }

  async dispose(): Promise<void> {
    this.cache.destroy();
    this.mtpCache?.destroy();
    this.gpu.close();
    this.model?.close();
    await this.kernels?.dispose();
  }
}

/** Index of the largest value of row `row` of x [rows, V] (ties: the lower index). */
function argmaxRow(x: Float32Array, row: number, V: number): number {
  let best = 0;
  for (let i = 1; i < V; i++) if (x[row * V + i]! > x[row * V + best]!) best = i;
  return best;
}
