// Real widths, few layers: DeepSeek-V2-Lite's and Moonlight's exact configs (hidden 2048, 16 heads,
// 64 routed experts of 1408; V2-Lite: q_proj without q_lora, softmax greedy routing; Moonlight: sigmoid
// routing with groups and a bias) cut to 2 layers (one dense, one MoE), random BF16 values, quantized to
// FP8 while loading. The wasm backend (2 threads, weights across several memories at these sizes when
// the cap is lowered) gives the logits of the plain-TypeScript oracle backend on the same quantized
// weights: the tiny reference checkpoints cover the arithmetic, this covers the real shapes.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBackend, registerBackend } from '../src/kernels/api.ts';
import '../src/kernels/index.ts';
import { WasmOps } from '../src/kernels/wasm/memories.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { LatentCache } from '../src/model/latent-cache.ts';
import { presetConfig } from '../src/model/presets.ts';
import { writeSyntheticCheckpoint } from '../src/model/synthetic.ts';
import { argmax } from './helpers.ts';

// 512 MB per memory: the 1.3 GB of FP8 + BF16 weights of 2 layers land in several memories.
registerBackend({ name: 'wasm-real-width-test', async create(o) { return WasmOps.create(o.threads, { weightBytesPerMemory: 512 << 20 }); } });

async function logits(dir: string, backend: string, ids: number[]): Promise<{ last: Float32Array; memories: number }> {
  const k = await loadBackend(backend, { threads: backend === 'ref' ? 1 : 2 });
  try {
    const m = await DeepseekModel.load(dir, k, { quantize: 'fp8', mtp: false, flashMla: backend === 'ref' ? 'ref' : 'wasm' });
    const cache = m.createCache(LatentCache.blocksFor(ids.length));
    const blockTable = Int32Array.from({ length: cache.numBlocks }, (_, i) => i);
    const last = m.forward({ tokens: Int32Array.from(ids), seqs: [{ blockTable, numCached: 0, numNew: ids.length }] }, cache);
    m.close();
    return { last, memories: k.memoryStats().memories };
  } finally {
    await k.dispose();
  }
}

for (const preset of ['v2-lite', 'moonlight'] as const) {
  describe(`${preset} at real width, 2 layers, --quantize fp8: wasm = ref`, () => {
    let dir: string;
    before(async () => {
      dir = mkdtempSync(join(tmpdir(), `seekd-${preset}-2l-`));
      await writeSyntheticCheckpoint(dir, presetConfig(preset), { layers: 2, mtp: false, seed: 7, dtype: 'bf16' });
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('same logits within 2e-5 of their scale (measured ~1e-6), same argmax', async () => {
      const ids = [100, 2000, 30000, 77, 4096, 65000, 12, 101];
      const ref = await logits(dir, 'ref', ids);
      const wasm = await logits(dir, 'wasm-real-width-test', ids);
      assert.ok(wasm.memories >= 2, `${wasm.memories} memories`);
      let scale = 0, diff = 0;
      for (let i = 0; i < ref.last.length; i++) {
        scale = Math.max(scale, Math.abs(ref.last[i]!));
        diff = Math.max(diff, Math.abs(ref.last[i]! - wasm.last[i]!));
      }
      assert.ok(scale > 0.1, `logits too small to compare (${scale})`);
      assert.ok(diff <= 2e-5 * scale, `max |wasm - ref| ${diff} vs logit scale ${scale}`);
      assert.equal(argmax(wasm.last), argmax(ref.last));
    });
  });
}
