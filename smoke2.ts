import { readFileSync } from 'node:fs';
import { loadBackend } from './src/kernels/index.ts';
import { DeepseekModel } from './src/model/deepseek.ts';
for (const v of ['tiny-v3-bf16', 'tiny-v3-fp8']) {
const dir = `/work/shared/testdata/deepseek-ref/${v}`;
const k = await loadBackend('wasm', { threads: 2 });
const t0 = Date.now();
const m = await DeepseekModel.load(dir, k);
console.log('load ms', Date.now() - t0);
const exp = JSON.parse(readFileSync(dir + '/expected_absorb.json', 'utf8'));
for (const attn of ['absorb', 'naive'] as const) {
  let worst = 0;
  for (const p of exp.prompts) {
    const cache = m.createCache(2);
    const bt = new Int32Array([0, 1]);
    let lg = m.forward({ tokens: Int32Array.from(p.prompt), seqs: [{ blockTable: bt, numCached: 0, numNew: p.prompt.length }] }, cache, { attn });
    const d = (a: Float32Array, b: number[]) => { let w = 0; for (let i = 0; i < b.length; i++) w = Math.max(w, Math.abs(a[i]! - b[i]!)); return w; };
    worst = Math.max(worst, d(lg, p.prefill_last_logits));
    for (let j = 0; j < 16; j++) {
      lg = m.forward({ tokens: Int32Array.of(p.greedy_tokens[j]), seqs: [{ blockTable: bt, numCached: p.prompt.length + j, numNew: 1 }] }, cache, { attn });
      worst = Math.max(worst, d(lg, p.decode_logits[j]));
    }
  }
  console.log(v, attn, 'max diff', worst, 'ms', Date.now() - t0);
}
}
