// `seekd info` checks the tensor headers against config.json with the loader's own rules
// (weight-map.ts checkWeights), so a checkpoint `score` refuses is refused by `info` with the same
// one-line error and exit code 2; absurd configs are config errors. Also: the check stays a header pass
// (DeepSeek-V3's 163 shards / 92k tensors in well under a few seconds) and accepts what --quantize fp8
// would convert.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REF_DIR, seekd } from './helpers.ts';
import { Checkpoint } from '../src/weights/checkpoint.ts';
import { writeSafetensors, type TensorToWrite } from '../src/weights/writer.ts';
import { SafetensorsError } from '../src/weights/errors.ts';
import { ConfigError, loadConfig, parseConfig, MAX_WIDTH } from '../src/model/config.ts';
import { checkWeights, WeightError } from '../src/model/weight-map.ts';
import { writeSyntheticCheckpoint } from '../src/model/synthetic.ts';
import { presetConfig, presetShards } from '../src/model/presets.ts';



type Edit = (t: TensorToWrite[], cfg: Record<string, unknown>) => TensorToWrite[];

describe('info validates the checkpoint as the loader does', () => {
  let tmp: string;
  const dirs: Record<string, string> = {};
  const source = (v: string) => {
    const ck = Checkpoint.open(join(REF_DIR, v));
    const all: TensorToWrite[] = [...ck.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape], data: ck.readBytes(t.name) }));
    ck.close();
    return { all, cfg: JSON.parse(readFileSync(join(REF_DIR, v, 'config.json'), 'utf8')) as Record<string, unknown> };
  };
  const cases: Record<string, [string, Edit]> = {
    'no-lm-head': ['tiny-v3-bf16', (t) => t.filter((x) => x.name !== 'lm_head.weight')],
    'huge-hidden': ['tiny-v3-bf16', (t, cfg) => { cfg.hidden_size = 1e12; return t; }],
    'bad-shape': ['tiny-v3-bf16', (t) => t.map((x) => x.name === 'model.layers.1.self_attn.kv_b_proj.weight'
      ? { ...x, shape: [x.shape[1]!, x.shape[0]!] } : x)],
    'f16-proj': ['tiny-v3-bf16', (t) => t.map((x) => x.name === 'model.layers.0.mlp.up_proj.weight' ? { ...x, dtype: 'F16' } : x)],
    'no-scale': ['tiny-v3-fp8', (t) => t.filter((x) => x.name !== 'model.layers.2.mlp.experts.5.down_proj.weight_scale_inv')],
    'mixed-experts': ['tiny-v3-fp8', (t) => {
      // Expert 3's gate_proj as BF16 (valid on its own) among FP8 siblings.
      const w = t.find((x) => x.name === 'model.layers.1.mlp.experts.3.gate_proj.weight')!;
      const bf16 = { ...w, dtype: 'BF16' as const, data: new Uint8Array(w.data!.byteLength * 2) };
      return t.filter((x) => x !== w && x.name !== `${w.name}_scale_inv`).concat([bf16]);
    }],
  };

  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'seekd-info-validate-'));
    const src: Record<string, ReturnType<typeof source>> = {};
    for (const [name, [v, edit]] of Object.entries(cases)) {
      src[v] ??= source(v);
      const cfg = structuredClone(src[v].cfg);
      const d = join(tmp, name);
      mkdirSync(d);
      const tensors = edit(src[v].all.map((x) => ({ ...x })), cfg);
      writeFileSync(join(d, 'config.json'), JSON.stringify(cfg));
      writeSafetensors(join(d, 'model.safetensors'), tensors);
      dirs[name] = d;
    }
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('each broken checkpoint: info and score fail alike (exit 2, the same one-line error)', async () => {
    const expect: Record<string, RegExp> = {
      'no-lm-head': /WeightError: lm_head\.weight: missing from the checkpoint/,
      'huge-hidden': /hidden_size 1000000000000 is larger than any model's/,
      'bad-shape': /kv_b_proj\.weight.*shape \[\d+,\d+\], expected \[\d+,\d+\] \(shape-mismatch\)/,
      'f16-proj': /up_proj\.weight.*dtype F16, expected F32 or BF16 or F8_E4M3 \(dtype-mismatch\)/,
      'no-scale': /experts\.5\.down_proj\.weight.*without .*_scale_inv \(fp8-missing-scale\)/,
      'mixed-experts': /experts\.3\.gate_proj\.weight: dtype BF16, but this layer's other experts are fp8/,
    };
    const names = Object.keys(cases);
    const runs = await Promise.all(names.flatMap((n) => [
      seekd(['info', '--model', dirs[n]!]),
      seekd(['score', '--model', dirs[n]!, '--ids', '1,2', '--backend', 'ref']),
    ]));
    names.forEach((n, i) => {
      const [info, score] = [runs[2 * i]!, runs[2 * i + 1]!];
      assert.equal(info.code, 2, `${n}: info ${info.stderr}${info.stdout}`);
      assert.equal(score.code, 2, `${n}: score ${score.stderr}`);
      assert.equal(info.stdout, '', `${n}: info printed a report for a broken checkpoint`);
      assert.equal(info.stderr.trim().split('\n').length, 1, info.stderr);
      assert.equal(info.stderr, score.stderr.replace(/^.*\n(?=seekd:)/s, ''), n);
      assert.match(info.stderr, expect[n]!, n);
      assert.doesNotMatch(info.stderr, /\d+\.\d+T total/);
    });
  });

  it('--quantize fp8: an F16 projection is accepted (it is converted), as score --quantize fp8 accepts it', async () => {
    const r = await seekd(['info', '--model', dirs['f16-proj']!, '--quantize', 'fp8', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { plan: { quantize: string } }).plan.quantize, 'fp8');
    const ck = Checkpoint.open(dirs['f16-proj']!);
    try {
      const c = loadConfig(dirs['f16-proj']!);
      const t = checkWeights(ck, c, { quantize: 'fp8' }).find((x) => x.spec.name === 'model.layers.0.mlp.up_proj.weight')!;
      assert.equal(t.load, 'quantize');
      assert.throws(() => checkWeights(ck, c), (e: unknown) => e instanceof SafetensorsError && e.rule === 'dtype-mismatch');
    } finally {
      ck.close();
    }
  });

  it('checkWeights names the offending tensor with a typed error', () => {
    const ck = Checkpoint.open(dirs['no-lm-head']!);
    try {
      assert.throws(() => checkWeights(ck, loadConfig(dirs['no-lm-head']!)), (e: unknown) => e instanceof WeightError && e.tensor === 'lm_head.weight' && e.exitCode === 2);
      // Tied embeddings need no lm_head: the same headers pass.
      const tied = parseConfig({ ...JSON.parse(readFileSync(join(dirs['no-lm-head']!, 'config.json'), 'utf8')), tie_word_embeddings: true });
      assert.ok(checkWeights(ck, tied).length > 0);
    } finally {
      ck.close();
    }
  });
});

describe('config bounds', () => {
  const base = JSON.parse(readFileSync(join(REF_DIR, 'tiny-v3-bf16', 'config.json'), 'utf8')) as Record<string, unknown>;
  it('absurd widths and counts are ConfigErrors naming the field', () => {
    for (const [field, v] of [['hidden_size', 1e12], ['vocab_size', MAX_WIDTH + 1], ['moe_intermediate_size', 2 ** 40], ['num_hidden_layers', 1e9], ['n_routed_experts', 2 ** 30]] as const) {
      assert.throws(() => parseConfig({ ...base, [field]: v }), (e: unknown) => e instanceof ConfigError && e.field === field, `${field} ${v}`);
    }
    // Published sizes stay accepted (widths at the bound too).
    assert.equal(parseConfig({ ...base, vocab_size: MAX_WIDTH }).vocab_size, MAX_WIDTH);
    for (const p of ['v3', 'kimi-k2', 'v2-lite'] as const) parseConfig(presetConfig(p));
  });
});

describe('info stays a header pass on DeepSeek-V3 (163 shards, sparse)', () => {
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'seekd-info-v3-'));
    await writeSyntheticCheckpoint(dir, presetConfig('v3'), { fill: 'zeros', shards: presetShards('v3') });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('checkWeights over every V3 tensor takes well under a second of its few-second budget', () => {
    const t0 = performance.now();
    const ck = Checkpoint.open(dir);
    const opened = performance.now() - t0;
    try {
      const t1 = performance.now();
      const checked = checkWeights(ck, loadConfig(dir), { mtp: true });
      const ms = performance.now() - t1;
      assert.ok(checked.length > 45_000 && ck.tensors.size > 90_000, `${checked.length} of ${ck.tensors.size} tensors`);
      assert.ok(checked.filter((t) => t.load === 'fp8').every((t) => t.fp8 !== undefined));
      console.log(`# V3: open ${opened.toFixed(0)} ms (${ck.files.length} shards), checkWeights ${ms.toFixed(0)} ms for ${checked.length} tensors`);
      assert.ok(ms < 3_000, `checkWeights took ${ms} ms`);
    } finally {
      ck.close();
    }
  });
});
