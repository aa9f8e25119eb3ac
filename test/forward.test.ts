// Forward-pass behaviours the reference has no vectors for: chunked prefill through the paged cache,
// varlen batches of several sequences, scattered block tables, and input validation.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadBackend, type Kernels } from '../src/kernels/index.ts';
import { DeepseekModel, ModelInputError } from '../src/model/deepseek.ts';
import { CacheError } from '../src/model/latent-cache.ts';
import { REF_DIR, expected, maxAbsDiff } from './helpers.ts';
import { mkdirSync, mkdtempSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Checkpoint } from '../src/weights/checkpoint.ts';
import { writeSafetensors, type TensorToWrite } from '../src/weights/writer.ts';
import { WeightError } from '../src/model/weight-map.ts';
import { SafetensorsError } from '../src/weights/errors.ts';

describe('forward (tiny-v3-fp8)', () => {
  let kernels: Kernels;
  let model: DeepseekModel;
  const e = () => expected('tiny-v3-fp8');
  before(async () => {
    kernels = await loadBackend('ref');
    model = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-fp8'), kernels);
  });
  after(async () => {
    model?.close();
    await kernels?.dispose();
  });

  for (const attn of ['absorb', 'naive'] as const) {
    it(`${attn}: the 23-token prompt prefilled in chunks of 5 gives the reference logits (2e-5), every position`, () => {
      const p = e().prompts.find((x) => x.prompt.length === 23)!;
      const cache = model.createCache(1);
      const blockTable = Int32Array.of(0);
      // Whole-prompt logits at every position, for comparison with the chunked run.
      const full = model.forward({ tokens: Int32Array.from(p.prompt), seqs: [{ blockTable, numCached: 0, numNew: 23 }] }, model.createCache(1), { attn, allPositions: true });
      let last: Float32Array | undefined;
      const V = model.config.vocab_size;
      for (let s = 0; s < 23; s += 5) {
        const n = Math.min(5, 23 - s);
        const lg = model.forward({ tokens: Int32Array.from(p.prompt.slice(s, s + n)), seqs: [{ blockTable, numCached: s, numNew: n }] }, cache, { attn, allPositions: true });
        assert.equal(lg.length, n * V);
        const d = maxAbsDiff(lg, full.subarray(s * V, (s + n) * V));
        assert.ok(d <= 2e-5, `chunk at ${s}: all-position logits differ from the one-shot prefill by ${d}`);
        last = lg.subarray((n - 1) * V);
      }
      const d = maxAbsDiff(last!, p.prefill_last_logits);
      assert.ok(d <= 2e-5, `last logits differ from the reference by ${d}`);
    });
  }

  it('a varlen batch (different lengths, cached prefixes, scattered blocks) equals each sequence alone', () => {
    const prompts = e().prompts;
    const V = model.config.vocab_size;
    // Alone: prefill each prompt, then one decode step with its first greedy token.
    const alone = prompts.map((p) => {
      const cache = model.createCache(1);
      const bt = Int32Array.of(0);
      model.forward({ tokens: Int32Array.from(p.prompt), seqs: [{ blockTable: bt, numCached: 0, numNew: p.prompt.length }] }, cache);
      return model.forward({ tokens: Int32Array.of(p.greedy_tokens[0]!), seqs: [{ blockTable: bt, numCached: p.prompt.length, numNew: 1 }] }, cache);
    });
    // Batched: all four prompts in one forward (each in its own non-contiguous block), then all four decodes.
    const cache = model.createCache(8);
    const tables = [Int32Array.of(6), Int32Array.of(1), Int32Array.of(4), Int32Array.of(3)];
    const pre = model.forward({
      tokens: Int32Array.from(prompts.flatMap((p) => p.prompt)),
      seqs: prompts.map((p, i) => ({ blockTable: tables[i]!, numCached: 0, numNew: p.prompt.length })),
    }, cache);
    assert.equal(pre.length, 4 * V);
    prompts.forEach((p, i) => {
      const d = maxAbsDiff(pre.subarray(i * V, (i + 1) * V), p.prefill_last_logits);
      assert.ok(d <= 2e-5, `batched prefill seq ${i}: ${d}`);
    });
    const dec = model.forward({
      tokens: Int32Array.from(prompts.map((p) => p.greedy_tokens[0]!)),
      seqs: prompts.map((p, i) => ({ blockTable: tables[i]!, numCached: p.prompt.length, numNew: 1 })),
    }, cache);
    prompts.forEach((_, i) => {
      const d = maxAbsDiff(dec.subarray(i * V, (i + 1) * V), alone[i]!);
      assert.ok(d <= 1e-6, `batched decode seq ${i} differs from alone by ${d}`);
    });
    // Mixed batch: one sequence decoding while another prefills a chunk.
    const c2 = model.createCache(4);
    const p3 = prompts[3]!, p1 = prompts[1]!;
    model.forward({ tokens: Int32Array.from(p3.prompt.slice(0, 10)), seqs: [{ blockTable: Int32Array.of(2), numCached: 0, numNew: 10 }] }, c2);
    model.forward({ tokens: Int32Array.from(p1.prompt), seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: p1.prompt.length }] }, c2);
    const mixed = model.forward({
      tokens: Int32Array.from([...p3.prompt.slice(10), p1.greedy_tokens[0]!]),
      seqs: [{ blockTable: Int32Array.of(2), numCached: 10, numNew: 13 }, { blockTable: Int32Array.of(0), numCached: p1.prompt.length, numNew: 1 }],
    }, c2);
    assert.ok(maxAbsDiff(mixed.subarray(0, V), p3.prefill_last_logits) <= 2e-5);
    assert.ok(maxAbsDiff(mixed.subarray(V), alone[1]!) <= 1e-6);
  });

  it('positions spanning several 64-row blocks (a block table of 2 non-adjacent blocks)', () => {
    // 70 tokens: positions 64..69 live in the second block. Same logits with blocks [0,1] and [5,2].
    const toks = Int32Array.from({ length: 70 }, (_, i) => (i * 37 + 11) % model.config.vocab_size);
    const a = model.forward({ tokens: toks, seqs: [{ blockTable: Int32Array.of(0, 1), numCached: 0, numNew: 70 }] }, model.createCache(2));
    const c = model.createCache(6);
    model.forward({ tokens: toks.subarray(0, 60), seqs: [{ blockTable: Int32Array.of(5, 2), numCached: 0, numNew: 60 }] }, c);
    const b = model.forward({ tokens: toks.subarray(60), seqs: [{ blockTable: Int32Array.of(5, 2), numCached: 60, numNew: 10 }] }, c);
    assert.ok(maxAbsDiff(a, b) <= 2e-5, `${maxAbsDiff(a, b)}`);
  });

  it('rejects bad input with typed errors', () => {
    const cache = model.createCache(1);
    const bt = Int32Array.of(0);
    assert.throws(() => model.forward({ tokens: Int32Array.of(512), seqs: [{ blockTable: bt, numCached: 0, numNew: 1 }] }, cache), ModelInputError);
    assert.throws(() => model.forward({ tokens: Int32Array.of(-1), seqs: [{ blockTable: bt, numCached: 0, numNew: 1 }] }, cache), ModelInputError);
    assert.throws(() => model.forward({ tokens: Int32Array.of(1, 2), seqs: [{ blockTable: bt, numCached: 0, numNew: 1 }] }, cache), ModelInputError);
    assert.throws(() => model.forward({ tokens: Int32Array.of(1), seqs: [{ blockTable: bt, numCached: 64, numNew: 1 }] }, cache), ModelInputError);
    assert.throws(() => model.forward({ tokens: Int32Array.of(1), seqs: [{ blockTable: Int32Array.of(3), numCached: 0, numNew: 1 }] }, cache), CacheError);
    assert.throws(() => model.forward({ tokens: new Int32Array(0), seqs: [] }, cache), ModelInputError);
  });

  it('MTP module is loaded into its own structure and never used for next-token logits', () => {
    const mtp = model.weights.mtp;
    assert.equal(mtp.length, 1);
    const m = mtp[0]!;
    assert.equal(m.ehProj.rows, 256);
    assert.equal(m.ehProj.cols, 512);
    assert.equal(m.enorm.length, 256);
    assert.ok(m.block.moe && m.block.moe.experts!.gate.groups === 16 && m.block.moe.experts!.down.groups === 16);
    assert.equal(model.weights.layers.length, 3);
  });

  it('tracer spans wrap each layer\'s attention and MoE/MLP', () => {
    const names: string[] = [];
    const tracer = { span<T>(name: string, cat: string, fn: () => T): T { assert.equal(cat, 'compute'); names.push(name); return fn(); } };
    model.forward({ tokens: Int32Array.of(1, 2), seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: 2 }] }, model.createCache(1), { tracer });
    assert.deepEqual(names, ['layer.0.attn', 'layer.0.mlp', 'layer.1.attn', 'layer.1.moe', 'layer.2.attn', 'layer.2.moe']);
  });

  it('a checkpoint missing a tensor or an FP8 scale is refused with an error naming the tensor', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'seekd-badck-'));
    try {
      const src = join(REF_DIR, 'tiny-v3-fp8');
      const ck = Checkpoint.open(src);
      const all: TensorToWrite[] = [...ck.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape], data: ck.readBytes(t.name) }));
      ck.close();
      const cfg = readFileSync(join(src, 'config.json'), 'utf8');
      const write = (dir: string, drop: string) => {
        const d = join(tmp, dir);
        mkdirSync(d);
        writeFileSync(join(d, 'config.json'), cfg);
        writeSafetensors(join(d, 'model.safetensors'), all.filter((t) => t.name !== drop));
        return d;
      };
      const noO = write('no-o', 'model.layers.1.self_attn.o_proj.weight');
      await assert.rejects(DeepseekModel.load(noO, kernels), (e: unknown) => e instanceof WeightError && e.tensor === 'model.layers.1.self_attn.o_proj.weight');
      const noScale = write('no-scale', 'model.layers.2.mlp.experts.5.down_proj.weight_scale_inv');
      await assert.rejects(DeepseekModel.load(noScale, kernels), (e: unknown) => e instanceof SafetensorsError && /experts\.5\.down_proj/.test(e.message));
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
