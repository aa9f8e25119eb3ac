// The training forward against the inference model, and its backward end to end:
// - on the tiny DeepSeek-V3 reference checkpoints (BF16 and FP8 with block scales; MLA with q_lora, YaRN RoPE, 1 dense + 2 MoE layers
//   with sigmoid noaux_tc group-limited routing and a shared expert, one MTP module), the training
//   logits (all positions, two windows) equal DeepseekModel.forward's within 1e-5, in both MLA forms,
//   and the MTP module's logits equal mtpForward's;
// - the whole-model gradient (main CE + λ·MTP CE + balance loss) against finite differences in float64;
// - the f32 gradients (products on the wasm kernels) against the float64 ones.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { DeepseekModel } from '../model/deepseek.ts';
import { LatentCache } from '../model/latent-cache.ts';
import { parseConfig } from '../model/config.ts';
import { backward, Tensor, WeightGradStore } from '../tensor/autograd/index.ts';
import { mulberry32 } from '../tensor/random.ts';
import { Gemm } from './gemm.ts';
import { gradcheck } from './gradcheck.ts';
import { writeTrainCheckpoint } from './checkpoint.ts';
import { TrainModel } from './model.ts';
import { initTrainParams, loadTrainParams, namedParams, trainableTensors } from './params.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const REF_DIR = [join(ROOT, '..', 'shared'), join(ROOT, '..', '..', 'shared')]
  .map((d) => join(d, 'testdata', 'deepseek-ref')).find((d) => existsSync(d)) ?? join(ROOT, '..', 'shared', 'testdata', 'deepseek-ref');
const TINY = join(REF_DIR, 'tiny-v3-bf16');

function windowsOf(seed: number, lens: number[], vocab: number): Int32Array[] {
  const r = mulberry32(seed);
  return lens.map((n) => Int32Array.from({ length: n }, () => Math.floor(r() * vocab)));
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('training forward equals the inference model (tiny-v3-bf16, tiny-v3-fp8)', () => {
  let k: Kernels;
  let inf: DeepseekModel;
  before(async () => {
    k = await loadBackend('wasm', { threads: 1 });
    inf = await DeepseekModel.load(TINY, k);
  });
  after(async () => {
    inf.close();
    await k.dispose();
  });

  it('FP8 checkpoint (128x128 block scales): the dequantized parameters give the inference logits within 1e-5', async () => {
    const dir = join(REF_DIR, 'tiny-v3-fp8');
    const fp8 = await DeepseekModel.load(dir, k);
    try {
      const { config, params } = loadTrainParams(dir);
      const w = windowsOf(4, [12], config.vocab_size)[0]!;
      const n = w.length - 1;
      const res = new TrainModel(config, params, new Gemm(k)).forward([w]);
      const cache = fp8.createCache(LatentCache.blocksFor(n));
      const logits = fp8.forward({ tokens: w.subarray(0, n), seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: n }] }, cache, { allPositions: true, attn: 'naive' });
      const d = maxDiff(res.logits.data, logits);
      assert.ok(d <= 1e-5, `logits differ by ${d}`);
    } finally {
      fp8.close();
    }
  });

  it('main logits of every position (two windows) within 1e-5, both MLA forms; MTP logits within 1e-5', (t) => {
    const { config, params } = loadTrainParams(TINY);
    const gemm = new Gemm(k);
    const model = new TrainModel(config, params, gemm);
    const windows = windowsOf(3, [13, 9], config.vocab_size);
    const res = model.forward(windows);
    assert.ok(gemm.kernelCalls > 0, 'products ran on the kernels');
    const V = config.vocab_size, H = config.hidden_size;
    let row = 0;
    let worst = 0, worstMtp = 0;
    for (const w of windows) {
      const n = w.length - 1;
      for (const attn of ['naive', 'absorb'] as const) {
        const cache = inf.createCache(LatentCache.blocksFor(n));
        const blockTable = Int32Array.from({ length: cache.numBlocks }, (_, i) => i);
        let hidden!: Float32Array;
        const logits = inf.forward({ tokens: w.subarray(0, n), seqs: [{ blockTable, numCached: 0, numNew: n }] }, cache,
          { attn, allPositions: true, onHidden: (h) => { hidden = h.slice(); } });
        const d = maxDiff(res.logits.data.subarray(row * V, (row + n) * V), logits);
        worst = Math.max(worst, d);
        assert.ok(d <= 1e-5, `${attn}: logits differ by ${d}`);
        assert.ok(maxDiff(res.hidden.data.subarray(row * H, (row + n) * H), hidden) <= 1e-5);
        // MTP module 0 on positions 0..n-2: tokens w[1..n-1] with the main hidden states of 0..n-2.
        const mcache = inf.createMtpCache(LatentCache.blocksFor(n));
        const mtp = inf.mtpForward({ tokens: w.subarray(1, n), seqs: [{ blockTable, numCached: 0, numNew: n - 1 }] }, hidden.subarray(0, (n - 1) * H), mcache,
          { attn, allPositions: true });
        const mrow = row - windows.indexOf(w); // each earlier window has one MTP position fewer
        const dm = maxDiff(res.mtpLogits[0]!.data.subarray(mrow * V, (mrow + n - 1) * V), mtp.logits);
        worstMtp = Math.max(worstMtp, dm);
        assert.ok(dm <= 1e-5, `${attn}: MTP logits differ by ${dm}`);
      }
      row += n;
    }
    t.diagnostic(`max |logits train − inference| = ${worst.toExponential(2)}, MTP ${worstMtp.toExponential(2)}`);
    assert.ok(res.loads.size === 3, 'two MoE layers and the MTP block routed');
    assert.ok(Number.isFinite(res.loss.item()) && res.mtpLosses.length === 1 && res.balanceLoss > 0);
  });

  it('f32 gradients (wasm products) agree with float64 gradients (loops)', (t) => {
    const run = (ctor: Float32ArrayConstructor | Float64ArrayConstructor) => {
      const { config, params } = loadTrainParams(TINY, ctor);
      const model = new TrainModel(config, params, new Gemm(ctor === Float32Array ? k : null));
      const res = model.forward(windowsOf(5, [9, 7], config.vocab_size));
      backward([res.loss], [null]);
      return { named: namedParams(config, params), loss: res.loss.item() };
    };
    const a = run(Float32Array), b = run(Float64Array);
    assert.ok(Math.abs(a.loss - b.loss) < 1e-5 * Math.abs(b.loss));
    let worst = 0;
    for (let i = 0; i < a.named.length; i++) {
      const ga = a.named[i]!.tensor.grad, gb = b.named[i]!.tensor.grad;
      if (!gb) { assert.equal(ga, null, a.named[i]!.name); continue; }
      let num = 0, den = 0;
      for (let j = 0; j < gb.length; j++) { num += (ga![j]! - gb[j]!) ** 2; den += gb[j]! ** 2; }
      const rel = Math.sqrt(num / Math.max(den, 1e-30));
      worst = Math.max(worst, rel);
      assert.ok(rel < 1e-3, `${a.named[i]!.name}: relative L2 difference ${rel}`);
    }
    t.diagnostic(`worst per-tensor relative L2 difference f32 vs f64 gradients: ${worst.toExponential(2)}`);
  });
});

const tinyJson = {
  model_type: 'deepseek_v3', vocab_size: 24, hidden_size: 12, intermediate_size: 16, moe_intermediate_size: 6,
  num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: 8, kv_lora_rank: 6,
  qk_nope_head_dim: 4, qk_rope_head_dim: 2, v_head_dim: 4, n_routed_experts: 8, n_shared_experts: 1, num_experts_per_tok: 2,
  n_group: 4, topk_group: 2, routed_scaling_factor: 2.5, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true,
  first_k_dense_replace: 1, moe_layer_freq: 1, rope_theta: 10000, max_position_embeddings: 64, rms_norm_eps: 1e-6, rope_scaling: null,
  num_nextn_predict_layers: 1, tie_word_embeddings: false,
};

describe('whole-model backward in float64', () => {
  it('matches finite differences on every parameter tensor (sampled elements)', (t) => {
    const c = parseConfig(tinyJson);
    const params = initTrainParams(c, { seed: 4, std: 0.4 }, Float64Array);
    const r = mulberry32(9);
    for (const { name, tensor } of namedParams(c, params)) {
      if (name.endsWith('e_score_correction_bias')) for (let i = 0; i < tensor.size; i++) tensor.data[i] = (r() - 0.5) * 0.2;
      else if (tensor.shape.length === 1) for (let i = 0; i < tensor.size; i++) tensor.data[i] = 0.6 + 0.8 * r();
    }
    const model = new TrainModel(c, params, new Gemm(null), { mtpLambda: 0.3, balanceAlpha: 0.05 });
    const windows = windowsOf(2, [7, 5], c.vocab_size);
    const probe = model.forward(windows);
    assert.ok(probe.mtpLosses.length === 1 && probe.balanceLoss > 0);
    const inputs = trainableTensors(c, params);
    const res = gradcheck(inputs, () => model.forward(windows).loss, { sample: 4, seed: 3 });
    t.diagnostic(`whole model: ${res.checked} elements, max abs err ${res.maxAbs.toExponential(2)}, max rel err ${res.maxRel.toExponential(2)}`);
    assert.equal(res.failure, null, res.failure ?? '');
    for (const p of inputs) assert.ok(p.grad, 'every parameter gets a gradient');
    assert.ok(inputs.every((p) => p instanceof Tensor));
  });
});

describe('pipeline-stage pieces', () => {
  it('embed → layers in two stages → head equals forward; deferred weight gradients (WeightGradStore) equal immediate ones', () => {
    const c = parseConfig(tinyJson);
    const params = initTrainParams(c, { seed: 8, std: 0.3 }, Float64Array);
    const model = new TrainModel(c, params, new Gemm(null), { balanceAlpha: 0.01 });
    const windows = windowsOf(6, [6, 8], c.vocab_size);
    const whole = model.forward(windows);
    const b = model.batch(windows);
    const aux = { loads: new Map<number, Int32Array>(), balance: [] as Tensor[] };
    const mid = model.layers(b, model.embed(b), 0, 1, aux);
    const staged = model.head(b, model.layers(b, mid, 1, 2, aux), aux);
    assert.equal(staged.loss.item(), whole.loss.item());
    assert.deepEqual(staged.logits.data, whole.logits.data);
    assert.throws(() => model.layers(b, mid, 1, 3, aux), RangeError);

    const named = namedParams(c, params).filter((n) => n.tensor.requiresGrad);
    backward([whole.loss], [null]);
    const ref = named.map((n) => n.tensor.grad!.slice());
    for (const n of named) n.tensor.grad = null;
    const store = new WeightGradStore();
    model.store = store;
    store.enabled = true;
    backward([model.forward(windows).loss], [null]);
    store.flush();
    store.enabled = false;
    model.store = null;
    const matrices = named.filter((n) => n.tensor.shape.length >= 2 && !n.name.endsWith('embed_tokens.weight'));
    assert.ok(matrices.length > 20 && matrices.every((n) => n.tensor.grad === null), 'linear and expert weight gradients wait for the W step');
    assert.ok(named.filter((n) => n.tensor.shape.length === 1).every((n) => n.tensor.grad !== null), 'norms get theirs at once');
    store.pop();
    named.forEach((n, i) => {
      const g = n.tensor.grad!;
      for (let j = 0; j < g.length; j++) assert.ok(Math.abs(g[j]! - ref[i]![j]!) <= 1e-12 * (1 + Math.abs(ref[i]![j]!)), n.name);
    });
  });
});

describe('two MTP modules (depth 2, chained as §2.2)', () => {
  it('module k reads module k−1\'s output hidden states: equals mtpForward chained by hand; its gradient matches finite differences', async () => {
    const json = { ...tinyJson, num_nextn_predict_layers: 2 };
    const c = parseConfig(json);
    const dir = mkdtempSync(join(tmpdir(), 'seekd-mtp2-'));
    const k = await loadBackend('wasm', { threads: 1 });
    try {
      const params = initTrainParams(c, { seed: 12, std: 0.3 });
      writeTrainCheckpoint(dir, json, c, params);
      const inf = await DeepseekModel.load(dir, k);
      const w = windowsOf(13, [10], c.vocab_size)[0]!;
      const res = new TrainModel(c, params, new Gemm(k)).forward([w]);
      assert.equal(res.mtpLogits.length, 2);
      const n = w.length - 1, H = c.hidden_size, V = c.vocab_size;
      const blockTable = Int32Array.of(0);
      let hidden!: Float32Array;
      inf.forward({ tokens: w.subarray(0, n), seqs: [{ blockTable, numCached: 0, numNew: n }] }, inf.createCache(1), { allPositions: true, attn: 'naive', onHidden: (h) => { hidden = h.slice(); } });
      const m0 = inf.mtpForward({ tokens: w.subarray(1, n), seqs: [{ blockTable, numCached: 0, numNew: n - 1 }] }, hidden.subarray(0, (n - 1) * H), inf.createMtpCache(1), { allPositions: true, attn: 'naive', module: 0 });
      const m1 = inf.mtpForward({ tokens: w.subarray(2, n), seqs: [{ blockTable, numCached: 0, numNew: n - 2 }] }, m0.hidden.subarray(0, (n - 2) * H), inf.createMtpCache(1), { allPositions: true, attn: 'naive', module: 1 });
      inf.close();
      assert.ok(maxDiff(res.mtpLogits[0]!.data, m0.logits) <= 1e-5);
      assert.ok(maxDiff(res.mtpLogits[1]!.data, m1.logits) <= 1e-5);
      assert.equal(res.mtpLogits[1]!.size, (n - 2) * V);
    } finally {
      await k.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
    const p64 = initTrainParams(c, { seed: 12, std: 0.4 }, Float64Array);
    const model = new TrainModel(c, p64, new Gemm(null), { mtpLambda: 0.5 });
    const windows = windowsOf(14, [6, 4], c.vocab_size);
    const mtp = p64.mtp.flatMap((m) => [m.ehProj, m.enorm, m.hnorm, m.block.attn.kvB]);
    const r = gradcheck([...mtp, p64.embed], () => model.forward(windows).loss, { sample: 6, seed: 5 });
    assert.equal(r.failure, null, r.failure ?? '');
  });
});

describe('other layouts of the family', () => {
  it('q_proj without q_lora, all-dense MLP, tied embeddings, no MTP: inference logits within 1e-5 and finite differences', async () => {
    const json = {
      ...tinyJson, q_lora_rank: null, n_routed_experts: null, n_shared_experts: null, num_experts_per_tok: null, n_group: null, topk_group: null,
      num_nextn_predict_layers: 0, tie_word_embeddings: true,
    };
    const c = parseConfig(json);
    const params = initTrainParams(c, { seed: 21, std: 0.3 });
    assert.equal(params.lmHead, params.embed);
    assert.ok(params.layers.every((l) => l.attn.q && !l.attn.qA && l.dense && !l.moe));
    const dir = mkdtempSync(join(tmpdir(), 'seekd-dense-'));
    const k = await loadBackend('wasm', { threads: 1 });
    try {
      writeTrainCheckpoint(dir, json, c, params);
      const inf = await DeepseekModel.load(dir, k);
      const w = windowsOf(22, [9], c.vocab_size)[0]!;
      const res = new TrainModel(c, params, new Gemm(k)).forward([w]);
      const logits = inf.forward({ tokens: w.subarray(0, 8), seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: 8 }] }, inf.createCache(1), { allPositions: true });
      inf.close();
      assert.ok(maxDiff(res.logits.data, logits) <= 1e-5);
      assert.equal(res.mtpLogits.length, 0);
      assert.equal(res.loss.item(), res.mainLoss);
    } finally {
      await k.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
    const p64 = initTrainParams(c, { seed: 21, std: 0.4 }, Float64Array);
    const model = new TrainModel(c, p64, new Gemm(null));
    const windows = windowsOf(23, [5, 4], c.vocab_size);
    const r = gradcheck(trainableTensors(c, p64), () => model.forward(windows).loss, { sample: 5, seed: 2 });
    assert.equal(r.failure, null, r.failure ?? '');
  });
});
