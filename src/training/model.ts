// The DeepSeek-V3-architecture training forward on the autograd, the same computation as the inference
// model (model/deepseek.ts forward and mtpForward, naive MLA form) for whole training windows:
//   x = Emb(t) → per layer: x += MLA(RMSNorm(x)); x += (MLP | MoE)(RMSNorm(x)) → h;
//   logits = lm_head(RMSNorm(h))                                      main next-token loss
//   MTP module k = 1..D (§2.2): h^k_i = Block_k(eh_proj([enorm(Emb(t_{i+k})) ; hnorm(h^{k-1}_i)])),
//   logits^k_i = head(shared_head.norm(h^k_i)) predicts t_{i+k+1}       λ/D · Σ_k CE_k
//   + Σ over MoE layers of the sequence-wise balance loss (α).
// A batch is a list of windows of n_s + 1 tokens: inputs w[0..n_s), next-token targets w[1..n_s].
// Shapes: T = Σ n_s tokens, H hidden, V vocabulary, Hd heads. f32 tensors compute their products on the
// kernels (gemm.ts); f64 tensors (gradient checks) on float64 loops — same code.
// Reference: DeepSeek-V3 technical report, arXiv 2412.19437 (§2.1 MLA, DeepSeekMoE, balancing; §2.2 MTP).
import { LORA_NORM_EPS } from '../model/deepseek.ts';
import { qkHeadDim, softmaxScale, type DeepseekConfig } from '../model/config.ts';
import { planByExpert } from '../model/moe.ts';
import { RopeTable } from '../model/rope.ts';
import { add, crossEntropy, rmsNorm, type Tensor, type WeightGradStore } from '../tensor/autograd/index.ts';
import type { Gemm } from './gemm.ts';
import { mlaAttention } from './attention.ts';
import { combineExperts, routingWeights, seqBalanceLoss } from './moe-ops.ts';
import { concatCols, embedding, groupedLinear, linear, rope, scale, sigmoid, sliceCols, sumScalars, swiglu, takeRows } from './ops.ts';
import type { LayerParams, MlpParams, MoeParams, TrainParams } from './params.ts';
import { expertLoad, routingShape, selectExperts } from './routing.ts';

export interface TrainLossOptions {
  /** MTP loss weight λ (DeepSeek-V3: 0.3 for the first 10T tokens, then 0.1). Default 0.3. */
  mtpLambda?: number;
  /**
   * Sequence-wise balance loss factor α (DeepSeek-V3: 0.0001, its "extremely small" value). Default 0.0001.
   * (config.json's aux_loss_alpha is not part of the parsed config; a trainer that wants it passes it here.)
   */
  balanceAlpha?: number;
}

export interface ForwardResult {
  /** The training objective: main CE + λ/D Σ CE_k + Σ balance losses (one element). */
  loss: Tensor;
  /** Its parts (plain numbers, for logs). */
  mainLoss: number;
  mtpLosses: number[];
  balanceLoss: number;
  /** Main logits [T, V] (all positions) and the final hidden states before the norm [T, H]. */
  logits: Tensor;
  hidden: Tensor;
  /** MTP module k's logits [Σ (n_s − k), V] (positions 0..n_s − k − 1 of each window). */
  mtpLogits: Tensor[];
  /** Routed tokens per expert of each MoE layer this forward (layer index → load [E]; MTP blocks at L + j). */
  loads: Map<number, Int32Array>;
}

/** A batch laid out for the layers: T = Σ n_s tokens of windows of n_s + 1 tokens. */
export interface TrainBatch {
  windows: readonly Int32Array[];
  /** n_s per window. */
  seqLens: number[];
  /** [T] w[0..n_s) of each window, [T] w[1..n_s], [T] the position i of each token in its window. */
  inputs: Int32Array;
  targets: Int32Array;
  positions: Int32Array;
}

/** What MoE layers report besides their output: routed tokens per expert, sequence-wise balance-loss terms. */
export interface LayerAux {
  loads: Map<number, Int32Array>;
  balance: Tensor[];
}

export class TrainInputError extends Error {
  override name = 'TrainInputError';
  readonly exitCode = 2;
}

export class TrainModel {
  readonly #rope: RopeTable;
  readonly #scale: number;
  readonly mtpLambda: number;
  readonly balanceAlpha: number;
  /** Set by the pipeline runtime to defer weight gradients (DualPipe's W step). */
  store: WeightGradStore | null = null;
  /**
   * FP8 mixed precision (fp8.ts): the products of the attention projections, dense MLPs and experts
   * (Fprop, Dgrad, Wgrad). Null: f32. The router, lm_head, eh_proj and attention's own products stay f32.
   */
  fp8: Gemm | null = null;

  constructor(readonly config: DeepseekConfig, readonly params: TrainParams, readonly gemm: Gemm, opts: TrainLossOptions = {}) {
    this.#rope = new RopeTable(config);
    this.#scale = softmaxScale(config);
    this.mtpLambda = opts.mtpLambda ?? 0.3;
    this.balanceAlpha = opts.balanceAlpha ?? 0.0001;
    if (config.n_routed_experts !== null) routingShape(config);
  }

  /** Checks a batch of windows (each ≥ 2 tokens) and lays out its inputs, targets and positions. */
  batch(windows: readonly Int32Array[]): TrainBatch {
    const c = this.config;
    if (windows.length === 0) throw new TrainInputError('empty batch');
    for (const w of windows) {
      if (w.length < 2) throw new TrainInputError(`a window of ${w.length} tokens (need at least 2)`);
      for (const id of w) if (!(id >= 0 && id < c.vocab_size)) throw new TrainInputError(`token id ${id} outside [0, ${c.vocab_size})`);
    }
    const seqLens = windows.map((w) => w.length - 1);
    const T = seqLens.reduce((a, b) => a + b, 0);
    const inputs = new Int32Array(T), targets = new Int32Array(T), positions = new Int32Array(T);
    let t = 0;
    for (const w of windows) for (let i = 0; i + 1 < w.length; i++, t++) { inputs[t] = w[i]!; targets[t] = w[i + 1]!; positions[t] = i; }
    return { windows, seqLens, inputs, targets, positions };
  }

  /** The token embeddings x [T, H] (the first pipeline stage's start). */
  embed(b: TrainBatch): Tensor {
    return embedding(this.params.embed, b.inputs);
  }

  /**
   * Decoder layers [from, to) on the residual stream x [T, H] (a pipeline stage's body). MoE layers add
   * their expert loads and balance-loss terms to `aux`; a stage that does not compute the final loss
   * back-propagates its own terms (their sum with gradient 1) together with its output.
   */
  layers(b: TrainBatch, x: Tensor, from: number, to: number, aux: LayerAux): Tensor {
    const c = this.config;
    if (!(from >= 0 && from <= to && to <= c.num_hidden_layers)) throw new RangeError(`layers [${from}, ${to}) outside [0, ${c.num_hidden_layers}]`);
    for (let l = from; l < to; l++) x = this.#block(l, this.params.layers[l]!, x, b.positions, b.seqLens, aux.loads, aux.balance);
    return x;
  }

  /** Forward of a batch of windows (each ≥ 2 tokens); MTP modules run where windows are long enough. */
  forward(windows: readonly Int32Array[], opts: { mtp?: boolean } = {}): ForwardResult {
    const b = this.batch(windows);
    const aux: LayerAux = { loads: new Map(), balance: [] };
    return this.head(b, this.layers(b, this.embed(b), 0, this.config.num_hidden_layers, aux), aux, opts);
  }

  /**
   * The last stage: final norm and lm_head (main loss), the MTP modules on the final hidden states
   * `hidden` [T, H] (before the norm), and the total loss with the balance terms collected in `aux`.
   */
  head(b: TrainBatch, hidden: Tensor, aux: LayerAux, opts: { mtp?: boolean } = {}): ForwardResult {
    const c = this.config, p = this.params;
    const { windows, seqLens, targets } = b;
    const { loads, balance } = aux;
    const logits = this.#lin(rmsNorm(hidden, p.norm, c.rms_norm_eps), p.lmHead);
    const mainLoss = crossEntropy(logits, targets);
    const terms: Tensor[] = [mainLoss];

    const mtpLogits: Tensor[] = [];
    const mtpLosses: number[] = [];
    const mtpTerms: Tensor[] = [];
    let prev = hidden; // h^{k-1}, rows of the previous depth's positions
    let prevLens = seqLens;
    for (let j = 0; j < (opts.mtp === false ? 0 : p.mtp.length); j++) {
      const k = j + 1;
      const lens = seqLens.map((n) => Math.max(0, n - k));
      if (lens.every((n) => n === 0)) break;
      // Rows of h^{k-1} for positions 0..n-k-1 of each window, the tokens t_{i+k}, the targets t_{i+k+1}.
      const rows: number[] = [], toks: number[] = [], tgts: number[] = [], pos: number[] = [];
      let r0 = 0;
      windows.forEach((w, s) => {
        for (let i = 0; i < lens[s]!; i++) { rows.push(r0 + i); toks.push(w[i + k]!); tgts.push(w[i + k + 1]!); pos.push(i); }
        r0 += prevLens[s]!;
      });
      const keep = lens.filter((n) => n > 0);
      const m = p.mtp[j]!;
      const h = takeRows(prev, Int32Array.from(rows));
      const e = embedding(m.embed ?? p.embed, Int32Array.from(toks));
      const cat = concatCols(rmsNorm(e, m.enorm, c.rms_norm_eps), rmsNorm(h, m.hnorm, c.rms_norm_eps));
      let y = this.#lin(cat, m.ehProj);
      y = this.#block(c.num_hidden_layers + j, m.block, y, Int32Array.from(pos), keep, loads, balance);
      const lg = this.#lin(rmsNorm(y, m.headNorm, c.rms_norm_eps), m.head ?? p.lmHead);
      const ce = crossEntropy(lg, Int32Array.from(tgts));
      mtpLogits.push(lg);
      mtpLosses.push(ce.item());
      mtpTerms.push(ce);
      prev = y;
      prevLens = lens; // a window with no position left keeps a zero row count
    }
    if (mtpTerms.length > 0) terms.push(scale(sumScalars(mtpTerms), this.mtpLambda / p.mtp.length));
    let balanceLoss = 0;
    if (balance.length > 0) {
      const bal = sumScalars(balance);
      balanceLoss = bal.item();
      terms.push(bal);
    }
    const loss = terms.length === 1 ? mainLoss : sumScalars(terms);
    return { loss, mainLoss: mainLoss.item(), mtpLosses, balanceLoss, logits, hidden, mtpLogits, loads };
  }

  /** A linear layer on the run's GEMM engine; its weight gradient is deferred while `store` is enabled. */
  #lin(x: Tensor, w: Tensor): Tensor {
    return linear(this.gemm, x, w, { store: this.store });
  }

  /** A linear layer FP8 mixed precision covers (on `fp8` when set). */
  #flin(x: Tensor, w: Tensor): Tensor {
    return linear(this.fp8 ?? this.gemm, x, w, { store: this.store });
  }

  /** One decoder block (layer id `l`: main layers, then the MTP blocks at num_hidden_layers + j). */
  #block(l: number, lw: LayerParams, x: Tensor, positions: Int32Array, seqLens: readonly number[], loads: Map<number, Int32Array>, balance: Tensor[]): Tensor {
    const c = this.config;
    x = add(x, this.#attention(lw, rmsNorm(x, lw.inputNorm, c.rms_norm_eps), positions, seqLens));
    const f = rmsNorm(x, lw.postAttnNorm, c.rms_norm_eps);
    // The name table gives a layer (MTP blocks included) exactly one of moe / dense (isMoeLayer).
    return add(x, lw.moe ? this.#moe(l, lw.moe, f, seqLens, loads, balance) : this.#mlp(lw.dense!, f));
  }

  /** MLA (naive form): [T, H] → [T, H]. */
  #attention(lw: LayerParams, x: Tensor, positions: Int32Array, seqLens: readonly number[]): Tensor {
    const c = this.config, g = this.gemm, a = lw.attn;
    const Hd = c.num_attention_heads, nope = c.qk_nope_head_dim, rp = c.qk_rope_head_dim, kvLora = c.kv_lora_rank;
    const qk = qkHeadDim(c);
    const q0 = a.q ? this.#flin(x, a.q) : this.#flin(rmsNorm(this.#flin(x, a.qA!), a.qANorm!, LORA_NORM_EPS), a.qB!);
    const rq = this.#rope.rows(positions, Hd), rk = this.#rope.rows(positions, 1);
    const q = rope(q0, Hd, qk, nope, rp, rq.cos, rq.sin);
    const kvA = this.#flin(x, a.kvA); // [T, kv_lora + rope] = [c_kv | k_pe]
    const kpe = rope(sliceCols(kvA, kvLora, rp), 1, rp, 0, rp, rk.cos, rk.sin);
    const kv = this.#flin(rmsNorm(sliceCols(kvA, 0, kvLora), a.kvANorm, LORA_NORM_EPS), a.kvB);
    const o = mlaAttention(g, q, kv, kpe, seqLens, { heads: Hd, nope, rope: rp, v: c.v_head_dim, scale: this.#scale });
    return this.#flin(o, a.o);
  }

  #mlp(w: MlpParams, x: Tensor): Tensor {
    return this.#flin(swiglu(this.#flin(x, w.gate), this.#flin(x, w.up)), w.down);
  }

  /** DeepSeekMoE: shared expert + k routed experts with sigmoid gating (grouped products). */
  #moe(l: number, w: MoeParams, x: Tensor, seqLens: readonly number[], loads: Map<number, Int32Array>, balance: Tensor[]): Tensor {
    const c = this.config, g = this.fp8 ?? this.gemm;
    const { E, K } = routingShape(c);
    const T = x.size / c.hidden_size;
    const scores = sigmoid(this.#lin(x, w.router)); // router in full precision; [T, E]
    const idx = selectExperts(c, scores.data, T, w.bias?.data ?? null);
    loads.set(l, expertLoad(idx, E));
    const normalize = c.norm_topk_prob;
    const factor = normalize && c.model_type === 'deepseek_v2' && K > 1 ? 1 : c.routed_scaling_factor;
    const gates = routingWeights(scores, idx, K, normalize, factor);
    if (this.balanceAlpha > 0) balance.push(seqBalanceLoss(scores, idx, K, seqLens, this.balanceAlpha));
    const plan = planByExpert(idx, T, K, E);
    const tokenOf = new Int32Array(plan.rows);
    for (let r = 0; r < plan.rows; r++) tokenOf[r] = (plan.order[r]! / K) | 0;
    const xs = takeRows(x, tokenOf); // [R, H] grouped by expert
    const ex = w.experts;
    const h = swiglu(groupedLinear(g, xs, ex.gate, plan.segments, { store: this.store }), groupedLinear(g, xs, ex.up, plan.segments, { store: this.store }));
    const y = combineExperts(groupedLinear(g, h, ex.down, plan.segments, { store: this.store }), gates, plan.order, T, K);
    return w.shared ? add(y, this.#mlp(w.shared, x)) : y;
  }
}
