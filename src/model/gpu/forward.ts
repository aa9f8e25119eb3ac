// The DeepSeek-V2/V3 forward pass resident on the GPU (WebGPU): the same story as deepseek.ts
//   embedding → for each layer: x += MLA(RMSNorm(x)); x += (MLP | MoE)(RMSNorm(x)) → RMSNorm → lm_head
// step for step, but every tensor is a GPU buffer (kernels/webgpu/resident.ts) and every op records its
// dispatches into ONE recorder per forward: weights are uploaded once at create() (FP8 one byte per
// parameter, scales beside it), activations, the paged latent cache and the MoE routing never leave the
// GPU, and the forward submits one command encoder and reads back only the logits.
//
// Why a second forward rather than deepseek.ts over GPU handles: the CPU forward moves data between ops
// with JS loops (residual adds, column gathers, cache writes, the router's scores, the expert plan), which
// a GPU-resident forward must express as dispatches; here each of those is one resident op, and the
// model's structure (norm → attention → norm → FFN, absorbed MLA per head, grouped experts) mirrors
// deepseek.ts / mla.ts / moe.ts line for line so the two stay comparable. Host work per forward is only
// what plans dispatches: positions, RoPE rows, cache slots, the FlashMLA schedule (all from the batch's
// shape, never from GPU results).
//
// Differences from the CPU forward: absorbed MLA only (naive is a CPU check); the MoE runs on the GPU
// (gate, counting sort, grouped GEMMs over the contiguous layout, weighted combine), not through a
// MoeExecutor (expert parallelism stays on the CPU backends). MTP modules (speculative decoding's drafter)
// run on the GPU too (mtpForward).
import type { GpuContext } from '../../kernels/webgpu/device.ts';
import { checkDevice, getDevice } from '../../kernels/webgpu/device.ts';
import { releaseResident } from '../../kernels/webgpu/buffers.ts';
import { sizeLimits, tooLarge } from '../../kernels/webgpu/split.ts';
import {
  addInPlace, combineExperts, copy2d, embedRows, expertPlan, flashMla, gatherRows, gemm, gpuCacheLayer, GpuRecorder, GpuWorkspace,
  moeGate, rmsNorm, rope, scatterRows, siluMul, uploadVector as uploadVectorTo, uploadWeight as uploadWeightTo, gpuWeightBytes, type GateArgs, type GpuCacheLayer, type GpuTensor, type GpuWeight,
} from '../../kernels/webgpu/resident.ts';
import { isMoeLayer, qkHeadDim, sharedIntermediate, softmaxScale, type DeepseekConfig } from '../config.ts';
import { LORA_NORM_EPS, ModelInputError, type DeepseekModel, type ForwardBatch } from '../deepseek.ts';
import { CACHE_BLOCK_SIZE, CacheError } from '../latent-cache.ts';
import { deriveAbsorbed, type SeqSlice } from '../mla.ts';
import { RopeTable } from '../rope.ts';
import type { LayerWeights, MlpWeights, ModelWeights } from '../weight-map.ts';
import type { GroupedWeight, Kernels, WeightMatrix } from '../../kernels/api.ts';

export interface GpuWeightReport { label: string; dtype: 'f32' | 'bf16' | 'fp8'; params: number; data: number; scales: number }

export interface GpuForwardOptions {
  /** Only 'absorb' runs on the GPU. */
  attn?: 'absorb' | 'naive';
  allPositions?: boolean;
  /** Logits of the last logitRows[i] new tokens of sequence i (0..numNew; default 1 each), as deepseek.ts. */
  logitRows?: readonly number[];
  /** Routing of every MoE layer, read back with the logits (costs a readback per MoE layer; for checks). */
  onRouting?: (layer: number, experts: Int32Array, weights: Float32Array) => void;
  /** The final hidden states [T, H] before the final norm (the MTP module's input), read back with the logits. */
  onHidden?: (hidden: Float32Array) => void;
}

/**
 * The paged latent cache on the GPU: per layer [numBlocks, 64, 1, rowDim] f32, in parts of whole blocks
 * that fit one binding each (one part unless the layer exceeds maxStorageBufferBindingSize).
 */
export class GpuLatentCache {
  readonly blockSize = CACHE_BLOCK_SIZE;
  readonly rowDim: number;
  readonly layers: GpuCacheLayer[];

  constructor(ctx: GpuContext, readonly numLayers: number, readonly numBlocks: number, readonly kvLoraRank: number, readonly ropeDim: number) {
    if (!Number.isSafeInteger(numBlocks) || numBlocks < 1) throw new CacheError(`numBlocks must be a positive integer, got ${numBlocks}`);
    this.rowDim = kvLoraRank + ropeDim;
    this.layers = Array.from({ length: numLayers }, (_, l) => gpuCacheLayer(ctx, numBlocks, this.rowDim, `latentCache:${l}`));
  }

  /** Row index (slot) of position `pos` of a sequence, checked against the block table. */
  slot(blockTable: Int32Array, pos: number): number {
    const bi = Math.floor(pos / CACHE_BLOCK_SIZE);
    if (bi >= blockTable.length) throw new CacheError(`position ${pos} needs block ${bi} but the block table has ${blockTable.length} entries`);
    const block = blockTable[bi]!;
    if (block < 0 || block >= this.numBlocks) throw new CacheError(`block id ${block} out of range [0, ${this.numBlocks})`);
    return block * CACHE_BLOCK_SIZE + (pos % CACHE_BLOCK_SIZE);
  }

  get byteLength(): number {
    return this.numLayers * this.numBlocks * CACHE_BLOCK_SIZE * this.rowDim * 4;
  }

  /** Binding-sized parts per layer (1 unless a layer exceeds maxStorageBufferBindingSize). */
  get partsPerLayer(): number {
    return this.layers[0]?.parts.length ?? 0;
  }

  destroy(): void {
    for (const l of this.layers) for (const t of l.parts) t.buffer.destroy();
  }
}

interface GpuMlp { gate: GpuWeight; up: GpuWeight; down: GpuWeight }
interface GpuMtp { enorm: GpuTensor; hnorm: GpuTensor; ehProj: GpuWeight; embed: GpuWeight; headNorm: GpuTensor; head: GpuWeight; block: GpuLayer }
interface GpuLayer {
  inputNorm: GpuTensor; postAttnNorm: GpuTensor;
  q?: GpuWeight; qA?: GpuWeight; qANorm?: GpuTensor; qB?: GpuWeight;
  kvA: GpuWeight; kvANorm: GpuTensor; o: GpuWeight;
  /** Absorbed kv_b per head: W_UK(h)ᵀ [kv_lora, nope] and W_UV(h) [v, kv_lora]. */
  kT: GpuWeight[]; v: GpuWeight[];
  dense?: GpuMlp;
  moe?: { router: GpuWeight; bias: GpuTensor | null; experts: GpuMlp; shared?: GpuMlp };
}

export class GpuDeepseekModel {
  readonly #ctx: GpuContext;
  readonly #layers: GpuLayer[];
  readonly #mtp: GpuMtp[];
  readonly #embed: GpuWeight;
  readonly #norm: GpuTensor;
  readonly #lmHead: GpuWeight;
  readonly #rope: RopeTable;
  readonly #scale: number;
  readonly #ws: GpuWorkspace;
  readonly #gate: GateArgs | null;
  /** f32 values of the widest activation tensor per token (what bounds a forward's tokens per binding). */
  readonly #tokenWidth: number;
  #owners: WeakRef<ArrayBufferView>[] = [];
  /**
   * Every weight and vector uploaded, with its GPU bytes: data (FP8 one byte per parameter, BF16 two, f32
   * four; padded to whole u32 words) and scales. A tied lm_head shares the embedding's buffers (listed twice).
   */
  weightReport: readonly GpuWeightReport[] = [];

  private constructor(readonly config: DeepseekConfig, ctx: GpuContext, layers: GpuLayer[], embed: GpuWeight, norm: GpuTensor, lmHead: GpuWeight, mtp: GpuMtp[]) {
    this.#ctx = ctx;
    this.#mtp = mtp;
    this.#layers = layers;
    this.#embed = embed;
    this.#norm = norm;
    this.#lmHead = lmHead;
    this.#rope = new RopeTable(config);
    this.#scale = softmaxScale(config);
    this.#ws = new GpuWorkspace(ctx);
    this.#gate = gateArgs(config);
    this.#tokenWidth = tokenWidth(config);
  }

  /**
   * Uploads the weights of a loaded model (its host copies, loaded through the `webgpu` kernel backend)
   * to the GPU, once. Routed experts must be loaded in the model (no expert parallelism on this path).
   */
  static create(model: DeepseekModel): Promise<GpuDeepseekModel> {
    return GpuDeepseekModel.fromWeights(model.config, model.weights, model.kernels);
  }

  /**
   * Uploads loaded weights (weight-map.ts loadWeights into host arrays through `k`, which also derives the
   * absorbed kv_b slices) to the GPU, once: what create() does without a DeepseekModel (a browser page
   * loads its weights from fetched bytes, src/model/gpu/load-bytes.ts).
   */
  static async fromWeights(c: DeepseekConfig, w: ModelWeights, k: Kernels): Promise<GpuDeepseekModel> {
    const ctx = await getDevice();
    const report: GpuWeightReport[] = [];
    // The host arrays whose GPU copies this model made, weakly (they are collectable once the host model
    // drops them): close() releases the copies of those still alive; the others went with their arrays.
    const owners: WeakRef<ArrayBufferView>[] = [];
    const uploadWeight = (m: WeightMatrix | GroupedWeight, label: string): GpuWeight => {
      const g = uploadWeightTo(ctx, m, label);
      owners.push(new WeakRef(m.data));
      if (m.dtype === 'fp8') owners.push(new WeakRef(m.scaleInv));
      report.push({ label, dtype: m.dtype, params: g.groups * g.rows * g.cols, ...gpuWeightBytes(g) });
      return g;
    };
    const uploadVector = (v: Float32Array, label: string): GpuTensor => {
      const t = uploadVectorTo(ctx, v, label);
      owners.push(new WeakRef(v));
      report.push({ label, dtype: 'f32', params: v.length, data: t.buffer.size, scales: 0 });
      return t;
    };
    if (w.embed.dtype === 'fp8') throw new ModelInputError('embedding must be f32 or bf16');
    const mlp = (m: MlpWeights, name: string): GpuMlp => ({
      gate: uploadWeight(m.gate, `${name}.gate`), up: uploadWeight(m.up, `${name}.up`), down: uploadWeight(m.down, `${name}.down`),
    });
    const uploadLayer = (lw: LayerWeights, l: number, name: string): GpuLayer => {
      const a = lw.attn;
      const ab = deriveAbsorbed(k, a.kvB, c.num_attention_heads, c.qk_nope_head_dim, c.v_head_dim);
      const layer: GpuLayer = {
        inputNorm: uploadVector(lw.inputNorm, `${name}.inputNorm`),
        postAttnNorm: uploadVector(lw.postAttnNorm, `${name}.postAttnNorm`),
        kvA: uploadWeight(a.kvA, `${name}.kvA`),
        kvANorm: uploadVector(a.kvANorm, `${name}.kvANorm`),
        o: uploadWeight(a.o, `${name}.o`),
        kT: ab.kT.map((m, h) => uploadWeight(m, `${name}.kT${h}`)),
        v: ab.v.map((m, h) => uploadWeight(m, `${name}.v${h}`)),
      };
      if (a.q) layer.q = uploadWeight(a.q, `${name}.q`);
      else {
        layer.qA = uploadWeight(a.qA!, `${name}.qA`);
        layer.qANorm = uploadVector(a.qANorm!, `${name}.qANorm`);
        layer.qB = uploadWeight(a.qB!, `${name}.qB`);
      }
      if (lw.dense) layer.dense = mlp(lw.dense, `${name}.mlp`);
      else {
        const m = lw.moe!;
        if (!m.experts) throw new ModelInputError(`layer ${l}: routed experts not loaded; the WebGPU forward runs them itself`);
        const experts: GpuMlp = {
          gate: uploadWeight(m.experts.gate, `${name}.experts.gate`), up: uploadWeight(m.experts.up, `${name}.experts.up`),
          down: uploadWeight(m.experts.down, `${name}.experts.down`),
        };
        layer.moe = {
          router: uploadWeight(m.router, `${name}.router`),
          bias: c.topk_method === 'noaux_tc' ? uploadVector(requireBias(m.bias, l), `${name}.bias`) : null,
          experts, ...(m.shared ? { shared: mlp(m.shared, `${name}.shared`) } : {}),
        };
      }
      return layer;
    };
    const layers = w.layers.map((lw, l) => uploadLayer(lw, l, `layers.${l}`));
    const embed = uploadWeight(w.embed, 'embed'), lmHead = uploadWeight(w.lmHead, 'lmHead');
    // MTP modules (when loaded): the drafter of speculative decoding, stored as layers num_hidden_layers + j.
    const mtp = w.mtp.map((mw, j): GpuMtp => {
      const name = `mtp.${j}`;
      return {
        enorm: uploadVector(mw.enorm, `${name}.enorm`), hnorm: uploadVector(mw.hnorm, `${name}.hnorm`),
        ehProj: uploadWeight(mw.ehProj, `${name}.ehProj`), embed: mw.embed ? uploadWeight(mw.embed, `${name}.embed`) : embed,
        headNorm: uploadVector(mw.headNorm, `${name}.headNorm`), head: mw.head ? uploadWeight(mw.head, `${name}.head`) : lmHead,
        block: uploadLayer(mw.block, c.num_hidden_layers + j, `${name}.block`),
      };
    });
    const gpu = new GpuDeepseekModel(c, ctx, layers, embed, uploadVector(w.norm, 'norm'), lmHead, mtp);
    gpu.weightReport = report;
    gpu.#owners = owners;
    return gpu;
  }

  /** Number of MTP modules uploaded (0 unless the weights were loaded with their MTP modules). */
  get mtpModules(): number {
    return this.#mtp.length;
  }

  /** A one-layer GPU latent cache for MTP module attention (indexed like the main cache). */
  createMtpCache(numBlocks: number): GpuLatentCache {
    const c = this.config;
    return new GpuLatentCache(this.#ctx, 1, numBlocks, c.kv_lora_rank, c.qk_rope_head_dim);
  }

  /**
   * MTP module `j` on the GPU, as deepseek.ts mtpForward: x_i = eh_proj([enorm(Emb(tokens[i])) ;
   * hnorm(hidden[i])]), the module's decoder block over `cache` (createMtpCache), then shared_head.norm and
   * the head. Returns the draft logits and the block's output hidden states (before the head norm) of the
   * same rows (the last new position of each sequence, or logitRows / allPositions).
   */
  async mtpForward(batch: ForwardBatch, hidden: Float32Array, cache: GpuLatentCache,
    opts: { module?: number; allPositions?: boolean; logitRows?: readonly number[] } = {}): Promise<{ logits: Float32Array; hidden: Float32Array }> {
    checkDevice(this.#ctx);
    const c = this.config;
    const j = opts.module ?? 0;
    const mw = this.#mtp[j];
    if (!mw) throw new ModelInputError(`mtpForward: no MTP module ${j} loaded (${this.#mtp.length} loaded)`);
    const T = validate(c, batch, cache, 1);
    const H = c.hidden_size;
    if (hidden.length !== T * H) throw new ModelInputError(`mtpForward: hidden has ${hidden.length} floats, expected ${T}x${H}`);
    const lim = sizeLimits(this.#ctx);
    if (T * 4 * Math.max(this.#tokenWidth, 2 * H) > lim.storage) throw tooLarge(lim, 'mtpForward:activations', `${T} tokens' activations`, T * 4 * Math.max(this.#tokenWidth, 2 * H));
    const rec = new GpuRecorder(this.#ctx, 'mtpForward');
    const rp = this.#positions(rec, batch, cache, T);
    const ws = this.#ws;
    // [enorm(e) ; hnorm(h)] as [T, 2H], then eh_proj.
    const e = ws.get('mtpE', T * H), hb = ws.get('mtpH', T * H), cat = ws.get('mtpCat', T * 2 * H), x = ws.get('mtpX', T * H);
    await embedRows(rec, mw.embed, rec.upload(batch.tokens, 'tokens'), T, e);
    await copy2d(rec, rec.upload(hidden, 'mtp:hidden'), H, 0, hb, H, 0, T, H);
    await rmsNorm(rec, e, T, mw.enorm, c.rms_norm_eps, cat, { ys: 2 * H, yo: 0 });
    await rmsNorm(rec, hb, T, mw.hnorm, c.rms_norm_eps, cat, { ys: 2 * H, yo: H });
    await gemm(rec, { a: cat, rows: T, w: mw.ehProj, out: x });
    const lw = mw.block;
    const normed = ws.get('normed', T * H);
    await rmsNorm(rec, x, T, lw.inputNorm, c.rms_norm_eps, normed);
    await addInPlace(rec, x, await this.#attention(rec, 0, lw, normed, T, rp, batch.seqs, cache), T * H);
    await rmsNorm(rec, x, T, lw.postAttnNorm, c.rms_norm_eps, normed);
    await addInPlace(rec, x, await this.#ffn(rec, c.num_hidden_layers + j, lw, normed, T, null), T * H);
    const idx = opts.allPositions ? null : lastRows(batch, T, opts.logitRows);
    const rows = idx ? idx.length : T;
    let last = x;
    if (idx && rows !== T) {
      last = ws.get('mtpLast', Math.max(1, rows) * H);
      if (rows > 0) await gatherRows(rec, x, rec.upload(idx, 'lastRows'), rows, H, last);
    }
    if (rows === 0) {
      await rec.finish();
      ws.collect();
      return { logits: new Float32Array(0), hidden: new Float32Array(0) };
    }
    const h = ws.get('finalNormed', rows * H);
    await rmsNorm(rec, last, rows, mw.headNorm, c.rms_norm_eps, h);
    const logits = ws.get('logits', rows * c.vocab_size);
    await gemm(rec, { a: h, rows, w: mw.head, out: logits });
    const [lg, hd] = await rec.finish([{ tensor: logits, length: rows * c.vocab_size }, { tensor: last, length: rows * H }]);
    ws.collect();
    return { logits: new Float32Array(lg!), hidden: new Float32Array(hd!) };
  }

  /** Positions' RoPE rows and cache slots of a batch, uploaded for the recorder. */
  #positions(rec: GpuRecorder, batch: ForwardBatch, cache: GpuLatentCache, T: number) {
    const positions = new Int32Array(T), slots = new Int32Array(T);
    let t = 0;
    for (const s of batch.seqs) {
      for (let i = 0; i < s.numNew; i++, t++) {
        positions[t] = s.numCached + i;
        slots[t] = cache.slot(s.blockTable, s.numCached + i);
      }
    }
    const Hd = this.config.num_attention_heads;
    const qRows = this.#rope.rows(positions, Hd), kRows = this.#rope.rows(positions, 1);
    return {
      qCos: rec.upload(qRows.cos, 'rope:qCos'), qSin: rec.upload(qRows.sin, 'rope:qSin'),
      kCos: rec.upload(kRows.cos, 'rope:kCos'), kSin: rec.upload(kRows.sin, 'rope:kSin'),
      slots: rec.upload(slots, 'cache:slots'),
    };
  }

  createCache(numBlocks: number): GpuLatentCache {
    const c = this.config;
    return new GpuLatentCache(this.#ctx, c.num_hidden_layers, numBlocks, c.kv_lora_rank, c.qk_rope_head_dim);
  }

  /** Logits [numSeqs, vocab] (last new token of each sequence) or [T, vocab] with allPositions. */
  async forward(batch: ForwardBatch, cache: GpuLatentCache, opts: GpuForwardOptions = {}): Promise<Float32Array> {
    if ((opts.attn ?? 'absorb') !== 'absorb') throw new ModelInputError('the WebGPU forward computes absorbed MLA only (--attn absorb)');
    // A lost device is a typed error (WebGpuDeviceLostError) before anything is recorded on it.
    checkDevice(this.#ctx);
    const c = this.config;
    const T = validate(c, batch, cache);
    const wanted = opts.allPositions ? T : lastRows(batch, T, opts.logitRows).length;
    // Activations are bound whole: a batch whose widest per-token tensor (or logits) exceeds a binding runs
    // as consecutive sub-forwards over pieces of its sequences (chunked prefill: a later piece reads the
    // earlier ones' latents from the cache).
    const lim = sizeLimits(this.#ctx);
    const tokenBytes = 4 * this.#tokenWidth, rowBytes = 4 * c.vocab_size;
    if (tokenBytes > lim.storage) throw tooLarge(lim, 'forward:activations', `one token's widest activation (${this.#tokenWidth} f32)`, tokenBytes);
    if (rowBytes > lim.storage) throw tooLarge(lim, 'forward:logits', `one row of logits (${c.vocab_size} f32)`, rowBytes);
    const maxT = Math.floor(lim.storage / tokenBytes), maxRows = Math.floor(lim.storage / rowBytes);
    if (T <= maxT && wanted <= maxRows) return this.#forwardOnce(batch, cache, opts, T);
    return this.#forwardPieces(batch, cache, opts, Math.min(maxT, maxRows));
  }

  /** forward() in sub-forwards of at most `maxT` tokens (and logit rows), pieces of sequences in order. */
  async #forwardPieces(batch: ForwardBatch, cache: GpuLatentCache, opts: GpuForwardOptions, maxT: number): Promise<Float32Array> {
    type Piece = { seq: SeqSlice; tokens: Int32Array; rows: number };
    const pieces: Piece[] = [];
    let t0 = 0;
    batch.seqs.forEach((s, i) => {
      const want = opts.allPositions ? s.numNew : (opts.logitRows?.[i] ?? 1);
      for (let a = 0; a < s.numNew; a += maxT) {
        const b = Math.min(s.numNew, a + maxT);
        pieces.push({
          seq: { blockTable: s.blockTable, numCached: s.numCached + a, numNew: b - a },
          tokens: batch.tokens.subarray(t0 + a, t0 + b),
          rows: Math.max(0, b - Math.max(a, s.numNew - want)), // the wanted suffix's rows inside [a, b)
        });
      }
      t0 += s.numNew;
    });
    const parts: Float32Array[] = [];
    const hiddens: Float32Array[] = [];
    const routing = new Map<number, { experts: Int32Array[]; weights: Float32Array[] }>();
    for (let i = 0; i < pieces.length;) {
      const group: Piece[] = [];
      let n = 0;
      while (i < pieces.length && n + pieces[i]!.seq.numNew <= maxT) { n += pieces[i]!.seq.numNew; group.push(pieces[i++]!); }
      const sub: ForwardBatch = { tokens: Int32Array.from(group.flatMap((p) => Array.from(p.tokens))), seqs: group.map((p) => p.seq) };
      parts.push(await this.#forwardOnce(sub, cache, {
        logitRows: group.map((p) => p.rows),
        ...(opts.onHidden ? { onHidden: (h: Float32Array) => { hiddens.push(h); } } : {}),
        ...(opts.onRouting ? {
          onRouting: (l: number, e: Int32Array, w: Float32Array) => {
            const r = routing.get(l) ?? { experts: [], weights: [] };
            r.experts.push(e); r.weights.push(w);
            routing.set(l, r);
          },
        } : {}),
      }, n));
    }
    for (const [l, r] of routing) opts.onRouting!(l, concat(r.experts, Int32Array), concat(r.weights, Float32Array));
    opts.onHidden?.(concat(hiddens, Float32Array));
    return concat(parts, Float32Array);
  }

  async #forwardOnce(batch: ForwardBatch, cache: GpuLatentCache, opts: GpuForwardOptions, T: number): Promise<Float32Array> {
    const c = this.config;
    const H = c.hidden_size;
    const rec = new GpuRecorder(this.#ctx, 'forward');
    const rp = this.#positions(rec, batch, cache, T);
    const ws = this.#ws;
    const x = ws.get('x', T * H);
    await embedRows(rec, this.#embed, rec.upload(batch.tokens, 'tokens'), T, x);
    const normed = ws.get('normed', T * H);
    const routing: { layer: number; experts: GpuTensor; weights: GpuTensor }[] = [];
    for (let l = 0; l < c.num_hidden_layers; l++) {
      const lw = this.#layers[l]!;
      await rmsNorm(rec, x, T, lw.inputNorm, c.rms_norm_eps, normed);
      const attnOut = await this.#attention(rec, l, lw, normed, T, rp, batch.seqs, cache);
      await addInPlace(rec, x, attnOut, T * H);
      await rmsNorm(rec, x, T, lw.postAttnNorm, c.rms_norm_eps, normed);
      const ffnOut = await this.#ffn(rec, l, lw, normed, T, opts.onRouting ? routing : null);
      await addInPlace(rec, x, ffnOut, T * H);
    }
    // Final norm and lm_head only on the rows whose logits are wanted.
    const idx = opts.allPositions ? null : lastRows(batch, T, opts.logitRows);
    const rows = idx ? idx.length : T;
    let last = x;
    if (idx && rows !== T) {
      last = ws.get('last', Math.max(1, rows) * H);
      await gatherRows(rec, x, rec.upload(idx, 'lastRows'), rows, H, last);
    }
    // The hidden states before the final norm (what the MTP module reads), when asked for: one more readback.
    const hiddenRead = opts.onHidden ? [{ tensor: x, length: T * H }] : [];
    if (rows === 0) {
      const got = await rec.finish([...hiddenRead, ...routingReads(routing, T, c.num_experts_per_tok ?? 0)]);
      ws.collect();
      const o = hiddenRead.length;
      if (opts.onHidden) opts.onHidden(new Float32Array(got[0]!));
      routing.forEach((r, i) => opts.onRouting!(r.layer, new Int32Array(got[o + 2 * i]!), new Float32Array(got[o + 1 + 2 * i]!)));
      return new Float32Array(0);
    }
    const h = ws.get('finalNormed', rows * H);
    await rmsNorm(rec, last, rows, this.#norm, c.rms_norm_eps, h);
    const V = c.vocab_size;
    const logits = ws.get('logits', rows * V);
    await gemm(rec, { a: h, rows, w: this.#lmHead, out: logits });
    const reads = [{ tensor: logits, length: rows * V }, ...hiddenRead, ...routingReads(routing, T, c.num_experts_per_tok ?? 0)];
    const got = await rec.finish(reads);
    ws.collect();
    const o = 1 + hiddenRead.length;
    if (opts.onHidden) opts.onHidden(new Float32Array(got[1]!));
    routing.forEach((r, i) => opts.onRouting!(r.layer, new Int32Array(got[o + 2 * i]!), new Float32Array(got[o + 1 + 2 * i]!)));
    return new Float32Array(got[0]!);
  }

  /** Frees the GPU copies of the activations and of the weights (the model cannot run afterwards). */
  close(): void {
    this.#ws.destroy();
    // The weights' GPU copies too (shared with nothing else of this model's; a new model uploads afresh).
    for (const r of this.#owners.splice(0)) {
      const a = r.deref();
      if (a) releaseResident(this.#ctx, a);
    }
  }

  // ------------------------------------------------------------------ pieces of the story

  async #attention(rec: GpuRecorder, l: number, lw: GpuLayer, x: GpuTensor, T: number,
    rp: { qCos: GpuTensor; qSin: GpuTensor; kCos: GpuTensor; kSin: GpuTensor; slots: GpuTensor },
    seqs: readonly SeqSlice[], cache: GpuLatentCache): Promise<GpuTensor> {
    const c = this.config;
    const ws = this.#ws;
    const Hd = c.num_attention_heads;
    const nope = c.qk_nope_head_dim, ropeDim = c.qk_rope_head_dim, vDim = c.v_head_dim, kvLora = c.kv_lora_rank;
    const qk = qkHeadDim(c);
    const R = kvLora + ropeDim;
    // Queries [T, Hd, nope + rope]; RoPE on the rope part of every head.
    const q = ws.get('q', T * Hd * qk);
    if (lw.q) await gemm(rec, { a: x, rows: T, w: lw.q, out: q });
    else {
      const qA = ws.get('qA', T * lw.qA!.rows);
      await gemm(rec, { a: x, rows: T, w: lw.qA!, out: qA });
      await rmsNorm(rec, qA, T, lw.qANorm!, LORA_NORM_EPS, qA);
      await gemm(rec, { a: qA, rows: T, w: lw.qB!, out: q });
    }
    await rope(rec, q, T * Hd, qk, nope, ropeDim, rp.qCos, rp.qSin);
    // Latent rows [T, R] = [kv_a_layernorm(c_kv) | RoPE(k_pe)], written into the paged cache.
    const kv = ws.get('kv', T * R);
    await gemm(rec, { a: x, rows: T, w: lw.kvA, out: kv });
    await rope(rec, kv, T, R, kvLora, ropeDim, rp.kCos, rp.kSin);
    await rmsNorm(rec, kv, T, lw.kvANorm, LORA_NORM_EPS, kv, { xs: R, ys: R });
    const layer = cache.layers[l]!;
    await scatterRows(rec, kv, rp.slots, T, R, { parts: layer.parts, perPart: layer.blocksPerPart * CACHE_BLOCK_SIZE });
    // q_lat = q_nope · W_UK(h) per head, next to q_pe: [T, Hd, R] (FlashMLA's q).
    const qf = ws.get('qf', T * Hd * R);
    for (let h = 0; h < Hd; h++) {
      await gemm(rec, { a: q, lda: Hd * qk, a0: h * qk, rows: T, w: lw.kT[h]!, out: qf, ldo: Hd * R, n0: h * R });
    }
    await copy2d(rec, q, qk, nope, qf, R, kvLora, T * Hd, ropeDim);
    const oLat = ws.get('oLat', T * Hd * kvLora);
    await this.#latentAttention(rec, qf, seqs, layer, cache, Hd, oLat);
    const o = ws.get('o', T * Hd * vDim);
    for (let h = 0; h < Hd; h++) {
      await gemm(rec, { a: oLat, lda: Hd * kvLora, a0: h * kvLora, rows: T, w: lw.v[h]!, out: o, ldo: Hd * vDim, n0: h * vDim });
    }
    const out = ws.get('attnOut', T * c.hidden_size);
    await gemm(rec, { a: o, rows: T, w: lw.o, out });
    return out;
  }

  /**
   * Absorbed attention (mla.ts latentAttention): sequences with the same number of new tokens form one
   * FlashMLA call; when one group holds every sequence, q and the output are used in place.
   */
  async #latentAttention(rec: GpuRecorder, q: GpuTensor, seqs: readonly SeqSlice[], layer: GpuCacheLayer, cache: GpuLatentCache, heads: number, o: GpuTensor): Promise<void> {
    const R = cache.rowDim, dv = cache.kvLoraRank;
    const starts: number[] = [];
    let t0 = 0;
    for (const s of seqs) { starts.push(t0); t0 += s.numNew; }
    const groups = new Map<number, number[]>();
    seqs.forEach((s, i) => { const g = groups.get(s.numNew); if (g) g.push(i); else groups.set(s.numNew, [i]); });
    for (const [sQ, idx] of groups) {
      const b = idx.length;
      const whole = b === seqs.length;
      const qLen = sQ * heads * R, oLen = sQ * heads * dv;
      const qb = whole ? q : rec.scratch(b * qLen, 'mla:qGroup');
      const ob = whole ? o : rec.scratch(b * oLen, 'mla:oGroup');
      const maxBlocks = Math.max(...idx.map((i) => Math.ceil((seqs[i]!.numCached + seqs[i]!.numNew) / CACHE_BLOCK_SIZE)));
      const blockTable = new Int32Array(b * maxBlocks);
      const cacheSeqlens = new Int32Array(b);
      for (const [j, i] of idx.entries()) {
        const s = seqs[i]!;
        if (!whole) await copy2d(rec, q, 0, starts[i]! * heads * R, qb, 0, j * qLen, 1, qLen);
        const nb = Math.ceil((s.numCached + s.numNew) / CACHE_BLOCK_SIZE);
        blockTable.set(s.blockTable.subarray(0, nb), j * maxBlocks);
        cacheSeqlens[j] = s.numCached + s.numNew;
      }
      await flashMla(rec, {
        q: qb, batch: b, seqLenQ: sQ, numHeadsQ: heads, kCache: layer, dQK: R,
        blockTable, cacheSeqlens, dV: dv, softmaxScale: this.#scale, causal: true, out: ob,
      });
      if (!whole) {
        for (const [j, i] of idx.entries()) await copy2d(rec, ob, 0, j * oLen, o, 0, starts[i]! * heads * dv, 1, oLen);
      }
    }
  }

  /** Dense MLP, or MoE = routed experts (gate, plan, grouped GEMMs, combine) + shared experts. */
  async #ffn(rec: GpuRecorder, l: number, lw: GpuLayer, x: GpuTensor, T: number,
    routing: { layer: number; experts: GpuTensor; weights: GpuTensor }[] | null): Promise<GpuTensor> {
    const c = this.config;
    const H = c.hidden_size;
    const ws = this.#ws;
    const out = ws.get('ffnOut', T * H);
    if (lw.dense) {
      await this.#mlp(rec, lw.dense, x, T, out, 'mlp');
      return out;
    }
    const m = lw.moe!;
    const E = m.router.rows;
    const K = c.num_experts_per_tok!;
    const logits = ws.get('routerLogits', T * E);
    await gemm(rec, { a: x, rows: T, w: m.router, out: logits });
    // Per-layer routing tensors only when they are read back.
    const experts = routing ? rec.scratch(T * K, `topkIdx${l}`) : ws.get('topkIdx', T * K);
    const weights = routing ? rec.scratch(T * K, `topkW${l}`) : ws.get('topkW', T * K);
    await moeGate(rec, logits, T, m.bias, this.#gate!, experts, weights);
    routing?.push({ layer: l, experts, weights });
    const A = T * K;
    const rowToken = ws.get('rowToken', A), rowExpert = ws.get('rowExpert', A), rowOf = ws.get('rowOf', A);
    await expertPlan(rec, experts, A, K, E, rowToken, rowExpert, rowOf);
    const xs = ws.get('xs', A * H);
    await gatherRows(rec, x, rowToken, A, H, xs);
    const ex = m.experts;
    const I = ex.gate.rows;
    const g = ws.get('exG', A * I), u = ws.get('exU', A * I), hcat = ws.get('exH', A * I), y = ws.get('exY', A * H);
    await gemm(rec, { a: xs, rows: A, w: ex.gate, out: g, groupIndex: rowExpert });
    await gemm(rec, { a: xs, rows: A, w: ex.up, out: u, groupIndex: rowExpert });
    await siluMul(rec, g, u, hcat, A * I);
    await gemm(rec, { a: hcat, rows: A, w: ex.down, out: y, groupIndex: rowExpert });
    await combineExperts(rec, y, weights, rowOf, T, H, K, out);
    if (m.shared) {
      const sh = ws.get('sharedOut', T * H);
      await this.#mlp(rec, m.shared, x, T, sh, 'shared');
      await addInPlace(rec, out, sh, T * H);
    }
    return out;
  }

  async #mlp(rec: GpuRecorder, w: GpuMlp, x: GpuTensor, m: number, out: GpuTensor, name: string): Promise<void> {
    const I = w.gate.rows;
    const ws = this.#ws;
    const g = ws.get(`${name}G`, m * I), u = ws.get(`${name}U`, m * I), h = ws.get(`${name}H`, m * I);
    await gemm(rec, { a: x, rows: m, w: w.gate, out: g });
    await gemm(rec, { a: x, rows: m, w: w.up, out: u });
    await siluMul(rec, g, u, h, m * I);
    await gemm(rec, { a: h, rows: m, w: w.down, out });
  }
}

/** Values per token of each activation tensor of the forward: the widest bounds the tokens per binding. */
function tokenWidth(c: DeepseekConfig): number {
  const Hd = c.num_attention_heads;
  const R = c.kv_lora_rank + c.qk_rope_head_dim;
  const K = c.num_experts_per_tok ?? 0;
  return Math.max(
    c.hidden_size, Hd * qkHeadDim(c), Hd * R, Hd * c.kv_lora_rank, Hd * c.v_head_dim, c.q_lora_rank ?? 0, c.intermediate_size,
    sharedIntermediate(c), c.n_routed_experts ?? 0, K * c.hidden_size, K * (c.moe_intermediate_size ?? 0), Hd * c.qk_rope_head_dim / 2,
  );
}

function concat<T extends Float32Array | Int32Array>(parts: readonly T[], C: new (n: number) => T): T {
  const out = new C(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function routingReads(routing: readonly { experts: GpuTensor; weights: GpuTensor }[], T: number, K: number): { tensor: GpuTensor; length: number }[] {
  return routing.flatMap((r) => [{ tensor: r.experts, length: T * K }, { tensor: r.weights, length: T * K }]);
}

/**
 * Row indices (into the T new tokens) whose logits are wanted: each sequence's last new token, or its last
 * logitRows[i] (deepseek.ts #lastRows rules and errors).
 */
function lastRows(batch: ForwardBatch, T: number, logitRows?: readonly number[]): Int32Array {
  const n = batch.seqs.length;
  if (logitRows && logitRows.length !== n) throw new ModelInputError(`forward: logitRows has ${logitRows.length} entries for ${n} sequences`);
  const out: number[] = [];
  let end = 0;
  for (let i = 0; i < n; i++) {
    const s = batch.seqs[i]!;
    end += s.numNew;
    const r = logitRows ? logitRows[i]! : 1;
    if (!Number.isSafeInteger(r) || r < 0 || r > s.numNew) throw new ModelInputError(`forward: logitRows[${i}] must be an integer in [0, ${s.numNew}], got ${r}`);
    for (let j = end - r; j < end; j++) out.push(j);
  }
  if (end !== T) throw new ModelInputError(`forward: ${T} tokens for ${end} new positions`);
  return Int32Array.from(out);
}

function requireBias(b: Float32Array | undefined, l: number): Float32Array {
  if (!b) throw new ModelInputError(`layer ${l}: noaux_tc routing needs e_score_correction_bias`);
  return b;
}

/** The MoE gate of the config (moe.ts `route` semantics), or null for a dense model. */
function gateArgs(c: DeepseekConfig): GateArgs | null {
  let anyMoe = false;
  for (let l = 0; l < c.num_hidden_layers; l++) anyMoe ||= isMoeLayer(c, l);
  if (!anyMoe) return null;
  const K = c.num_experts_per_tok!;
  const grouped = c.topk_method !== 'greedy' && c.n_group! > 1;
  const norm = K > 1 && !!c.norm_topk_prob;
  return {
    variant: {
      experts: c.n_routed_experts!, k: K, scoring: c.scoring_func === 'softmax' ? 'softmax' : 'sigmoid',
      method: !grouped ? 'greedy' : c.topk_method === 'group_limited_greedy' ? 'group_max' : 'group_top2',
      groups: grouped ? c.n_group! : 1, topkGroup: grouped ? c.topk_group! : 1, bias: c.topk_method === 'noaux_tc',
    },
    norm,
    mul: norm && c.model_type === 'deepseek_v2' ? 1 : c.routed_scaling_factor,
  };
}

/** deepseek.ts #validate for a GPU cache: the number of new tokens T. */
function validate(c: DeepseekConfig, batch: ForwardBatch, cache: GpuLatentCache, cacheLayers = c.num_hidden_layers): number {
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
  if (cache.numLayers !== cacheLayers || cache.kvLoraRank !== c.kv_lora_rank || cache.ropeDim !== c.qk_rope_head_dim) {
    throw new ModelInputError('forward: cache was not created for this model');
  }
  return T;
}

