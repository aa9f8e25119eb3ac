// MoE on grouped kernels: the default executor (tokens grouped by expert, one grouped product per
// projection over the stacked expert weights) against the per-expert loop on the `ref` backend (the
// oracle), on both shared checkpoints (BF16 and FP8 experts), on ref, wasm x1, wasm x2 and webgpu; and
// proof that the grouped path is the one taken (counting kernels), so reverting to per-expert matmuls
// fails here.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { closeDevice } from '../kernels/webgpu/device.ts';
import { loadWebGpuBackend, type WebGpuBackend } from '../kernels/webgpu/ops.ts';
import { mulberry32 } from '../tensor/random.ts';
import { Checkpoint } from '../weights/checkpoint.ts';
import { loadConfig, type DeepseekConfig } from './config.ts';
import { DeepseekModel } from './deepseek.ts';
import {
  gatherRows, localMoeExecutor, perExpertMoeExecutor, planByExpert, scatterWeighted, type MoeContext,
} from './moe.ts';
import { loadWeights, type ModelWeights } from './weight-map.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const REF_DIR = [join(ROOT, '..', 'shared'), join(ROOT, '..', '..', 'shared')]
  .map((d) => join(d, 'testdata', 'deepseek-ref')).find((d) => existsSync(d)) ?? join(ROOT, '..', 'shared', 'testdata', 'deepseek-ref');
const VARIANTS = ['tiny-v3-bf16', 'tiny-v3-fp8'] as const;
const MOE_LAYER = 1;

/**
 * Tolerance: both sides sum H = 256 (gate/up) or 64 (down) products per output, the ref in f64,
 * wasm/webgpu in f32; outputs are O(1). Observed worst ≈ 3.5e-7·(1 + |y|); 5e-6 leaves ~15x margin yet
 * is far below any wrong expert, weight or row (errors of O(0.01) and up).
 */
const TOL = 5e-6;

function loadAll(dir: string, k: Kernels): { config: DeepseekConfig; weights: ModelWeights } {
  const config = loadConfig(dir);
  const ck = Checkpoint.open(dir);
  try {
    return { config, weights: loadWeights(ck, k, config, { mtp: false }) };
  } finally {
    ck.close();
  }
}

/** A batch of T tokens: x [T, H] and k distinct experts per token with positive weights. */
function batch(c: DeepseekConfig, T: number, seed: number): { x: Float32Array; idx: Int32Array; wts: Float32Array } {
  const r = mulberry32(seed);
  const H = c.hidden_size, K = c.num_experts_per_tok!, E = c.n_routed_experts!;
  const x = Float32Array.from({ length: T * H }, () => 2 * r() - 1);
  const idx = new Int32Array(T * K);
  for (let t = 0; t < T; t++) {
    const pool = Array.from({ length: E }, (_, e) => e);
    for (let j = 0; j < K; j++) idx[t * K + j] = pool.splice(Math.floor(r() * pool.length), 1)[0]!;
  }
  const wts = Float32Array.from({ length: T * K }, () => 0.1 + r());
  return { x, idx, wts };
}

function assertClose(what: string, got: Float32Array, want: Float32Array): number {
  assert.equal(got.length, want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!));
    if (!(err <= TOL)) assert.fail(`${what}: [${i}] = ${got[i]}, per-expert ref ${want[i]}`);
    worst = Math.max(worst, err);
  }
  assert.ok(want.some((v) => Math.abs(v) > 0.05), `${what}: reference output is not trivially small`);
  return worst;
}

/** Kernels whose matmul / groupedMatmul calls are counted. */
function counting(k: Kernels): { kernels: Kernels; calls: { matmul: number; groupedMatmul: number } } {
  const calls = { matmul: 0, groupedMatmul: 0 };
  const kernels: Kernels = {
    ...k,
    matmul: (...a) => { calls.matmul++; return k.matmul(...a); },
    groupedMatmul: (...a) => { calls.groupedMatmul++; return k.groupedMatmul(...a); },
  };
  return { kernels, calls };
}

// Decode-sized (T = 3: mostly one-row experts) and prefill-sized (T = 40: every expert has many rows).
const SIZES = [3, 40];

for (const variant of VARIANTS) {
  describe(`MoE grouped vs per-expert (${variant})`, () => {
    const dir = join(REF_DIR, variant);
    let ref: Kernels;
    let refW: { config: DeepseekConfig; weights: ModelWeights };
    const want = new Map<number, Float32Array>();
    before(async () => {
      ref = await loadBackend('ref');
      refW = loadAll(dir, ref);
      const ctx: MoeContext = { config: refW.config, kernels: ref, moe: (l) => refW.weights.layers[l]?.moe };
      for (const T of SIZES) {
        const b = batch(refW.config, T, T);
        want.set(T, perExpertMoeExecutor(ctx).run(MOE_LAYER, b.x, T, b.idx, b.wts));
      }
    });
    after(async () => {
      await ref?.dispose();
    });

    it('experts are loaded stacked: one grouped weight per projection, expert e = group e', () => {
      const ex = refW.weights.layers[MOE_LAYER]!.moe!.experts!;
      const c = refW.config;
      assert.deepEqual([ex.gate.groups, ex.gate.rows, ex.gate.cols], [16, c.moe_intermediate_size, c.hidden_size]);
      assert.deepEqual([ex.down.groups, ex.down.rows, ex.down.cols], [16, c.hidden_size, c.moe_intermediate_size]);
      assert.equal(ex.up.dtype, variant.endsWith('fp8') ? 'fp8' : 'bf16');
      // Expert 5's up_proj landed in slice 5, byte for byte.
      const ck = Checkpoint.open(dir);
      try {
        const name = `model.layers.${MOE_LAYER}.mlp.experts.5.up_proj.weight`;
        const raw = new Uint8Array(ck.info(name).byteLength);
        ck.readInto(name, raw);
        const n = ex.up.rows * ex.up.cols, bytes = ex.up.dtype === 'fp8' ? 1 : 2;
        const slice = new Uint8Array(ex.up.data.buffer, ex.up.data.byteOffset + 5 * n * bytes, n * bytes);
        assert.deepEqual(slice, raw);
      } finally {
        ck.close();
      }
    });

    for (const [backend, threads] of [['ref', 1], ['wasm', 1], ['wasm', 2]] as const) {
      it(`${backend} x${threads}: grouped executor = per-expert loop on ref within ${TOL}·(1 + |y|), 3 grouped calls and no matmul`, async (t) => {
        const k = await loadBackend(backend, { threads });
        try {
          const { config, weights } = loadAll(dir, k);
          const { kernels, calls } = counting(k);
          const ctx: MoeContext = { config, kernels, moe: (l) => weights.layers[l]?.moe };
          for (const T of SIZES) {
            const b = batch(config, T, T);
            const before = { ...calls };
            const got = localMoeExecutor(ctx).run(MOE_LAYER, b.x, T, b.idx, b.wts);
            assert.equal(calls.groupedMatmul - before.groupedMatmul, 3, 'gate, up and down: one grouped product each');
            assert.equal(calls.matmul - before.matmul, 0, 'no per-expert matmul');
            if (backend === 'ref') assert.deepEqual(got, want.get(T), 'same ops on the same rows: bit-identical on ref');
            else t.diagnostic(`T=${T}: worst ${assertClose(`${backend} x${threads} T=${T}`, got, want.get(T)!).toExponential(2)}`);
          }
        } finally {
          await k.dispose();
        }
      });
    }

    it('webgpu: the grouped pipeline (plan, gather, 3 grouped products, siluMul, scatter) = per-expert loop on ref', async (t) => {
      let gpu: WebGpuBackend | undefined;
      try {
        gpu = await loadWebGpuBackend();
        const ex = refW.weights.layers[MOE_LAYER]!.moe!.experts!; // JS-resident weights, uploaded once
        const c = refW.config, H = c.hidden_size, K = c.num_experts_per_tok!;
        for (const T of SIZES) {
          const b = batch(c, T, T);
          const plan = planByExpert(b.idx, T, K, ex.gate.groups);
          const xs = gatherRows(plan, b.x, H, K);
          const g = await gpu.groupedMatmul(xs, plan.rows, ex.gate, plan.segments);
          const u = await gpu.groupedMatmul(xs, plan.rows, ex.up, plan.segments);
          const y = await gpu.groupedMatmul(await gpu.siluMul(g, u), plan.rows, ex.down, plan.segments);
          t.diagnostic(`T=${T}: worst ${assertClose(`webgpu T=${T}`, scatterWeighted(plan, y, b.wts, T, H, K), want.get(T)!).toExponential(2)}`);
        }
      } finally {
        await closeDevice();
      }
    });
  });
}

describe('the model runs its MoE layers on grouped kernels', () => {
  it('one forward: 3 grouped products per MoE layer (+2 per layer for absorbed MLA), and the matmul count does not depend on how many experts are hit', async () => {
    const k = await loadBackend('ref');
    try {
      const { kernels, calls } = counting(k);
      const model = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-bf16'), kernels, { mtp: false });
      const moeLayers = model.weights.layers.filter((l) => l.moe).length;
      const run = (tokens: number[]) => {
        const before = { ...calls };
        model.forward({ tokens: Int32Array.from(tokens), seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: tokens.length }] }, model.createCache(1));
        return { matmul: calls.matmul - before.matmul, grouped: calls.groupedMatmul - before.groupedMatmul };
      };
      const one = run([7]); // 1 token: k = 4 experts per MoE layer
      const many = run(Array.from({ length: 23 }, (_, i) => (i * 37) % 512)); // 23 tokens: most of the 16 experts
      // Plus 2 per layer for the absorbed attention (all heads' W_UK and W_UV products, mla.ts absorbQuery/absorbOutput).
      const layers = model.weights.layers.length;
      assert.equal(one.grouped, 3 * moeLayers + 2 * layers);
      assert.equal(many.grouped, 3 * moeLayers + 2 * layers);
      assert.equal(many.matmul, one.matmul, 'matmul calls independent of the number of active experts');
      model.close();
    } finally {
      await k.dispose();
    }
  });
});
