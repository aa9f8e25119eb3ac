// The DeepSeek-V2/V3 forward pass, top to bottom like DeepSeek's inference/model.py:
//   embedding → for each layer: x += MLA(RMSNorm(x)); x += (MLP | MoE)(RMSNorm(x)) → RMSNorm → lm_head.
// Batches are varlen (vLLM-style): the new tokens of all sequences are concatenated, T rows in all,
// and every matmul runs once over all T rows. The KV cache is the paged latent cache (latent-cache.ts).
// References: deepseek-ai/DeepSeek-V3 inference/model.py (Transformer, Block, MLA, MoE) and HF
// modeling_deepseek.py (DeepSeek-V2/V3); exact semantics in /work/shared/testdata/deepseek-ref/README.md.
import { existsSync, statSync } from 'node:fs';
import type { Kernels, WeightMatrix } from '../kernels/api.ts';
import { Checkpoint } from '../weights/checkpoint.ts';
import type { Tracer } from '../platform/tracer.ts';
import { ConfigError, isMoeLayer, loadConfig, qkHeadDim, softmaxScale, type DeepseekConfig } from './config.ts';
import { createRefFlashMla } from '../kernels/flashmla/ref.ts';
import { WasmFlashMla } from '../kernels/flashmla/wasm.ts';
import type { SyncFlashMlaKernel } from '../kernels/flashmla/types.ts';
import { LatentCache } from './latent-cache.ts';
import {
  absorbOutput, absorbQuery, decompressedAttention, deriveAbsorbed, prefersDecompressed, gatherCols, latentAttention, naiveAttention, scatterCols, type AbsorbedWeights, type SeqSlice,
} from './mla.ts';
import { localMoeExecutor, mlp, route, type MoeExecutor, type MoeExecutorFactory } from './moe.ts';
import { RopeTable } from './rope.ts';
import { loadWeights, type LayerWeights, type ModelWeights } from './weight-map.ts';
import { weightFootprint } from './memory-plan.ts';
import { Workspace } from './workspace.ts';

export type { SeqSlice } from './mla.ts';
export type { MoeExecutor, MoeExecutorFactory, MoeContext } from './moe.ts';
export type { Tracer } from '../platform/tracer.ts';

export interface ForwardBatch {
  /** Tokens of all sequences concatenated in sequence order (varlen). */
  tokens: Int32Array;
  seqs: SeqSlice[];
}

export interface ForwardOptions {
  /** MLA form: 'absorb' (default; FlashMLA's) or 'naive' (decompress K/V per head). */
  attn?: 'absorb' | 'naive';
  /** Logits for every token instead of the last new token of each sequence. */
  allPositions?: boolean;
  /**
   * Logits for the last `logitRows[i]` new tokens of sequence i (0..numNew; default 1 each): the
   * positions a speculative step verifies. Ignored with allPositions.
   */
  logitRows?: readonly number[];
  /** Called per MoE layer with the routing of all T tokens: experts/weights [T, k]. */
  onRouting?: (layer: number, experts: Int32Array, weights: Float32Array) => void;
  /** Called after each decoder layer with the residual stream [T, H] (a live buffer: copy what you keep). */
  onBlockOut?: (layer: number, hidden: Float32Array) => void;
  /**
   * Called with the final hidden states [T, H] before the final norm (a live buffer: copy what you keep):
   * the h_i the MTP module reads (speculative decoding).
   */
  onHidden?: (hidden: Float32Array) => void;
  tracer?: Tracer;
}

/** One MTP module step: draft logits and the module's own output hidden state (for chaining). */
export interface MtpOutput {
  /** [rows, vocab]: last new position of each sequence (logitRows: its last logitRows[i]), or every position with allPositions. */
  logits: Float32Array;
  /** [rows, H]: the MTP block's output before shared_head.norm (same rows as logits; a fresh array). */
  hidden: Float32Array;
}

export interface LoadOptions {
  onProgress?: (done: number, total: number) => void;
  /** Routed-expert executor (default: local, grouped by expert). */
  moe?: MoeExecutorFactory;
  /**
   * Load the decoder layers' routed experts into this model (default true). An executor that holds them
   * itself (expert parallelism) passes false, so they are not loaded twice.
   */
  routedExperts?: boolean;
  /** Load the MTP modules (default true; they never affect next-token logits, only mtpForward's drafts). */
  mtp?: boolean;
  /**
   * FlashMLA kernel for the absorbed attention: 'auto' (default) = the backend's own ('wasm' for the
   * wasm backend, same thread count), else the plain-TS reference; or force 'ref' / 'wasm'.
   */
  flashMla?: 'auto' | 'ref' | 'wasm';
  /** Quantize BF16/F16/F32 linear weights to DeepSeek's FP8 layout while loading (weight-map.ts isQuantizable). */
  quantize?: 'fp8';
}

/**
 * eps of q_a_layernorm and kv_a_layernorm: HF builds them as DeepseekV2RMSNorm(rank) with the default
 * eps 1e-6, whatever config.rms_norm_eps says (DeepSeek's reference uses 1e-6 for every norm).
 * The decoder-layer norms and the final norm use config.rms_norm_eps.
 */
export const LORA_NORM_EPS = 1e-6;

export class ModelInputError extends Error {
  override name = 'ModelInputError';
  readonly exitCode = 2;
}

export class DeepseekModel {
  readonly #k: Kernels;
  #w: ModelWeights;
  readonly #absorbed: AbsorbedWeights[];
  /** Absorbed kv_b of the MTP modules' decoder blocks (derived on first use). */
  #mtpAbsorbed: AbsorbedWeights[] | null = null;
  readonly #rope: RopeTable;
  readonly #moe: MoeExecutor;
  readonly #scale: number;
  /** FlashMLA kernel of the backend (absorbed attention over the paged latent cache). */
  readonly #mla: SyncFlashMlaKernel;
  /** Activation buffers reused by every forward (in backend memory, so kernels read and write them in place). */
  readonly #ws: Workspace;

  private constructor(readonly config: DeepseekConfig, kernels: Kernels, weights: ModelWeights, moe: MoeExecutorFactory, mla: SyncFlashMlaKernel) {
    this.#k = kernels;
    this.#w = weights;
    const c = config;
    this.#absorbed = weights.layers.map((l) =>
      deriveAbsorbed(kernels, l.attn.kvB, c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim));
    this.#rope = new RopeTable(c);
    this.#scale = softmaxScale(c);
    this.#mla = mla;
    this.#ws = new Workspace(kernels);
    // Layer ids >= num_hidden_layers are the MTP modules' decoder blocks (as stored).
    this.#moe = moe({
      config: c, kernels,
      moe: (layer) => layer < c.num_hidden_layers ? this.#w.layers[layer]?.moe : this.#w.mtp[layer - c.num_hidden_layers]?.block.moe,
    });
  }

  /**
   * A model over weights loaded by other means (weight-map.ts loadWeights through `kernels`, e.g. from
   * fetched bytes in a browser page, where there is no directory to read).
   */
  static async fromWeights(config: DeepseekConfig, kernels: Kernels, weights: ModelWeights, opts: Pick<LoadOptions, 'moe' | 'flashMla'> = {}): Promise<DeepseekModel> {
    return new DeepseekModel(config, kernels, weights, opts.moe ?? localMoeExecutor, await flashMlaFor(kernels, opts.flashMla ?? 'auto'));
  }

  /** Reads config.json and the safetensors checkpoint of `dir` into backend memory. */
  static async load(dir: string, kernels: Kernels, opts: LoadOptions = {}): Promise<DeepseekModel> {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ConfigError('', `model directory ${dir} does not exist`, dir);
    const config = loadConfig(dir);
    const ck = Checkpoint.open(dir);
    try {
      const parts = { mtp: opts.mtp ?? true, routedExperts: opts.routedExperts ?? true, quantize: opts.quantize };
      // Backends with split memory (wasm: 4 GiB each) make room first: their allocators are synchronous.
      await kernels.reserve(weightFootprint(config, ck, parts).allocations);
      const weights = loadWeights(ck, kernels, config, { ...parts, onProgress: opts.onProgress });
      const mla = await flashMlaFor(kernels, opts.flashMla ?? 'auto');
      return new DeepseekModel(config, kernels, weights, opts.moe ?? localMoeExecutor, mla);
    } finally {
      ck.close();
    }
  }

  get kernels(): Kernels {
    return this.#k;
  }

  /** The loaded weights (MTP modules under `.mtp`). */
  get weights(): ModelWeights {
    return this.#w;
  }

  createCache(numBlocks: number): LatentCache {
    const c = this.config;
    const rowDim = c.kv_lora_rank + c.qk_rope_head_dim;
    // Layers live where the FlashMLA kernel reads them in place (wasm: its linear memory).
    const mla = this.#mla;
    const alloc = mla.allocCache ? () => mla.allocCache!('f32', numBlocks, 1, rowDim).data as Float32Array : undefined;
    return new LatentCache(c.num_hidden_layers, numBlocks, c.kv_lora_rank, c.qk_rope_head_dim, alloc);
  }

  /** Number of loaded MTP modules (0 without num_nextn_predict_layers or when loaded with mtp: false). */
  get mtpModules(): number {
    return this.#w.mtp.length;
  }

  /**
   * A latent cache for MTP module `j`'s attention: one layer, indexed by the same block tables and
   * positions as the main cache (position i holds the MTP block's latent of [t_{i+1} ; h_i]).
   */
  createMtpCache(numBlocks: number): LatentCache {
    const c = this.config;
    const mla = this.#mla;
    const alloc = mla.allocCache ? () => mla.allocCache!('f32', numBlocks, 1, c.kv_lora_rank + c.qk_rope_head_dim).data as Float32Array : undefined;
    return new LatentCache(1, numBlocks, c.kv_lora_rank, c.qk_rope_head_dim, alloc);
  }

  /**
   * MTP module `j` (DeepSeek-V3 §2.2; vLLM deepseek_mtp): for each new position i of a sequence,
   * x_i = eh_proj([enorm(Emb(tokens[i])) ; hnorm(hidden[i])]) where tokens[i] is the token at position
   * i + 1 and hidden[i] the main model's final hidden state at position i (before the final norm; or this
   * module's own output hidden when chaining), then the module's decoder block (its attention over
   * `cache`, a createMtpCache cache, at the main model's positions), then shared_head.norm and the head
   * (shared_head.head, else lm_head): draft logits for the token at position i + 2.
   */
  mtpForward(batch: ForwardBatch, hidden: Float32Array, cache: LatentCache, opts: ForwardOptions & { module?: number } = {}): MtpOutput {
    const c = this.config;
    const k = this.#k;
    const j = opts.module ?? 0;
    const mw = this.#w.mtp[j];
    if (!mw) throw new ModelInputError(`mtpForward: no MTP module ${j} loaded (${this.#w.mtp.length} loaded)`);
    const T = this.#validate(batch, cache, 1);
    const H = c.hidden_size;
    if (hidden.length !== T * H) throw new ModelInputError(`mtpForward: hidden has ${hidden.length} floats, expected ${T}x${H}`);
    const positions = new Int32Array(T);
    {
      let t = 0;
      for (const s of batch.seqs) for (let i = 0; i < s.numNew; i++) positions[t++] = s.numCached + i;
    }
    const ropeRows = { q: this.#rope.rows(positions, c.num_attention_heads), k: this.#rope.rows(positions, 1) };
    const ws = this.#ws;
    // [enorm(e) ; hnorm(h)] as [T, 2H], then eh_proj.
    const e = ws.get('mtpE', T * H);
    const emb = mw.embed ?? this.#w.embed;
    for (let t = 0; t < T; t++) widenRow(emb, batch.tokens[t]!, e, t * H);
    const en = k.rmsNorm(e, T, mw.enorm, c.rms_norm_eps, ws.get('mtpEn', T * H));
    const hn = k.rmsNorm(hidden, T, mw.hnorm, c.rms_norm_eps, ws.get('mtpHn', T * H));
    const cat = ws.get('mtpCat', T * 2 * H);
    for (let t = 0; t < T; t++) {
      cat.set(en.subarray(t * H, (t + 1) * H), t * 2 * H);
      cat.set(hn.subarray(t * H, (t + 1) * H), t * 2 * H + H);
    }
    const x = k.matmul(cat, T, mw.ehProj, ws.get('mtpX', T * H));
    const lw = mw.block;
    this.#mtpAbsorbed ??= this.#w.mtp.map((m) =>
      deriveAbsorbed(k, m.block.attn.kvB, c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim));
    const normed = ws.get('normed', T * H);
    const attnIn = k.rmsNorm(x, T, lw.inputNorm, c.rms_norm_eps, normed);
    addInPlace(x, this.#attention(0, this.#mtpAbsorbed[j]!, lw, attnIn, T, ropeRows, batch.seqs, cache, opts.attn ?? 'absorb'));
    const ffnIn = k.rmsNorm(x, T, lw.postAttnNorm, c.rms_norm_eps, normed);
    addInPlace(x, this.#ffn(c.num_hidden_layers + j, lw, ffnIn, T, opts));
    const { rows, last } = this.#lastRows(x, batch, T, opts.allPositions ?? false, opts.logitRows);
    if (rows === 0) return { logits: new Float32Array(0), hidden: new Float32Array(0) };
    const out = last.slice();
    const h = k.rmsNorm(last, rows, mw.headNorm, c.rms_norm_eps, ws.get('normed', rows * H));
    return { logits: k.matmul(h, rows, mw.head ?? this.#w.lmHead), hidden: out };
  }

  /** Logits [numSeqs, vocab] (last new token of each sequence), [sum logitRows, vocab], or [T, vocab] with allPositions. */
  forward(batch: ForwardBatch, cache: LatentCache, opts: ForwardOptions = {}): Float32Array {
    const c = this.config;
    const k = this.#k;
    const T = this.#validate(batch, cache);
    const positions = new Int32Array(T);
    {
      let t = 0;
      for (const s of batch.seqs) for (let i = 0; i < s.numNew; i++) positions[t++] = s.numCached + i;
    }
    // RoPE angles of the new positions, shared by every layer: per head for q, once for k_pe.
    const ropeRows = { q: this.#rope.rows(positions, c.num_attention_heads), k: this.#rope.rows(positions, 1) };
    const ws = this.#ws;
    const H = c.hidden_size;
    const x = this.#embed(batch.tokens, ws.get('x', T * H));
    const normed = ws.get('normed', T * H);
    for (let l = 0; l < c.num_hidden_layers; l++) {
      const lw = this.#w.layers[l]!;
      const tr = opts.tracer;
      const attnIn = k.rmsNorm(x, T, lw.inputNorm, c.rms_norm_eps, normed);
      const attnOut = tr
        ? tr.span(`layer.${l}.attn`, 'compute', () => this.#attention(l, this.#absorbed[l]!, lw, attnIn, T, ropeRows, batch.seqs, cache, opts.attn ?? 'absorb'))
        : this.#attention(l, this.#absorbed[l]!, lw, attnIn, T, ropeRows, batch.seqs, cache, opts.attn ?? 'absorb');
      addInPlace(x, attnOut);
      const ffnIn = k.rmsNorm(x, T, lw.postAttnNorm, c.rms_norm_eps, normed);
      const ffnOut = tr
        ? tr.span(`layer.${l}.${lw.moe ? 'moe' : 'mlp'}`, 'compute', () => this.#ffn(l, lw, ffnIn, T, opts))
        : this.#ffn(l, lw, ffnIn, T, opts);
      addInPlace(x, ffnOut);
      opts.onBlockOut?.(l, x);
    }
    opts.onHidden?.(x);
    // Final norm and lm_head only on the rows whose logits are wanted.
    const { rows, last } = this.#lastRows(x, batch, T, opts.allPositions ?? false, opts.logitRows);
    if (rows === 0) return new Float32Array(0);
    const h = k.rmsNorm(last, rows, this.#w.norm, c.rms_norm_eps, ws.get('normed', rows * H));
    // The logits are the caller's to keep: a fresh array, not a workspace buffer.
    return k.matmul(h, rows, this.#w.lmHead);
  }

  /**
   * The rows of x [T, H] whose logits are wanted: all, the last new position of each sequence, or the
   * last logitRows[i] of sequence i.
   */
  #lastRows(x: Float32Array, batch: ForwardBatch, T: number, all: boolean, logitRows?: readonly number[]): { rows: number; last: Float32Array } {
    if (all) return { rows: T, last: x };
    const H = this.config.hidden_size;
    const n = batch.seqs.length;
    if (logitRows) {
      if (logitRows.length !== n) throw new ModelInputError(`forward: logitRows has ${logitRows.length} entries for ${n} sequences`);
      let rows = 0;
      for (let i = 0; i < n; i++) {
        const r = logitRows[i]!;
        if (!Number.isSafeInteger(r) || r < 0 || r > batch.seqs[i]!.numNew) {
          throw new ModelInputError(`forward: logitRows[${i}] must be an integer in [0, ${batch.seqs[i]!.numNew}], got ${r}`);
        }
        rows += r;
      }
      if (rows === T) return { rows, last: x };
      const last = this.#ws.get('last', rows * H);
      let end = 0, o = 0;
      for (let i = 0; i < n; i++) {
        end += batch.seqs[i]!.numNew;
        const r = logitRows[i]!;
        last.set(x.subarray((end - r) * H, end * H), o * H);
        o += r;
      }
      return { rows, last };
    }
    const rows = n;
    if (rows === T) return { rows, last: x };
    const last = this.#ws.get('last', rows * H);
    let end = 0;
    for (let i = 0; i < rows; i++) {
      end += batch.seqs[i]!.numNew;
      last.set(x.subarray((end - 1) * H, end * H), i * H);
    }
    return { rows, last };
  }

  close(): void {
    // Backend memory belongs to the kernels instance; dropping the references releases JS-side arrays.
    this.#w = { embed: this.#w.embed, norm: new Float32Array(0), lmHead: this.#w.lmHead, layers: [], mtp: [] };
    this.#absorbed.length = 0;
    this.#mtpAbsorbed = null;
    void this.#mla.dispose(); // stops the wasm FlashMLA's worker threads (no-op for the reference)
  }

  // ------------------------------------------------------------------ pieces of the story

  #validate(batch: ForwardBatch, cache: LatentCache, cacheLayers = this.config.num_hidden_layers): number {
    const c = this.config;
    if (batch.seqs.length === 0) throw new ModelInputError('forward: batch has no sequences');
    let T = 0;
    for (const s of batch.seqs) {
      if (!Number.isSafeInteger(s.numNew) || s.numNew < 1) throw new ModelInputError(`forward: numNew must be >= 1, got ${s.numNew}`);
      if (!Number.isSafeInteger(s.numCached) || s.numCached < 0) throw new ModelInputError(`forward: numCached must be >= 0, got ${s.numCached}`);
      if (s.blockTable.length * cache.blockSize < s.numCached + s.numNew) {
        throw new ModelInputError(`forward: block table of ${s.blockTable.length} blocks cannot hold ${s.numCached + s.numNew} positions`);
      }
      T += s.numNew;
    }
    if (batch.tokens.length !== T) throw new ModelInputError(`forward: ${batch.tokens.length} tokens for ${T} new positions`);
    for (const id of batch.tokens) {
      if (!(id >= 0 && id < c.vocab_size)) throw new ModelInputError(`forward: token id ${id} outside the vocabulary [0, ${c.vocab_size})`);
    }
    if (cache.layers.length !== cacheLayers || cache.kvLoraRank !== c.kv_lora_rank || cache.ropeDim !== c.qk_rope_head_dim) {
      throw new ModelInputError('forward: cache was not created for this model');
    }
    return T;
  }

  /** Embedding rows widened to f32 into x [T, H]. */
  #embed(tokens: Int32Array, x: Float32Array): Float32Array {
    const H = this.config.hidden_size;
    const e = this.#w.embed;
    for (let t = 0; t < tokens.length; t++) widenRow(e, tokens[t]!, x, t * H);
    return x;
  }

  /**
   * MLA for T tokens: projects q and the latent [c_kv | k_pe], writes the latents of the new positions
   * into the paged cache, attends (absorbed or naive) and applies o_proj. Returns [T, H].
   */
  #attention(l: number, ab: AbsorbedWeights, lw: LayerWeights, x: Float32Array, T: number, ropeRows: { q: RopeRows; k: RopeRows },
    seqs: readonly SeqSlice[], cache: LatentCache, form: 'absorb' | 'naive'): Float32Array {
    const c = this.config;
    const k = this.#k;
    const a = lw.attn;
    const Hd = c.num_attention_heads;
    const nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vDim = c.v_head_dim, kvLora = c.kv_lora_rank;
    const qk = qkHeadDim(c);
    const R = kvLora + rope;

    const ws = this.#ws;
    // Queries [T, Hd, nope + rope]; RoPE on the rope part of every head.
    const q = ws.get('q', T * Hd * qk);
    if (a.q) k.matmul(x, T, a.q, q);
    else {
      const qA = k.matmul(x, T, a.qA!, ws.get('qA', T * a.qA!.rows));
      k.matmul(k.rmsNorm(qA, T, a.qANorm!, LORA_NORM_EPS, ws.get('qAn', T * a.qA!.rows)), T, a.qB!, q);
    }
    const qr = ropeRows.q;
    k.rope(q, T * Hd, qk, nope, rope, qr.cos, qr.sin);

    // Latent rows [T, R] = [kv_a_layernorm(c_kv) | RoPE(k_pe)], stored in the cache.
    const kv = k.matmul(x, T, a.kvA, ws.get('kv', T * R));
    const kr = ropeRows.k;
    k.rope(kv, T, R, kvLora, rope, kr.cos, kr.sin);
    if (T === 1) {
      kv.set(k.rmsNorm(kv.subarray(0, kvLora), 1, a.kvANorm, LORA_NORM_EPS, ws.get('ckvN', kvLora)), 0);
    } else {
      const ckv = k.rmsNorm(gatherCols(kv, T, R, 0, kvLora, ws.get('ckv', T * kvLora)), T, a.kvANorm, LORA_NORM_EPS, ws.get('ckvN', T * kvLora));
      scatterCols(ckv, T, kvLora, kv, R, 0);
    }
    const kc = cache.layers[l]!;
    {
      let t = 0;
      for (const s of seqs) {
        for (let i = 0; i < s.numNew; i++, t++) kc.set(kv.subarray(t * R, (t + 1) * R), cache.rowOffset(s.blockTable, s.numCached + i));
      }
    }

    let o: Float32Array; // [T, Hd, v]
    if (form === 'naive') {
      o = naiveAttention(k, q, seqs, cache, l, Hd, nope, rope, vDim, a.kvB, this.#scale);
    } else if (prefersDecompressed(seqs)) {
      // Long prefills: the same attention decompressed (MHA through FlashMLA), a fraction of the work.
      o = decompressedAttention(k, q, seqs, cache, l, Hd, nope, rope, vDim, a.kvB, this.#scale, this.#mla, ws.get('o', T * Hd * vDim),
        (name, n) => ws.get(name, n));
    } else {
      // q_lat = q_nope · W_UK(h) per head, next to q_pe: [T, Hd, R] (FlashMLA's q).
      const qf = ws.get('qf', T * Hd * R);
      const scratch = (name: string, n: number) => ws.get(name, n);
      absorbQuery(k, ab, q, T, Hd, nope, rope, qf, scratch);
      const oLat = latentAttention(qf, seqs, cache, l, Hd, this.#scale, this.#mla, ws.get('oLat', T * Hd * kvLora)); // [T, Hd, kvLora]
      o = ws.get('o', T * Hd * vDim);
      absorbOutput(k, ab, oLat, T, Hd, o, scratch);
    }
    return k.matmul(o, T, a.o, ws.get('attnOut', T * c.hidden_size));
  }

  /** Dense MLP, or MoE = routed experts (through the executor) + shared experts. Returns [T, H]. */
  #ffn(l: number, lw: LayerWeights, x: Float32Array, T: number, opts: ForwardOptions): Float32Array {
    const k = this.#k;
    if (lw.dense) return mlp(k, lw.dense, x, T, this.#ws);
    const m = lw.moe!;
    const logits = k.matmul(x, T, m.router);
    const r = route(k, this.config, logits, T, m.bias);
    opts.onRouting?.(l, r.experts, r.weights);
    const y = this.#moe.run(l, x, T, r.experts, r.weights);
    if (m.shared) addInPlace(y, mlp(k, m.shared, x, T, this.#ws));
    return y;
  }
}

/** The FlashMLA kernel the model attends with: the wasm backend's SIMD kernel, else the plain-TS reference. */
async function flashMlaFor(k: Kernels, choice: 'auto' | 'ref' | 'wasm'): Promise<SyncFlashMlaKernel> {
  if (choice === 'wasm' || (choice === 'auto' && k.backend === 'wasm')) return WasmFlashMla.create({ threads: k.threads });
  return createRefFlashMla();
}

type RopeRows = { cos: Float32Array; sin: Float32Array };

function addInPlace(x: Float32Array, y: Float32Array): void {
  for (let i = 0; i < x.length; i++) x[i] = x[i]! + y[i]!;
}

/** Row `r` of an embedding matrix (f32 or bf16) widened into out[off..]. */
function widenRow(w: WeightMatrix, r: number, out: Float32Array, off: number): void {
  const K = w.cols;
  if (w.dtype === 'f32') {
    out.set(w.data.subarray(r * K, (r + 1) * K), off);
  } else if (w.dtype === 'bf16') {
    const bits = new Uint32Array(out.buffer, out.byteOffset + off * 4, K);
    for (let i = 0; i < K; i++) bits[i] = w.data[r * K + i]! << 16;
  } else {
    throw new ModelInputError('embedding must be f32 or bf16');
  }
}

export { isMoeLayer };
