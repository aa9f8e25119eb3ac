// bench/forward.ts: the built-in model's shape, the peer protocol's token ids (against an exact BigInt
// LCG), argument errors, the per-token weight traffic (against the checkpoint's own tensor sizes) and a
// tiny end-to-end run producing rows of the documented shape. No timing is asserted.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MEDIUM_CONFIG as c } from './lib/bench-model.ts';
import { parseConfig, loadConfig } from '../src/model/config.ts';
import { parameterCounts, tensorSpecs } from '../src/model/weight-map.ts';
import { Checkpoint } from '../src/weights/checkpoint.ts';
import { loadBackend } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import forwardBench, { BenchError, benchIds, clampIds, pairedBaselines, pairedRatio, parseForwardArgs, weightTraffic } from './forward.ts';

const TINY = '/work/shared/testdata/deepseek-ref/tiny-v3-bf16';
const TINY_FP8 = '/work/shared/testdata/deepseek-ref/tiny-v3-fp8';

it('medium shape: 506M parameters, 131M active per token', () => {
  const H = c.hidden_size;
  const attn = c.q_lora_rank * H + c.q_lora_rank + c.num_attention_heads * (c.qk_nope_head_dim + c.qk_rope_head_dim) * c.q_lora_rank
    + (c.kv_lora_rank + c.qk_rope_head_dim) * H + c.kv_lora_rank
    + c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank + H * c.num_attention_heads * c.v_head_dim;
  const norms = 2 * H;
  const dense = 3 * H * c.intermediate_size;
  const expert = 3 * H * c.moe_intermediate_size;
  const moeLayers = c.num_hidden_layers - c.first_k_dense_replace;
  const router = c.n_routed_experts * H + c.n_routed_experts;
  const shared = c.n_shared_experts * expert;
  const total = 2 * c.vocab_size * H + H + c.num_hidden_layers * (attn + norms) + dense + moeLayers * (router + shared + c.n_routed_experts * expert);
  const active = c.vocab_size * H + H + H + c.num_hidden_layers * (attn + norms) + dense + moeLayers * (router + shared + c.num_experts_per_tok * expert);
  const got = parameterCounts(parseConfig(c));
  assert.equal(got.total, total);
  assert.equal(got.activePerToken, active);
  assert.ok(Math.abs(total / 1e6 - 506) < 1, `${total}`);
  assert.ok(Math.abs(active / 1e6 - 131) < 1, `${active}`);
});

describe('protocol token ids', () => {
  /** The protocol's definition, in exact integer arithmetic. */
  const exact = (n: number): number[] => {
    const out: number[] = [];
    let x = 42n;
    for (let i = 0; i < n; i++) {
      x = (x * 1103515245n + 12345n) % 2147483648n;
      out.push(300 + Number(x % 20000n));
    }
    return out;
  };

  it('first values pinned', () => {
    assert.deepEqual([...benchIds(6)], [16327, 2564, 17053, 15106, 16035, 6832]);
  });

  it('equals the exact LCG over 20000 ids (a double product loses bits from the second id on)', () => {
    assert.deepEqual([...benchIds(20000)], exact(20000));
    // The same recurrence in plain doubles differs already at ids[1]: what lcgNext's split product avoids.
    const x1 = (42 * 1103515245 + 12345) % 2147483648;
    assert.notEqual(300 + (((x1 * 1103515245 + 12345) % 2147483648) % 20000), benchIds(2)[1]);
  });

  it('clamps only ids outside a smaller vocabulary', () => {
    const ids = Int32Array.of(300, 511, 512, 20299);
    assert.equal(clampIds(ids, 512), 2);
    assert.deepEqual([...ids], [300, 511, 511, 511]);
    const big = benchIds(512);
    assert.equal(clampIds(big, 32256), 0);
    assert.deepEqual([...big], exact(512));
  });
});

describe('arguments', () => {
  it('defaults: medium in BF16 and FP8, the protocol sizes', () => {
    const a = parseForwardArgs([]);
    assert.equal(a.model, null);
    assert.deepEqual([a.prompt, a.decode, a.reps], [512, 128, 5]);
    assert.deepEqual(a.threads, [1, 2]);
    assert.deepEqual(a.formats, ['bf16', 'fp8']);
    const b = parseForwardArgs(['--model', TINY, '--quantize=fp8', '--threads', '2', '--prompt', '8']);
    assert.deepEqual([b.model, b.quantize, b.threads, b.prompt], [TINY, 'fp8', [2], 8]);
  });

  const bad: Array<[string[], RegExp]> = [
    [['--prompt', '0'], /--prompt must be a positive integer/],
    [['--decode', '1.5'], /--decode must be a positive integer/],
    [['--reps', 'x'], /--reps must be a positive integer/],
    [['--threads', '1,,2'], /--threads must be a positive integer/],
    [['--promt', '8'], /unknown option --promt/],
    [['--prompt'], /--prompt needs a value/],
    [['--prompt', '8', '--prompt', '9'], /given twice/],
    [['stray'], /unexpected argument 'stray'/],
    [['--quantize', 'int4', '--model', TINY], /--quantize must be fp8/],
    [['--quantize', 'fp8'], /--quantize needs --model/],
    [['--model', TINY, '--formats', 'bf16'], /--formats is for the built-in model/],
    [['--formats', 'int8'], /unknown format 'int8'/],
    [['--model', '/nonexistent/dir'], /not a directory/],
    [['--model', '/work/shared/testdata'], /no config.json/],
    [['--backend', 'cuda'], /--backend must be one of/],
  ];
  for (const [args, msg] of bad) {
    it(`rejects ${args.join(' ')}`, () => {
      assert.throws(() => parseForwardArgs(args), (e: unknown) => e instanceof BenchError && e.exitCode === 2 && msg.test(e.message));
    });
  }
});

describe('weight traffic per token', () => {
  /** The same figure from the checkpoint's tensor table: stored bytes (+ FP8 scales), norms as f32. */
  const fromCheckpoint = (dir: string): number => {
    const cfg = loadConfig(dir);
    const ck = Checkpoint.open(dir);
    try {
      let bytes = 0;
      for (const s of tensorSpecs(cfg, { mtp: false })) {
        const n = s.shape.reduce((x, y) => x * y, 1);
        if (s.kind === 'vector') { bytes += 4 * n; continue; }
        let b = ck.info(s.name).byteLength;
        if (ck.has(`${s.name}_scale_inv`)) b += ck.info(`${s.name}_scale_inv`).byteLength;
        if (s.kind === 'embed') b /= s.shape[0]!;
        else if (s.group) b *= cfg.num_experts_per_tok! / cfg.n_routed_experts!;
        bytes += b;
      }
      return bytes;
    } finally {
      ck.close();
    }
  };

  for (const [dir, fp8] of [[TINY, false], [TINY_FP8, true]] as const) {
    it(`${dir.split('/').at(-1)}: bytes as loaded, matmul parameters`, async () => {
      const k = await loadBackend('ref');
      const model = await DeepseekModel.load(dir, k, { mtp: false });
      try {
        const t = weightTraffic(model.weights, model.config);
        assert.equal(t.hasFp8, fp8);
        assert.ok(Math.abs(t.decodeBytes - fromCheckpoint(dir)) < 1e-6, `${t.decodeBytes} vs ${fromCheckpoint(dir)}`);
        // Matmul parameters: active parameters less the embedding row, norms, router bias; lm_head apart.
        const cfg = model.config;
        let vec = 0;
        for (const s of tensorSpecs(cfg, { mtp: false })) if (s.kind === 'vector') vec += s.shape[0]!;
        const act = parameterCounts(cfg).activePerToken;
        assert.equal(t.lmHeadParams, cfg.vocab_size * cfg.hidden_size);
        assert.ok(Math.abs(t.bodyMatmulParams + t.lmHeadParams - (act - cfg.hidden_size - vec)) < 1e-6);
      } finally {
        model.close();
        await k.dispose();
      }
    });
  }
});

describe('paired ratios', () => {
  it('run r is divided by the mean of probes r and r + 1; the row takes the median of the per-run ratios', () => {
    assert.deepEqual(pairedBaselines([10, 20, 30]), [15, 25]);
    assert.deepEqual(pairedBaselines([10]), []);
    // 100 tok/s over 15, 300 over 25 (perUnit 1e9): 6.67 and 12, median of two = their mean.
    assert.ok(Math.abs(pairedRatio([100, 300], [15, 25], 1e9) - (100 / 15 + 300 / 25) / 2) < 1e-12);
    // Three runs: the middle per-run ratio, not the ratio of medians (which would be 200 / 20 = 10).
    assert.ok(Math.abs(pairedRatio([100, 200, 300], [10, 40, 20], 1e9) - 10) < 1e-12);
    assert.ok(Math.abs(pairedRatio([100, 200, 400], [10, 40, 20], 1e9) - 10) < 1e-12);
    assert.throws(() => pairedRatio([1, 2], [1], 1), /2 runs, 1 baselines/);
  });
});

describe('tiny run', () => {
  const small = ['--model', TINY, '--reps', '1', '--prompt', '8', '--decode', '4', '--threads', '1'];

  it('rows of the documented shape, ratios from the reported baselines', async () => {
    const r = await forwardBench(small);
    assert.equal(r.bench, 'forward');
    assert.deepEqual(r.rows.map((x) => [x.case, x.threads, x.metric, x.unit]), [
      ['tiny-v3-bf16', 1, 'prefill', 'tok/s'], ['tiny-v3-bf16', 1, 'decode', 'tok/s'],
    ]);
    for (const row of r.rows) assert.ok(row.value > 0 && Number.isFinite(row.value) && row.ratio !== null && row.ratio > 0, JSON.stringify(row));
    const b = r.baseline;
    for (const key of ['copy_GBs 1t', 'gemm_GFLOPs 1t', 'load_s tiny-v3-bf16 1t', 'peak_rss_MiB tiny-v3-bf16 1t',
      'weight_bytes_per_decode_token tiny-v3-bf16', 'model_flops_per_prefill_token tiny-v3-bf16']) {
      assert.ok(typeof b[key] === 'number' && b[key] > 0, `${key}: ${b[key]}`);
    }
    const [pre, dec] = r.rows;
    const num = (k: string): number => b[k] as number;
    // One run: its paired baseline is the mean of the probes before and after it, listed in the report.
    const pairedCopy = Number(b['copy_paired_GBs 1t']), pairedGemm = Number(b['gemm_paired_GFLOPs 1t']);
    assert.ok(pairedCopy > 0 && pairedGemm > 0, `${b['copy_paired_GBs 1t']} ${b['gemm_paired_GFLOPs 1t']}`);
    const bytes = num('weight_bytes_per_decode_token tiny-v3-bf16'), flops = num('model_flops_per_prefill_token tiny-v3-bf16');
    // The listed baselines are rounded to 0.01.
    assert.ok(Math.abs(dec!.ratio! / ((bytes * dec!.value) / (pairedCopy * 1e9)) - 1) < 0.01 / pairedCopy + 1e-9, `${dec!.ratio}`);
    assert.ok(Math.abs(pre!.ratio! / ((flops * pre!.value) / (pairedGemm * 1e9)) - 1) < 0.01 / pairedGemm + 1e-9, `${pre!.ratio}`);
    // The after-case ratios stay in the baseline, over the longer after-case measurements.
    assert.ok(Math.abs(num('decode_ratio_after tiny-v3-bf16 1t') - (bytes * dec!.value) / (num('copy_GBs 1t') * 1e9)) < 1e-12);
    assert.ok(Math.abs(num('prefill_ratio_after tiny-v3-bf16 1t') - (flops * pre!.value) / (num('gemm_GFLOPs 1t') * 1e9)) < 1e-12);
    // The tiny model's vocabulary (512) is below the protocol's ids: the report must say so.
    assert.ok(r.notes?.some((n) => /vocabulary of 512 .* clamped to 511/.test(n)), JSON.stringify(r.notes));
  });

  it('--quantize fp8: FP8 weights as loaded, or a typed error where the loader ignores it', async () => {
    // LoadOptions.quantize exists, but the loader may not apply it yet (another change); until it does,
    // the bench must refuse rather than report BF16 numbers under a "+fp8" name.
    try {
      const r = await forwardBench([...small, '--quantize', 'fp8']);
      assert.deepEqual(r.rows.map((x) => x.case), ['tiny-v3-bf16+fp8', 'tiny-v3-bf16+fp8']);
      const bytes = r.baseline['weight_bytes_per_decode_token tiny-v3-bf16+fp8'] as number;
      // FP8 codes + scales: well under the BF16 model's bytes per token.
      const k = await loadBackend('ref');
      const m = await DeepseekModel.load(TINY, k, { mtp: false });
      const bf16 = weightTraffic(m.weights, m.config).decodeBytes;
      m.close();
      await k.dispose();
      assert.ok(bytes < 0.75 * bf16, `${bytes} vs ${bf16}`);
    } catch (e) {
      assert.ok(e instanceof BenchError && /does not apply LoadOptions.quantize/.test(e.message), String(e));
    }
  });
});
