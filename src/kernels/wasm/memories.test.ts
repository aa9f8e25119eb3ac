// The wasm backend beyond one memory: weights placed first-fit across several wasm memories give the
// same logits, bit for bit, as one memory (each op runs the same kernels on the same operands, only
// staged into the weight's memory), on both reference checkpoints; placement and its errors.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadBackend, registerBackend, type Kernels } from '../api.ts';
import '../index.ts';
import { DeepseekModel } from '../../model/deepseek.ts';
import { LatentCache } from '../../model/latent-cache.ts';
import { WASM_MEMORY_BYTES, WasmOps, memoriesFor } from './memories.ts';
import { WasmOutOfMemoryError } from './heap.ts';
import { runOpSuite } from '../ops.test-suite.ts';
import { REF_DIR, VARIANTS, expected, maxAbsDiff } from '../../../test/helpers.ts';

const CAP = 2 << 20; // a fraction of a tiny checkpoint (bf16 8.8 MB, fp8 ~3 MB): several memories
let split: WasmOps | null = null;
registerBackend({
  name: 'wasm-split-test',
  async create(o) {
    split = await WasmOps.create(o.threads, { weightBytesPerMemory: CAP });
    return split;
  },
});

function logitsOf(model: DeepseekModel, ids: number[]): Float32Array {
  const cache = model.createCache(LatentCache.blocksFor(ids.length));
  const blockTable = Int32Array.from({ length: cache.numBlocks }, (_, i) => i);
  return model.forward({ tokens: Int32Array.from(ids), seqs: [{ blockTable, numCached: 0, numNew: ids.length }] }, cache, { allPositions: true });
}

for (const variant of VARIANTS) {
  describe(`wasm weights across memories (${variant})`, () => {
    let one: Kernels, many: Kernels;
    let a: DeepseekModel, b: DeepseekModel;
    before(async () => {
      one = await loadBackend('wasm', { threads: 2 });
      many = await loadBackend('wasm-split-test', { threads: 2 });
      a = await DeepseekModel.load(join(REF_DIR, variant), one);
      b = await DeepseekModel.load(join(REF_DIR, variant), many, { flashMla: 'wasm' }); // as the 'wasm' backend gets
    });
    after(async () => {
      a?.close(); b?.close();
      await one?.dispose(); await many?.dispose();
    });

    it('places the weights in several memories', () => {
      assert.ok(split!.memories.length >= 2, `${split!.memories.length} memories`);
      assert.equal((one as unknown as { memories?: unknown }).memories, undefined);
    });

    it('gives the same logits bit for bit as one memory, and the reference outputs', () => {
      const V = a.config.vocab_size;
      for (const p of expected(variant).prompts) {
        const la = logitsOf(a, p.prompt);
        const lb = logitsOf(b, p.prompt);
        assert.deepEqual(lb, la);
        const d = maxAbsDiff(lb.subarray(lb.length - V), p.prefill_last_logits);
        assert.ok(d <= 2e-5, `last logits differ from the reference by ${d}`);
      }
    });
  });
}

describe('placement', () => {
  it('first-fit counts the memories a load needs, a big tensor gets its own', () => {
    const G = 2 ** 30;
    assert.equal(memoriesFor([], 3 * G), 1);
    assert.equal(memoriesFor([G, G, G], 3.5 * G), 1);
    assert.equal(memoriesFor([2 * G, 2 * G, G], 3.5 * G), 2);
    assert.equal(memoriesFor([2 * G, 2 * G, 2 * G, 1000], 3.5 * G), 3);
    assert.equal(memoriesFor([3.9 * G], 3.5 * G), 1);
    assert.equal(memoriesFor([G], 3.5 * G, [3 * G]), 2);
    assert.throws(() => memoriesFor([WASM_MEMORY_BYTES + 1], 3.5 * G), WasmOutOfMemoryError);
  });

  it('an allocation beyond what was reserved is a typed error, not a crash', async () => {
    const ops = await WasmOps.create(1, { weightBytesPerMemory: (1 << 20) + 1024 });
    try {
      await ops.reserve([1 << 19, 1 << 19, 1 << 19]);
      assert.equal(ops.memories.length, 2);
      const w = ops.allocWeight('bf16', 512, 512); // 512 KiB
      assert.ok(ops.memories[0]!.owns(w.data));
      ops.allocWeight('bf16', 512, 512);
      const w3 = ops.allocWeight('bf16', 512, 512);
      assert.ok(ops.memories[1]!.owns(w3.data), 'the third goes to the second memory');
      // A matmul whose weight lives in memory 1 and x in memory 0 (staged across): same as plain arrays.
      const x = ops.allocWeight('f32', 1, 512).data as Float32Array;
      x.fill(0.5);
      w3.data.fill(0x3f80); // bf16 1.0
      const y = ops.matmul(x, 1, w3);
      assert.equal(y.length, 512);
      assert.ok(y.every((v) => v === 256));
      assert.throws(() => ops.allocWeight('f32', 65536, 16384), WasmOutOfMemoryError);
    } finally {
      await ops.dispose();
    }
  });
});

// Pointers past 2^31: a memory whose first 2.5 GiB are taken (reserved, never touched, so not resident)
// puts every weight, activation and staging block above the signed 32-bit range, where an `x >> 2`
// in the JS drivers (instead of `>>> 2`) or a signed pointer in a kernel would go wrong. The whole op
// suite runs there against its float64 checks.
registerBackend({
  name: 'wasm-high-test',
  async create(o) {
    const ops = await WasmOps.create(o.threads);
    ops.runtime.heap.alloc(2.5 * 2 ** 30);
    return ops;
  },
});
runOpSuite('wasm-high-test', { threads: 2 });
