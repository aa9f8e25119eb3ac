// The GPU-resident forward (src/model/gpu/forward.ts on WebGPU: Dawn over OpenGL ES on Mesa llvmpipe here)
// against DeepSeek's reference outputs on the two tiny checkpoints, and against the CPU forward on batches
// the reference has no vectors for. Tolerance: |logit difference| <= 2e-5 (the README's float32 bound;
// WGSL f32 with a different summation order than the CPU's; measured <= 5.8e-6 on llvmpipe), greedy
// tokens and expert choices identical, routing weights <= 1e-5.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBackend, type Kernels } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { GpuDeepseekModel } from '../src/model/gpu/forward.ts';
import { closeDevice, getDevice } from '../src/kernels/webgpu/device.ts';
import { WebGpuDeviceLostError, WebGpuLimitError } from '../src/kernels/webgpu/errors.ts';
import { setWebGpuSizeLimits } from '../src/kernels/webgpu/split.ts';
import { setGemmStrategy } from '../src/kernels/webgpu/deepgemm.ts';
import { REF_DIR, VARIANTS, argmax, expected, maxAbsDiff, seekd } from './helpers.ts';
import { VARIANT_CONFIGS, writeVariant, type VariantName } from './variants.ts';

const LOGIT_TOL = 2e-5;
const WEIGHT_TOL = 1e-5;

after(() => closeDevice());

for (const variant of VARIANTS) {
  describe(`GPU-resident forward on ${variant}`, () => {
    let kernels: Kernels;
    let model: DeepseekModel;
    let gpu: GpuDeepseekModel;
    before(async () => {
      kernels = await loadBackend('webgpu');
      model = await DeepseekModel.load(join(REF_DIR, variant), kernels, { mtp: false });
      gpu = await GpuDeepseekModel.create(model);
    });
    after(() => {
      gpu?.close();
      model?.close();
    });

    it('prefill, 16 greedy decode steps and routing match the reference', async () => {
      let worst = 0, worstW = 0;
      for (const p of expected(variant).prompts) {
        const cache = gpu.createCache(1);
        const blockTable = Int32Array.of(0);
        try {
          let logits = await gpu.forward({ tokens: Int32Array.from(p.prompt), seqs: [{ blockTable, numCached: 0, numNew: p.prompt.length }] }, cache, {
            onRouting: (l, experts, weights) => {
              const ref = p.prefill_routing[String(l)]!;
              const K = ref.experts[0]!.length;
              assert.deepEqual(Array.from(experts), ref.experts.flat(), `prompt ${p.prompt.length} layer ${l}: experts`);
              for (let t = 0; t < ref.weights.length; t++) worstW = Math.max(worstW, maxAbsDiff(weights.subarray(t * K, (t + 1) * K), ref.weights[t]!));
            },
          });
          worst = Math.max(worst, maxAbsDiff(logits, p.prefill_last_logits));
          for (let j = 0; j < 16; j++) {
            const tok = argmax(logits);
            assert.equal(tok, p.greedy_tokens[j], `prompt ${p.prompt.length}: greedy token ${j}`);
            logits = await gpu.forward({ tokens: Int32Array.of(tok), seqs: [{ blockTable, numCached: p.prompt.length + j, numNew: 1 }] }, cache);
            worst = Math.max(worst, maxAbsDiff(logits, p.decode_logits[j]!));
          }
          assert.equal(argmax(logits), p.next_token_after_decode);
        } finally {
          cache.destroy();
        }
      }
      console.log(`# ${variant}: max |logit - reference| ${worst.toExponential(2)}, routing weights ${worstW.toExponential(2)}`);
      assert.ok(worst <= LOGIT_TOL, `logits differ by ${worst}`);
      assert.ok(worstW <= WEIGHT_TOL, `routing weights differ by ${worstW}`);
    });

    it('weights are on the GPU in their stored format: FP8 one byte per parameter with its scales, BF16 two', () => {
      const r = gpu.weightReport;
      const fp8 = r.filter((w) => w.dtype === 'fp8'), bf16 = r.filter((w) => w.dtype === 'bf16');
      if (variant === 'tiny-v3-fp8') assert.ok(fp8.length > 0 && fp8.some((w) => w.label.includes('experts')));
      else assert.equal(fp8.length, 0);
      for (const w of fp8) {
        assert.equal(w.data, Math.ceil(w.params / 4) * 4, `${w.label}: ${w.data} bytes for ${w.params} FP8 parameters`);
        assert.ok(w.scales > 0 && w.scales < w.data, `${w.label}: scales ${w.scales}`);
      }
      for (const w of bf16) assert.equal(w.data, Math.ceil(w.params / 2) * 4, `${w.label}: ${w.data} bytes for ${w.params} BF16 parameters`);
    });

    it('a varlen batch (prefill chunk next to decodes, all positions) equals the CPU forward', async () => {
      // Three sequences in one forward: a 7-token prefill, a 3-token chunk after 9 cached positions and a
      // decode after 20, so the FlashMLA groups are split (q and out gathered per group) and the caches
      // hold earlier positions written by separate forwards.
      const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7, 6, 5, 4, 3, 2, 1, 10, 11, 12], Array.from({ length: 21 }, (_, i) => (i * 37) % 500)];
      const cached = [0, 9, 20];
      const cpuCache = model.createCache(3);
      const gpuCache = gpu.createCache(3);
      try {
        const tables = [Int32Array.of(2), Int32Array.of(0), Int32Array.of(1)];
        for (let i = 0; i < 3; i++) {
          if (cached[i] === 0) continue;
          const b = { tokens: Int32Array.from(prompts[i]!.slice(0, cached[i])), seqs: [{ blockTable: tables[i]!, numCached: 0, numNew: cached[i]! }] };
          model.forward(b, cpuCache);
          await gpu.forward(b, gpuCache);
        }
        const seqs = prompts.map((p, i) => ({ blockTable: tables[i]!, numCached: cached[i]!, numNew: p.length - cached[i]! }));
        const tokens = Int32Array.from(prompts.flatMap((p, i) => p.slice(cached[i])));
        for (const allPositions of [false, true]) {
          const want = model.forward({ tokens, seqs }, cpuCache, { allPositions });
          const got = await gpu.forward({ tokens, seqs }, gpuCache, { allPositions });
          assert.equal(got.length, want.length);
          const d = maxAbsDiff(got, want);
          assert.ok(d <= LOGIT_TOL, `allPositions ${allPositions}: logits differ by ${d}`);
        }
      } finally {
        gpuCache.destroy();
      }
    });
  });
}

// The family's config variations (test/variants.ts): q_proj without LoRA, softmax + greedy and
// group_limited_greedy gates, the V2 normalisation quirk, v_head_dim != qk_nope_head_dim, FP8 kv_b head
// slices on and off 128-row blocks, tied embeddings, hidden 160 (partial FP8 blocks), against the CPU forward.
describe('GPU-resident forward on the config variants', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'seekd-gpu-variants-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));
  for (const name of Object.keys(VARIANT_CONFIGS) as VariantName[]) {
    for (const format of ['bf16', 'fp8'] as const) {
      it(`${name} (${format}): prefill (all positions) + 3 decode steps and routing equal the CPU forward`, async () => {
        const dir = join(tmp, `${name}-${format}`);
        writeVariant(dir, name, format);
        const kernels = await loadBackend('webgpu');
        const model = await DeepseekModel.load(dir, kernels, { mtp: false });
        const gpu = await GpuDeepseekModel.create(model);
        const cpuCache = model.createCache(1), gpuCache = gpu.createCache(1);
        const blockTable = Int32Array.of(0);
        try {
          let tokens = Int32Array.from([5, 77, 13, 250, 8, 199, 42, 3, 120]);
          let numCached = 0;
          for (let step = 0; step < 4; step++) {
            const batch = { tokens, seqs: [{ blockTable, numCached, numNew: tokens.length }] };
            const cpuRouting = new Map<number, Int32Array>();
            const want = model.forward(batch, cpuCache, { allPositions: step === 0, onRouting: (l, e) => cpuRouting.set(l, e.slice()) });
            let layers = 0;
            const got = await gpu.forward(batch, gpuCache, {
              allPositions: step === 0,
              onRouting: (l, e) => { layers++; assert.deepEqual(e, cpuRouting.get(l), `step ${step} layer ${l}: experts`); },
            });
            assert.equal(layers, cpuRouting.size);
            const d = maxAbsDiff(got, want);
            assert.ok(d <= LOGIT_TOL, `step ${step}: logits differ by ${d}`);
            numCached += tokens.length;
            tokens = Int32Array.of(argmax(want.subarray(want.length - model.config.vocab_size)));
          }
        } finally {
          gpuCache.destroy();
          gpu.close();
          model.close();
        }
      });
    }
  }
});

describe('GPU-resident forward under lowered storage limits', () => {
  it('weights split into parts give the same logits bit for bit; a batch beyond a binding runs in sub-forwards; what cannot split is a typed error', async () => {
    const kernels = await loadBackend('webgpu');
    const model = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-fp8'), kernels, { mtp: false });
    const p = expected('tiny-v3-fp8').prompts[2]!; // 12 tokens
    const run = async (g: GpuDeepseekModel, prompt: number[]) => {
      const cache = g.createCache(1);
      try {
        return await g.forward({ tokens: Int32Array.from(prompt), seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: prompt.length }] }, cache);
      } finally {
        cache.destroy();
      }
    };
    const whole = await GpuDeepseekModel.create(model);
    const want = await run(whole, p.prompt);
    const long = expected('tiny-v3-fp8').prompts[3]!.prompt; // 23 tokens
    const wantLong = await run(whole, long);
    whole.close();
    // 64 KiB bindings: lm_head (256 KiB BF16) and the embedding split by rows, the stacked experts by group.
    const old = setWebGpuSizeLimits({ maxBindingBytes: 64 * 1024 });
    try {
      const split = await GpuDeepseekModel.create(model);
      try {
        assert.deepEqual(await run(split, p.prompt), want);
        // 23 tokens x 4 experts x 256 hidden f32 = 94 KiB of grouped activations: two sub-forwards (16 + 7
        // tokens, the second reading the first's latents from the cache), the same logits within f32 rounding.
        const got = await run(split, long);
        const d = maxAbsDiff(got, wantLong);
        assert.ok(d <= 1e-5 && argmax(got) === argmax(wantLong), `sub-forwards differ by ${d}`);
      } finally {
        split.close();
      }
      // 4 KiB bindings: not even one 128-row block of an FP8 weight fits.
      setWebGpuSizeLimits({ maxBindingBytes: 4096 });
      await assert.rejects(GpuDeepseekModel.create(model), WebGpuLimitError);
    } finally {
      setWebGpuSizeLimits(old);
      model.close();
    }
  });
});

describe('the MTP module on the GPU (speculative decoding\'s drafter)', () => {
  it('hidden states and mtpForward (prompt, then a chained step) equal the CPU model\'s', async () => {
    const kernels = await loadBackend('webgpu');
    const model = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-bf16'), kernels);
    assert.equal(model.mtpModules, 1);
    const gpu = await GpuDeepseekModel.create(model);
    assert.equal(gpu.mtpModules, 1);
    const p = expected('tiny-v3-bf16').prompts[2]!; // 12 tokens
    const n = p.prompt.length, H = model.config.hidden_size;
    const blockTable = Int32Array.of(0);
    const batch = { tokens: Int32Array.from(p.prompt), seqs: [{ blockTable, numCached: 0, numNew: n }] };
    const cpuCache = model.createCache(1), cpuMtp = model.createMtpCache(1);
    const gpuCache = gpu.createCache(1), gpuMtp = gpu.createMtpCache(1);
    try {
      let hc!: Float32Array, hg!: Float32Array;
      model.forward(batch, cpuCache, { onHidden: (h) => { hc = h.slice(0, n * H); } });
      await gpu.forward(batch, gpuCache, { onHidden: (h) => { hg = h; } });
      assert.ok(maxAbsDiff(hg, hc) <= LOGIT_TOL * 4, `hidden states differ by ${maxAbsDiff(hg, hc)}`);
      // The module over positions 0..n-1 with the tokens that follow them, then one chained step.
      const next = Int32Array.from([...p.prompt.slice(1), p.greedy_tokens[0]!]);
      const mb = { tokens: next, seqs: [{ blockTable, numCached: 0, numNew: n }] };
      const c1 = model.mtpForward(mb, hc, cpuMtp);
      const g1 = await gpu.mtpForward(mb, hc, gpuMtp);
      const d1 = Math.max(maxAbsDiff(g1.logits, c1.logits), maxAbsDiff(g1.hidden, c1.hidden));
      const d = argmax(c1.logits);
      const chained = { tokens: Int32Array.of(d), seqs: [{ blockTable, numCached: n, numNew: 1 }] };
      const c2 = model.mtpForward(chained, c1.hidden, cpuMtp);
      const g2 = await gpu.mtpForward(chained, c1.hidden, gpuMtp);
      const d2 = Math.max(maxAbsDiff(g2.logits, c2.logits), maxAbsDiff(g2.hidden, c2.hidden));
      console.log(`# MTP on the GPU: max |difference| ${Math.max(d1, d2).toExponential(2)}`);
      assert.ok(d1 <= LOGIT_TOL && d2 <= LOGIT_TOL, `mtpForward differs by ${d1}, ${d2}`);
      assert.equal(argmax(g1.logits), d);
    } finally {
      gpuCache.destroy();
      gpuMtp.destroy();
      gpu.close();
      model.close();
    }
  });
});

describe('split-K GEMMs (what GPUs get for decode-sized rows)', () => {
  it('forced on llvmpipe, prefill + decode give the direct kernel\'s logits within f32 rounding', async () => {
    const kernels = await loadBackend('webgpu');
    const model = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-fp8'), kernels, { mtp: false });
    const gpu = await GpuDeepseekModel.create(model);
    const p = expected('tiny-v3-fp8').prompts[1]!; // 5 tokens
    const run = async () => {
      const cache = gpu.createCache(1);
      const blockTable = Int32Array.of(0);
      try {
        const out: Float32Array[] = [await gpu.forward({ tokens: Int32Array.from(p.prompt), seqs: [{ blockTable, numCached: 0, numNew: 5 }] }, cache)];
        for (let j = 0; j < 4; j++) {
          out.push(await gpu.forward({ tokens: Int32Array.of(p.greedy_tokens[j]!), seqs: [{ blockTable, numCached: 5 + j, numNew: 1 }] }, cache));
        }
        return out;
      } finally {
        cache.destroy();
      }
    };
    const old = setGemmStrategy('direct');
    try {
      const direct = await run();
      setGemmStrategy('split');
      const split = await run();
      let worst = 0;
      split.forEach((l, i) => {
        worst = Math.max(worst, maxAbsDiff(l, direct[i]!));
        assert.equal(argmax(l), i === 0 ? p.greedy_tokens[0] : p.greedy_tokens[i]);
      });
      assert.ok(worst <= 1e-5, `split-K logits differ by ${worst}`);
      assert.ok(maxAbsDiff(split[0]!, p.prefill_last_logits) <= LOGIT_TOL);
    } finally {
      setGemmStrategy(old);
      gpu.close();
      model.close();
    }
  });
});

describe('a latent cache split into binding-sized parts', () => {
  it('gives the logits of one unsplit cache (writes land in their part; a request over two parts is merged by the combine)', async () => {
    const kernels = await loadBackend('webgpu');
    const model = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-bf16'), kernels, { mtp: false });
    // 70 positions in blocks 3 and 1 of 4: prefill in chunks of 10 (activations under the lowered limit), 3 decodes.
    const tokens = Array.from({ length: 73 }, (_, i) => (i * 29 + 7) % 512);
    const blockTable = Int32Array.of(3, 1);
    const run = async (): Promise<{ logits: Float32Array[]; parts: number }> => {
      const gpu = await GpuDeepseekModel.create(model);
      const cache = gpu.createCache(4);
      try {
        const logits: Float32Array[] = [];
        for (let s = 0; s < 70; s += 10) {
          logits.push(await gpu.forward({ tokens: Int32Array.from(tokens.slice(s, s + 10)), seqs: [{ blockTable, numCached: s, numNew: 10 }] }, cache));
        }
        for (let p = 70; p < 73; p++) logits.push(await gpu.forward({ tokens: Int32Array.of(tokens[p]!), seqs: [{ blockTable, numCached: p, numNew: 1 }] }, cache));
        return { logits, parts: cache.partsPerLayer };
      } finally {
        cache.destroy();
        gpu.close();
      }
    };
    const whole = await run();
    assert.equal(whole.parts, 1);
    // 64 KiB bindings: one 64-token block of 160 f32 rows (40 KiB) per part.
    const old = setWebGpuSizeLimits({ maxBindingBytes: 64 * 1024 });
    let split: { logits: Float32Array[]; parts: number };
    try {
      split = await run();
    } finally {
      setWebGpuSizeLimits(old);
      model.close();
    }
    assert.equal(split.parts, 4);
    let worst = 0;
    split.logits.forEach((l, i) => { worst = Math.max(worst, maxAbsDiff(l, whole.logits[i]!)); assert.equal(argmax(l), argmax(whole.logits[i]!)); });
    assert.ok(worst <= 1e-5, `split cache logits differ by ${worst}`);
  });
});

describe('seekd score / generate --backend webgpu', () => {
  const dir = join(REF_DIR, 'tiny-v3-bf16');
  const ids = '3,14,15,92,65,35';
  it('score --json matches the ref backend, generate gives the same greedy tokens', async () => {
    const [gs, rs, gg, rg] = await Promise.all([
      seekd(['score', '--model', dir, '--ids', ids, '--backend', 'webgpu', '--json']),
      seekd(['score', '--model', dir, '--ids', ids, '--backend', 'ref', '--json']),
      seekd(['generate', '--model', dir, '--ids', ids, '--backend', 'webgpu', '--max-tokens', '12', '--json']),
      seekd(['generate', '--model', dir, '--ids', ids, '--backend', 'ref', '--max-tokens', '12', '--json']),
    ]);
    for (const r of [gs, rs, gg, rg]) assert.equal(r.code, 0, r.stderr);
    const d = maxAbsDiff((JSON.parse(gs.stdout) as { logits: number[] }).logits, (JSON.parse(rs.stdout) as { logits: number[] }).logits);
    assert.ok(d <= LOGIT_TOL, `score logits differ by ${d}`);
    const g = JSON.parse(gg.stdout) as { ids: number[]; logits: number[][] }, r = JSON.parse(rg.stdout) as { ids: number[]; logits: number[][] };
    assert.deepEqual(g.ids, r.ids);
    g.logits.forEach((row, j) => assert.ok(maxAbsDiff(row, r.logits[j]!) <= LOGIT_TOL, `generate step ${j}`));
  });

  it('generate --speculative mtp on webgpu: the CPU\'s tokens and draft counts (greedy and seeded sampling)', async () => {
    for (const extra of [[], ['--temperature', '0.8', '--seed', '3']]) {
      const args = ['generate', '--model', dir, '--ids', ids, '--max-tokens', '12', '--speculative', 'mtp', '--num-speculative-tokens', '2', '--json', ...extra];
      const [g, r] = await Promise.all([seekd([...args, '--backend', 'webgpu']), seekd([...args, '--backend', 'ref'])]);
      assert.equal(g.code, 0, g.stderr);
      assert.equal(r.code, 0, r.stderr);
      const gj = JSON.parse(g.stdout) as { ids: number[]; spec: unknown }, rj = JSON.parse(r.stdout) as { ids: number[]; spec: unknown };
      assert.deepEqual(gj.ids, rj.ids, extra.join(' '));
      assert.deepEqual(gj.spec, rj.spec);
    }
  });

  it('info --backend webgpu reports the adapter and the limits the forward plans with', async () => {
    const r = await seekd(['info', '--model', dir, '--backend', 'webgpu', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const w = (JSON.parse(r.stdout) as { webgpu: { platform: string; adapter: string; limits: Record<string, number> } }).webgpu;
    assert.equal(w.platform, 'node:opengles');
    assert.match(w.adapter, /llvmpipe/);
    assert.ok(w.limits.maxStorageBufferBindingSize! >= 128 * 2 ** 20 && w.limits.maxComputeInvocationsPerWorkgroup! >= 256, JSON.stringify(w.limits));
  });

  it('refuses what the GPU forward does not do, before loading', async () => {
    const naive = await seekd(['score', '--model', dir, '--ids', ids, '--backend', 'webgpu', '--attn', 'naive']);
    assert.equal(naive.code, 2);
    assert.match(naive.stderr, /absorbed MLA only/);
    const trace = await seekd(['generate', '--model', dir, '--ids', ids, '--backend', 'webgpu', '--trace', join(tmpdir(), 'never.json')]);
    assert.equal(trace.code, 2);
    assert.match(trace.stderr, /--trace cannot be combined with --backend webgpu/);
  });
});


describe('a lost device', () => {
  it('fails the forward with WebGpuDeviceLostError; the next device is a fresh one', async () => {
    const kernels = await loadBackend('webgpu');
    const model = await DeepseekModel.load(join(REF_DIR, 'tiny-v3-bf16'), kernels, { mtp: false });
    const gpu = await GpuDeepseekModel.create(model);
    const cache = gpu.createCache(1);
    const batch = { tokens: Int32Array.of(1, 2, 3), seqs: [{ blockTable: Int32Array.of(0), numCached: 0, numNew: 3 }] };
    const want = await gpu.forward(batch, cache);
    const ctx = await getDevice();
    ctx.device.destroy();
    await ctx.device.lost;
    await assert.rejects(gpu.forward(batch, cache), WebGpuDeviceLostError);
    // A new model on a new device computes again.
    const fresh = await GpuDeepseekModel.create(model);
    assert.notEqual(await getDevice(), ctx);
    const c2 = fresh.createCache(1);
    assert.deepEqual(await fresh.forward(batch, c2), want);
    c2.destroy();
    fresh.close();
    model.close();
  });
});
