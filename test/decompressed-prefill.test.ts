// Long prefills take the decompressed MLA form through the FlashMLA kernel (mla.ts decompressedAttention:
// K/V from kv_b_proj as a 16-head MHA cache, rows [v | k_nope | k_pe]). Checked on tiny-v3-bf16 (wasm,
// 2 threads, so rows are also split across threads) against the plain-TS naive form (float64 attention)
// and against the absorbed form (the same prompt prefilled in chunks below the threshold): all-position
// logits within 5e-5 (measured ~4e-6); a second prefill with a cached prefix (numCached <= numNew) too.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadBackend, type Kernels } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { DECOMPRESS_MIN_NEW, prefersDecompressed } from '../src/model/mla.ts';
import { REF_DIR, maxAbsDiff } from './helpers.ts';

describe('decompressed prefill attention (tiny-v3-bf16, wasm x2)', () => {
  let kernels: Kernels;
  let model: DeepseekModel;
  before(async () => {
    kernels = await loadBackend('wasm', { threads: 2 });
    model = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-bf16'), kernels, { mtp: false });
  });
  after(async () => {
    model?.close();
    await kernels?.dispose();
  });

  it('is chosen only for long prefills', () => {
    const s = (numCached: number, numNew: number) => ({ blockTable: new Int32Array(8), numCached, numNew });
    assert.equal(prefersDecompressed([s(0, DECOMPRESS_MIN_NEW)]), true);
    assert.equal(prefersDecompressed([s(0, DECOMPRESS_MIN_NEW - 1)]), false);
    assert.equal(prefersDecompressed([s(100, 90)]), false);
    assert.equal(prefersDecompressed([s(0, 90), s(5, 1)]), false);
  });

  it('matches the naive form and the absorbed form on every position', () => {
    const V = model.config.vocab_size;
    const P = 150, first = 70;
    const tokens = Int32Array.from({ length: P }, (_, i) => (i * 97 + 13) % V);
    const blockTable = Int32Array.of(0, 1, 2);
    const fwd = (n0: number, n1: number, cache: ReturnType<DeepseekModel['createCache']>, attn?: 'naive') =>
      model.forward({ tokens: tokens.subarray(n0, n1), seqs: [{ blockTable, numCached: n0, numNew: n1 - n0 }] }, cache, { allPositions: true, ...(attn ? { attn } : {}) });
    // Decompressed: [0, 70) then [70, 150) (80 new after 70 cached).
    const c1 = model.createCache(3);
    const got = [fwd(0, first, c1), fwd(first, P, c1)];
    const c2 = model.createCache(3);
    const naive = [fwd(0, first, c2, 'naive'), fwd(first, P, c2, 'naive')];
    // Absorbed: chunks of 30 (below the threshold).
    const c3 = model.createCache(3);
    const absorbed: Float32Array[] = [];
    for (let s = 0; s < P; s += 30) absorbed.push(fwd(s, Math.min(P, s + 30), c3));
    const cat = (xs: Float32Array[]) => { const o = new Float32Array(P * V); let at = 0; for (const x of xs) { o.set(x, at); at += x.length; } return o; };
    const g = cat(got);
    assert.equal(g.length, P * V);
    const dn = maxAbsDiff(g, cat(naive)), da = maxAbsDiff(g, cat(absorbed));
    console.log(`decompressed prefill: max abs logit diff vs naive ${dn.toExponential(2)}, vs absorbed ${da.toExponential(2)}`);
    assert.ok(dn < 5e-5, `vs naive: ${dn}`);
    assert.ok(da < 5e-5, `vs absorbed: ${da}`);
  });
});
