// The latent cache holds FlashMLA's k_cache layout: per layer [numBlocks, 64, 1, kv_lora + rope], row
// = [kv_a_layernorm(c_kv) | RoPE(k_pe)] (interleaved pairs), position p at block blockTable[p / 64], row
// p % 64. Checked for layer 0 of tiny-v3-bf16 against a direct computation from the checkpoint
// tensors and the reference's cos/sin table (tolerance 2e-6 · max(1, |x|): float32 both sides).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadBackend } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { Checkpoint } from '../src/weights/checkpoint.ts';
import { REF_DIR, expected } from './helpers.ts';

function rms(x: Float64Array, w: Float32Array): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const r = 1 / Math.sqrt(ss / x.length + 1e-6);
  return x.map((v, i) => v * r * w[i]!);
}

describe('latent cache layout', () => {
  it('layer-0 rows are [normalised c_kv | rotated k_pe] at the block-table position', async () => {
    const dir = join(REF_DIR, 'tiny-v3-bf16');
    const k = await loadBackend('ref');
    const model = await DeepseekModel.load(dir, k);
    const prompt = expected('tiny-v3-bf16').prompts.find((p) => p.prompt.length === 23)!.prompt;
    const ropeRef = expected('tiny-v3-bf16').rope_freqs_cis;
    // Blocks 3 then 1: positions 0..22 all land in block 3.
    const cache = model.createCache(4);
    model.forward({ tokens: Int32Array.from(prompt), seqs: [{ blockTable: Int32Array.of(3, 1), numCached: 0, numNew: 23 }] }, cache);
    assert.equal(cache.rowDim, 160);
    assert.equal(cache.layers[0]!.length, 4 * 64 * 160);

    const ck = Checkpoint.open(dir);
    const emb = ck.readF32('model.embed_tokens.weight');
    const inNorm = ck.readF32('model.layers.0.input_layernorm.weight');
    const kvA = ck.readF32('model.layers.0.self_attn.kv_a_proj_with_mqa.weight'); // [160, 256]
    const kvNorm = ck.readF32('model.layers.0.self_attn.kv_a_layernorm.weight');
    ck.close();
    const H = 256;
    const layer0 = cache.layers[0]!;
    let worst = 0;
    prompt.forEach((tok, p) => {
      const x = rms(Float64Array.from(emb.subarray(tok * H, (tok + 1) * H)), inNorm);
      const kv = new Float64Array(160);
      for (let o = 0; o < 160; o++) { let s = 0; for (let i = 0; i < H; i++) s += x[i]! * kvA[o * H + i]!; kv[o] = s; }
      const ckv = rms(kv.subarray(0, 128), kvNorm);
      const want = new Float64Array(160);
      want.set(ckv, 0);
      for (let i = 0; i < 16; i++) {
        const c = ropeRef.cos[p]![i]!, s = ropeRef.sin[p]![i]!;
        const a = kv[128 + 2 * i]!, b = kv[128 + 2 * i + 1]!;
        want[128 + 2 * i] = a * c - b * s;
        want[128 + 2 * i + 1] = a * s + b * c;
      }
      const row = layer0.subarray((3 * 64 + p) * 160, (3 * 64 + p + 1) * 160);
      for (let i = 0; i < 160; i++) {
        const d = Math.abs(row[i]! - want[i]!) / Math.max(1, Math.abs(want[i]!));
        worst = Math.max(worst, d);
      }
    });
    assert.ok(worst <= 2e-6, `cache rows differ by ${worst}`);
    // Block 1 (unused by 23 positions) and blocks 0, 2 stay untouched.
    for (const b of [0, 1, 2]) assert.ok(layer0.subarray(b * 64 * 160, (b + 1) * 64 * 160).every((v) => v === 0), `block ${b} untouched`);
    model.close();
    await k.dispose();
  });
});
