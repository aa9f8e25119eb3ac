// The MTP module's forward (DeepseekModel.mtpForward) on the tiny reference checkpoints. The reference
// vectors hold no MTP outputs (DeepSeek's inference code ignores the module), so this checks it against a
// plain step-by-step implementation written here from the ref kernels (eh_proj over
// [enorm(Emb(t_{i+1})) ; hnorm(h_i)] as vLLM's deepseek_mtp, naive MLA with explicit softmax loops, the
// per-expert MoE oracle, shared_head), and checks that incremental decoding through its own latent cache
// layer, chunked prefill and both MLA forms agree with the all-at-once forward.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { qkHeadDim, softmaxScale } from './config.ts';
import { DeepseekModel, LORA_NORM_EPS } from './deepseek.ts';
import { LatentCache } from './latent-cache.ts';
import { mlp, perExpertMoeExecutor, route } from './moe.ts';
import { RopeTable } from './rope.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const REF_DIR = [join(ROOT, '..', 'shared'), join(ROOT, '..', '..', 'shared')]
  .map((d) => join(d, 'testdata', 'deepseek-ref')).find((d) => existsSync(d)) ?? join(ROOT, '..', 'shared', 'testdata', 'deepseek-ref');

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Plain MTP module 0 over a whole sequence from position 0: returns [T, vocab] logits and [T, H] hidden. */
function plainMtp(model: DeepseekModel, k: Kernels, next: Int32Array, hidden: Float32Array): { logits: Float32Array; hidden: Float32Array } {
  const c = model.config;
  const w = model.weights;
  const m = w.mtp[0]!;
  const T = next.length, H = c.hidden_size, eps = c.rms_norm_eps;
  const emb = m.embed ?? w.embed;
  const e = new Float32Array(T * H);
  for (let t = 0; t < T; t++) for (let i = 0; i < H; i++) {
    const v = emb.data[next[t]! * H + i]!;
    e[t * H + i] = emb.dtype === 'bf16' ? new Float32Array(new Uint32Array([v << 16]).buffer)[0]! : v;
  }
  const en = k.rmsNorm(e, T, m.enorm, eps), hn = k.rmsNorm(hidden, T, m.hnorm, eps);
  const cat = new Float32Array(T * 2 * H);
  for (let t = 0; t < T; t++) { cat.set(en.subarray(t * H, (t + 1) * H), 2 * t * H); cat.set(hn.subarray(t * H, (t + 1) * H), 2 * t * H + H); }
  const x = k.matmul(cat, T, m.ehProj);
  // Attention (naive MLA, decompressed K/V per head).
  const b = m.block, a = b.attn;
  const Hd = c.num_attention_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vD = c.v_head_dim, L = c.kv_lora_rank;
  const qk = qkHeadDim(c);
  const ain = k.rmsNorm(x, T, b.inputNorm, eps);
  const q = a.q ? k.matmul(ain, T, a.q) : k.matmul(k.rmsNorm(k.matmul(ain, T, a.qA!), T, a.qANorm!, LORA_NORM_EPS), T, a.qB!);
  const pos = Int32Array.from({ length: T }, (_, i) => i);
  const rt = new RopeTable(c);
  const rq = rt.rows(pos, Hd), rk = rt.rows(pos, 1);
  k.rope(q, T * Hd, qk, nope, rope, rq.cos, rq.sin);
  const kv = k.matmul(ain, T, a.kvA);
  const R = L + rope;
  k.rope(kv, T, R, L, rope, rk.cos, rk.sin);
  const ckv = new Float32Array(T * L);
  for (let t = 0; t < T; t++) ckv.set(kv.subarray(t * R, t * R + L), t * L);
  const kvFull = k.matmul(k.rmsNorm(ckv, T, a.kvANorm, LORA_NORM_EPS), T, a.kvB); // [T, Hd, nope + v]
  const scale = softmaxScale(c);
  const o = new Float32Array(T * Hd * vD);
  for (let h = 0; h < Hd; h++) for (let t = 0; t < T; t++) {
    const s = new Float64Array(t + 1);
    for (let u = 0; u <= t; u++) {
      let d = 0;
      for (let i = 0; i < nope; i++) d += q[(t * Hd + h) * qk + i]! * kvFull[(u * Hd + h) * (nope + vD) + i]!;
      for (let i = 0; i < rope; i++) d += q[(t * Hd + h) * qk + nope + i]! * kv[u * R + L + i]!;
      s[u] = d * scale;
    }
    const mx = Math.max(...s);
    let sum = 0;
    for (let u = 0; u <= t; u++) { s[u] = Math.exp(s[u]! - mx); sum += s[u]!; }
    for (let i = 0; i < vD; i++) {
      let acc = 0;
      for (let u = 0; u <= t; u++) acc += s[u]! * kvFull[(u * Hd + h) * (nope + vD) + nope + i]!;
      o[(t * Hd + h) * vD + i] = acc / sum;
    }
  }
  const attn = k.matmul(o, T, a.o);
  for (let i = 0; i < x.length; i++) x[i] = x[i]! + attn[i]!;
  const fin = k.rmsNorm(x, T, b.postAttnNorm, eps);
  let f: Float32Array;
  if (b.dense) f = mlp(k, b.dense, fin, T);
  else {
    const r = route(k, c, k.matmul(fin, T, b.moe!.router), T, b.moe!.bias);
    f = perExpertMoeExecutor({ config: c, kernels: k, moe: () => b.moe }).run(0, fin, T, r.experts, r.weights);
    if (b.moe!.shared) { const s = mlp(k, b.moe!.shared, fin, T); for (let i = 0; i < f.length; i++) f[i] = f[i]! + s[i]!; }
  }
  for (let i = 0; i < x.length; i++) x[i] = x[i]! + f[i]!;
  return { logits: k.matmul(k.rmsNorm(x, T, m.headNorm, eps), T, m.head ?? w.lmHead), hidden: x.slice() };
}

for (const variant of ['tiny-v3-bf16', 'tiny-v3-fp8'] as const) {
  describe(`MTP module (${variant})`, () => {
    let k: Kernels;
    let model: DeepseekModel;
    let seq: number[];
    before(async () => {
      k = await loadBackend('ref');
      model = await DeepseekModel.load(join(REF_DIR, variant), k);
      const ex = JSON.parse(readFileSync(join(REF_DIR, variant, 'expected_absorb.json'), 'utf8')) as { prompts: { prompt: number[]; greedy_tokens: number[] }[] };
      seq = [...ex.prompts[2]!.prompt, ...ex.prompts[2]!.greedy_tokens]; // 12 + 16 tokens
    });
    after(async () => { model?.close(); await k?.dispose(); });

    /** Main hidden states of seq[0..n) and the shifted tokens seq[1..n]. */
    function mainHidden(n: number): { hidden: Float32Array; next: Int32Array } {
      const cache = model.createCache(LatentCache.blocksFor(n));
      const blockTable = Int32Array.from({ length: cache.numBlocks }, (_, i) => i);
      let hidden!: Float32Array;
      model.forward({ tokens: Int32Array.from(seq.slice(0, n)), seqs: [{ blockTable, numCached: 0, numNew: n }] }, cache, { onHidden: (h) => { hidden = h.slice(); } });
      return { hidden, next: Int32Array.from(seq.slice(1, n + 1)) };
    }

    it('loads one module and equals a plain step-by-step implementation (all positions)', () => {
      assert.equal(model.mtpModules, 1);
      const n = 20;
      const { hidden, next } = mainHidden(n);
      const cache = model.createMtpCache(1);
      const got = model.mtpForward({ tokens: next, seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: n }] }, hidden, cache, { allPositions: true });
      const want = plainMtp(model, k, next, hidden);
      const d = maxDiff(got.logits, want.logits);
      assert.ok(d < 2e-5, `logits differ by ${d}`);
      assert.ok(maxDiff(got.hidden, want.hidden) < 2e-5);
      let mx = 0;
      for (const v of want.logits) mx = Math.max(mx, Math.abs(v));
      assert.ok(mx > 0.5, 'logits are not trivially small');
    });

    it('incremental decode through its own cache, chunks, last-row output and naive MLA agree with all-at-once', () => {
      const n = 20;
      const { hidden, next } = mainHidden(n);
      const H = model.config.hidden_size, V = model.config.vocab_size;
      const all = model.mtpForward({ tokens: next, seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: n }] }, hidden, model.createMtpCache(1), { allPositions: true });
      for (const [chunk, attn] of [[1, 'absorb'], [7, 'absorb'], [5, 'naive']] as const) {
        const cache = model.createMtpCache(2);
        const blockTable = Int32Array.of(1, 0); // another block than the one-shot run
        for (let s = 0; s < n; s += chunk) {
          const m = Math.min(chunk, n - s);
          const r = model.mtpForward({ tokens: next.slice(s, s + m), seqs: [{ blockTable, numCached: s, numNew: m }] }, hidden.slice(s * H, (s + m) * H), cache, { attn });
          const row = s + m - 1;
          assert.ok(maxDiff(r.logits, all.logits.subarray(row * V, (row + 1) * V)) < 2e-5, `chunk ${chunk} ${attn} row ${row}`);
          assert.ok(maxDiff(r.hidden, all.hidden.subarray(row * H, (row + 1) * H)) < 2e-5);
        }
      }
    });

    it('rejects a main-model cache and a model without MTP', async () => {
      const { hidden, next } = mainHidden(2);
      assert.throws(() => model.mtpForward({ tokens: next, seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: 2 }] }, hidden, model.createCache(1)), /cache was not created/);
      assert.throws(() => model.mtpForward({ tokens: next, seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: 2 }] }, hidden.subarray(1), model.createMtpCache(1)), /hidden has/);
      const k2 = await loadBackend('ref');
      const plain = await DeepseekModel.load(join(REF_DIR, variant), k2, { mtp: false });
      try {
        assert.equal(plain.mtpModules, 0);
        assert.throws(() => plain.mtpForward({ tokens: next, seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: 2 }] }, hidden, plain.createMtpCache(1)), /no MTP module/);
      } finally { plain.close(); await k2.dispose(); }
    });
  });
}
