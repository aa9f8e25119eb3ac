// `quantize: 'fp8'` end to end, against data nobody here wrote: tiny-v3-fp8 holds tiny-v3-bf16's values
// quantized by the reference's own writer (../shared/testdata/deepseek-ref/README.md). Loading the BF16
// checkpoint with quantize 'fp8' must give its FP8 checkpoint's layout: the same tensors in FP8, the
// same block scales bit for bit, the same codes except where the two rules differ (below), and logits
// within the golden test's tolerance of expected_absorb.json; on the ref and wasm backends.
//
// The one difference, measured: the reference writer stores every value that rounds to zero as +0
// (0x00, it has no 0x80 code at all), while DeepGEMM's per_block_cast_to_fp8 (a torch cast to
// float8_e4m3fn, which keeps the sign) and therefore this loader give a negative value that rounds to
// zero the code 0x80 (-0). In tiny-v3 that is 4 of its 3,735,552 quantized weights; both decode to
// zero, so every product and every logit is the same.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadBackend, type Kernels } from '../src/kernels/index.ts';
import type { GroupedWeight, WeightMatrix } from '../src/kernels/api.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { LatentCache } from '../src/model/latent-cache.ts';
import { REF_DIR, argmax, expected, maxAbsDiff } from './helpers.ts';

const LOGIT_TOL = 2e-5; // test/golden.test.ts's tolerance for both checkpoints
const BF16_DIR = join(REF_DIR, 'tiny-v3-bf16');
const FP8_DIR = join(REF_DIR, 'tiny-v3-fp8');

type AnyWeight = WeightMatrix | GroupedWeight;
const isWeight = (v: unknown): v is AnyWeight => typeof v === 'object' && v !== null && 'dtype' in v && 'data' in v;

/** Every weight and vector of a ModelWeights tree, by path. */
function leaves(root: unknown, path = '', out = new Map<string, AnyWeight | Float32Array>()): Map<string, AnyWeight | Float32Array> {
  if (root instanceof Float32Array || isWeight(root)) out.set(path, root);
  else if (typeof root === 'object' && root !== null) {
    for (const [k, v] of Object.entries(root)) leaves(v, path ? `${path}.${k}` : k, out);
  }
  return out;
}

interface Comparison { fp8: number; other: number; codes: number; negZero: number }

/** Compares two loaded models' weights; codes may differ only as 0x80 (ours) vs 0x00 (theirs). */
function compareWeights(ours: unknown, theirs: unknown): Comparison {
  const a = leaves(ours), b = leaves(theirs);
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), 'same set of weights');
  const r: Comparison = { fp8: 0, other: 0, codes: 0, negZero: 0 };
  for (const [path, x] of a) {
    const y = b.get(path)!;
    if (x instanceof Float32Array || y instanceof Float32Array) {
      assert.deepEqual(x, y, `${path}: vector`);
      continue;
    }
    assert.equal(x.dtype, y.dtype, `${path}: format`);
    assert.equal(x.rows, y.rows);
    assert.equal(x.cols, y.cols);
    if (x.dtype === 'fp8' && y.dtype === 'fp8') {
      r.fp8++;
      assert.deepEqual(new Uint32Array(x.scaleInv.slice().buffer), new Uint32Array(y.scaleInv.slice().buffer), `${path}: scales bit for bit`);
      for (let i = 0; i < x.data.length; i++) {
        r.codes++;
        if (x.data[i] === y.data[i]) continue;
        assert.ok(x.data[i] === 0x80 && y.data[i] === 0x00, `${path}[${i}]: code 0x${x.data[i]!.toString(16)} vs reference 0x${y.data[i]!.toString(16)}`);
        r.negZero++;
      }
    } else {
      r.other++;
      assert.deepEqual(x.data, y.data, `${path}: stored values`);
    }
  }
  return r;
}

for (const backend of ['ref', 'wasm']) {
  describe(`quantize fp8 while loading, on ${backend}`, () => {
    let kernels: Kernels;
    let quantized: DeepseekModel, reference: DeepseekModel;
    before(async () => {
      kernels = await loadBackend(backend, { threads: backend === 'ref' ? 1 : 2 });
      quantized = await DeepseekModel.load(BF16_DIR, kernels, { quantize: 'fp8' });
      reference = await DeepseekModel.load(FP8_DIR, kernels);
    });
    after(async () => {
      quantized?.close();
      reference?.close();
      await kernels?.dispose();
    });

    it('tiny-v3-bf16 + quantize fp8 = tiny-v3-fp8: same FP8 tensors, scales bit for bit, codes but for 4 signed zeros', (t) => {
      const r = compareWeights(quantized.weights, reference.weights);
      // 3 layers + the MTP block, each: 5 attention projections and (dense) 3 or (MoE) 3 grouped + 3 shared.
      assert.equal(r.fp8, 5 * 4 + 3 + 6 * 3, 'FP8 matrices');
      assert.ok(r.other >= 4, 'embed, lm_head, routers, eh_proj stay as stored');
      assert.equal(r.codes, 3_735_552);
      assert.equal(r.negZero, 4, 'negative values that round to zero: 0x80 here, 0x00 in the reference');
      const w = quantized.weights;
      assert.equal(w.layers[1]!.moe!.router.dtype, 'bf16');
      assert.equal(w.lmHead.dtype, 'bf16');
      assert.equal(w.mtp[0]!.ehProj.dtype, 'bf16');
      assert.equal(w.mtp[0]!.block.attn.o.dtype, 'fp8');
      t.diagnostic(`${r.fp8} FP8 matrices, ${r.codes} codes, ${r.negZero} differ (-0 vs +0)`);
    });

    it('an FP8 checkpoint with quantize fp8 loads as stored', async () => {
      const again = await DeepseekModel.load(FP8_DIR, kernels, { quantize: 'fp8', mtp: false });
      try {
        const r = compareWeights(again.weights, { ...reference.weights, mtp: [] });
        assert.equal(r.negZero, 0);
        assert.equal(r.fp8, 5 * 3 + 3 + 6 * 2);
      } finally {
        again.close();
      }
    });

    it('logits match expected_absorb.json of tiny-v3-fp8 (prefill + 16 greedy decode steps) and the FP8 checkpoint bit for bit', (t) => {
      const e = expected('tiny-v3-fp8', 'absorb');
      let worst = 0;
      for (const p of e.prompts) {
        const L = p.prompt.length;
        const run = (m: DeepseekModel) => {
          const cache = m.createCache(LatentCache.blocksFor(L + 16));
          const blockTable = Int32Array.from({ length: cache.numBlocks }, (_, i) => i);
          const rows = [m.forward({ tokens: Int32Array.from(p.prompt), seqs: [{ blockTable, numCached: 0, numNew: L }] }, cache).slice()];
          for (let j = 0; j < 16; j++) {
            rows.push(m.forward({ tokens: Int32Array.of(p.greedy_tokens[j]!), seqs: [{ blockTable, numCached: L + j, numNew: 1 }] }, cache).slice());
          }
          return rows;
        };
        const ours = run(quantized), theirs = run(reference);
        const want = [p.prefill_last_logits, ...p.decode_logits];
        ours.forEach((row, j) => {
          const d = maxAbsDiff(row, want[j]!);
          worst = Math.max(worst, d);
          assert.ok(d <= LOGIT_TOL, `prompt len ${L} step ${j}: logits differ by ${d}`);
          assert.equal(argmax(row), j < 16 ? p.greedy_tokens[j] : p.next_token_after_decode, `prompt len ${L} step ${j}: greedy token`);
          assert.deepEqual(row, theirs[j], `prompt len ${L} step ${j}: same logits as the FP8 checkpoint`);
        });
      }
      assert.ok(worst > 0, 'compared something');
      t.diagnostic(`max |logit - expected| = ${worst.toExponential(2)} (tolerance ${LOGIT_TOL})`);
    });
  });
}
