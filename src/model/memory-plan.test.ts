// The memory plan against what loading really takes: the plan's allocations are what the wasm backend
// places (byte for byte, up to its 64-byte alignment), quantization halves the matrices, and the plan
// refuses with the right problems and fixes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadBackend } from '../kernels/index.ts';
import { Checkpoint } from '../weights/checkpoint.ts';
import { DeepseekModel } from './deepseek.ts';
import { loadConfig, parseConfig } from './config.ts';
import { presetConfig } from './presets.ts';
import { availableMemory, fittingKvBlocks, KV_CACHE_MAX_BYTES, planMemory, weightFootprint, WASM_TENSOR_MAX_BYTES } from './memory-plan.ts';
import { REF_DIR } from '../../test/helpers.ts';

const GiB = 2 ** 30;
const SIZES = { maxModelLen: 4096, maxNumSeqs: 4, maxBatchTokens: 512 };

function footprintOf(variant: string, quantize?: 'fp8') {
  const dir = join(REF_DIR, variant);
  const ck = Checkpoint.open(dir);
  try {
    return weightFootprint(loadConfig(dir), ck, { quantize });
  } finally {
    ck.close();
  }
}

describe('memory plan', () => {
  it('the planned allocations are what the wasm backend places when loading', async () => {
    for (const variant of ['tiny-v3-bf16', 'tiny-v3-fp8']) {
      for (const quantize of [undefined, 'fp8'] as const) {
        const fp = footprintOf(variant, quantize);
        const k = await loadBackend('wasm', { threads: 1 });
        try {
          const m = await DeepseekModel.load(join(REF_DIR, variant), k, { quantize });
          const placed = k.memoryStats().weightBytes;
          const planned = fp.allocations.reduce((a, b) => a + b, 0);
          // Each allocation is rounded up to 64 bytes (FP8: codes and scales separately).
          assert.ok(placed >= planned && placed - planned <= 128 * fp.allocations.length, `${variant} ${quantize}: placed ${placed}, planned ${planned}`);
          m.close();
        } finally {
          await k.dispose();
        }
      }
    }
  });

  it('--quantize fp8 on the BF16 checkpoint plans exactly the FP8 checkpoint\'s matrices', () => {
    const q = footprintOf('tiny-v3-bf16', 'fp8');
    const native = footprintOf('tiny-v3-fp8');
    assert.equal(q.matrices, native.matrices);
    assert.equal(q.absorbedMla, native.absorbedMla);
    assert.ok(footprintOf('tiny-v3-bf16').matrices > 1.5 * q.matrices);
  });

  it('refuses with the numbers and the fixes that help', () => {
    const c = parseConfig(presetConfig('v2-lite'));
    const small = planMemory(c, null, SIZES, { bytes: 20 * GiB, source: 'test' });
    assert.equal(small.fits, false);
    assert.match(small.problems[0]!, /needs [\d.]+ GiB but 20\.00 GiB is available \(test\)/);
    assert.match(small.fixes[0]!, /^--quantize fp8 \(weights [\d.]+ GiB -> [\d.]+ GiB, then it fits\)$/);
    const q = planMemory(c, null, { ...SIZES, quantize: 'fp8' }, { bytes: 20 * GiB, source: 'test' });
    assert.equal(q.fits, true, q.problems.join('; '));
    assert.ok(q.weights.total < 16.5 * GiB && q.weights.total > 14 * GiB, `${q.weights.total}`);
    // V2-Lite's latent cache: 27 layers x (512 + 64) f32 per token.
    assert.equal(q.kvCache.bytesPerToken, 27 * 576 * 4);
    // A KV cache beyond one wasm memory is refused whatever the machine has.
    const long = planMemory(c, null, { ...SIZES, quantize: 'fp8', maxModelLen: 163840, maxNumSeqs: 1 }, { bytes: 1024 * GiB, source: 'test' });
    assert.equal(long.fits, false);
    assert.ok(long.kvCache.bytes > KV_CACHE_MAX_BYTES);
    assert.match(long.problems.join(';'), /KV cache of 163840 tokens/);
    // ... and the fitting block count stays under that memory and the machine.
    const blocks = fittingKvBlocks(q, 1_000_000);
    assert.ok(blocks * 64 * q.kvCache.bytesPerToken <= KV_CACHE_MAX_BYTES);
    assert.ok(blocks > 64, `${blocks}`);
  });

  it('V3 is planned from config.json alone (FP8 as published) and refused on 24 GB; Kimi-K2 exceeds one wasm memory per layer', () => {
    const v3 = planMemory(parseConfig(presetConfig('v3')), null, SIZES, { bytes: 24 * GiB, source: 'test' });
    assert.equal(v3.fits, false);
    assert.ok(v3.weights.storedDtypes.F8_E4M3! > 600e9, JSON.stringify(v3.weights.storedDtypes));
    assert.ok(v3.weights.total > 600 * GiB && v3.weights.total < 700 * GiB, `${v3.weights.total}`);
    assert.ok(Math.max(...v3.allocations) <= WASM_TENSOR_MAX_BYTES);
    const k2 = planMemory(parseConfig(presetConfig('kimi-k2')), null, SIZES, { bytes: 2048 * GiB, source: 'test' });
    assert.equal(k2.fits, false);
    assert.match(k2.problems.join(';'), /stacked experts\) takes 5\.25 GiB/);
  });

  it('speculative decoding: the MTP module\'s weights and its one-layer latent cache are planned', () => {
    const c = parseConfig(presetConfig('v3'));
    const plain = planMemory(c, null, { ...SIZES, mtp: false }, { bytes: 2048 * GiB, source: 'test' });
    const spec = planMemory(c, null, { ...SIZES, mtp: true, mtpCache: true }, { bytes: 2048 * GiB, source: 'test' });
    assert.equal(spec.kvCache.bytesPerToken * c.num_hidden_layers, plain.kvCache.bytesPerToken * (c.num_hidden_layers + 1));
    // V3's MTP module: a MoE decoder layer plus eh_proj, about 11.5B parameters in FP8.
    assert.ok(spec.weights.total - plain.weights.total > 10 * GiB, `${spec.weights.total - plain.weights.total}`);
  });

  it('available memory: SEEKD_MEMORY_LIMIT overrides, and a bad value is a typed error', () => {
    const old = process.env.SEEKD_MEMORY_LIMIT;
    try {
      process.env.SEEKD_MEMORY_LIMIT = '123456789';
      assert.deepEqual(availableMemory(), { bytes: 123456789, source: 'SEEKD_MEMORY_LIMIT' });
      process.env.SEEKD_MEMORY_LIMIT = '12GB';
      assert.throws(() => availableMemory(), RangeError);
      delete process.env.SEEKD_MEMORY_LIMIT;
      const a = availableMemory();
      assert.ok(a.bytes > 0 && a.source.length > 0);
    } finally {
      if (old === undefined) delete process.env.SEEKD_MEMORY_LIMIT;
      else process.env.SEEKD_MEMORY_LIMIT = old;
    }
  });
});
