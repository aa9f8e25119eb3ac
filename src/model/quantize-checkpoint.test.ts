// writeFp8Checkpoint on tiny-v3-bf16, checked against data nobody here wrote: tiny-v3-fp8 holds the
// same weights quantized by the reference's own writer (../shared/testdata/deepseek-ref/README.md), so
// the written file must have its tensor names, dtypes and shapes exactly, its block scales bit for bit
// and its codes except where the two rules differ on signed zeros (test/quantize.test.ts explains the 4
// of them). Then: the written checkpoint loads to the same logits, bit for bit, as tiny-v3-bf16 loaded
// with quantize 'fp8' (and to different ones than plain BF16, so the comparison can fail); the config
// has DeepSeek's quantization_config; F32 / F16 inputs give the same bytes as BF16 ones; an existing
// output and an FP8 input are refused with typed errors, leaving nothing behind.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadBackend, type Kernels } from '../kernels/index.ts';
import { encodeF16, toF32 } from '../tensor/dtypes.ts';
import { Checkpoint } from '../weights/checkpoint.ts';
import { Fp8QuantizeError } from '../weights/quantize.ts';
import { SafetensorsFile } from '../weights/safetensors.ts';
import { writeSafetensors, type TensorToWrite } from '../weights/writer.ts';
import { loadConfig } from './config.ts';
import { DeepseekModel } from './deepseek.ts';
import { LatentCache } from './latent-cache.ts';
import { FP8_QUANTIZATION_CONFIG, QuantizeCheckpointError, writeFp8Checkpoint, type QuantizeCheckpointSummary } from './quantize-checkpoint.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const REF_DIR = [join(ROOT, '..', 'shared'), join(ROOT, '..', '..', 'shared')]
  .map((d) => join(d, 'testdata', 'deepseek-ref')).find((d) => existsSync(d)) ?? join(ROOT, '..', 'shared', 'testdata', 'deepseek-ref');
const BF16_DIR = join(REF_DIR, 'tiny-v3-bf16');
const FP8_DIR = join(REF_DIR, 'tiny-v3-fp8');

/** The projections DeepSeek stores in FP8, spelled out here rather than taken from weight-map.ts. */
const FP8_NAME = /^model\.layers\.\d+\.(self_attn\.(q_a_proj|q_b_proj|q_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)|mlp\.((experts\.\d+|shared_experts)\.)?(gate|up|down)_proj)\.weight$/;

interface Header { dtype: string; shape: readonly number[] }
function headers(dir: string): Map<string, Header> {
  const ck = Checkpoint.open(dir);
  try {
    return new Map([...ck.tensors].map(([n, t]) => [n, { dtype: t.dtype, shape: [...t.shape] }]));
  } finally {
    ck.close();
  }
}

/** Names of a directory, without hidden leftovers filtered out (a temp dir left behind shows up). */
const entries = (dir: string) => readdirSync(dir).sort();

describe('writeFp8Checkpoint (tiny-v3-bf16)', () => {
  let work: string, input: string, out: string;
  let summary: QuantizeCheckpointSummary;
  let kernels: Kernels;

  before(() => {
    work = mkdtempSync(join(tmpdir(), 'seekd-quantize-'));
    // The reference model plus the files a served model carries (and two it does not need).
    input = join(work, 'in');
    mkdirSync(input);
    for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(BF16_DIR, f), join(input, f));
    writeFileSync(join(input, 'tokenizer.json'), '{"marker": 1}');
    writeFileSync(join(input, 'tokenizer_config.json'), '{"marker": 2}');
    writeFileSync(join(input, 'generation_config.json'), '{"marker": 3}');
    writeFileSync(join(input, 'chat_template.jinja'), '{{ marker }}');
    writeFileSync(join(input, 'README.md'), 'the BF16 model');
    writeFileSync(join(input, 'expected_absorb.json'), '{}');
    out = join(work, 'out', 'fp8'); // parent does not exist yet
    summary = writeFp8Checkpoint(input, out);
  });
  after(async () => {
    await kernels?.dispose();
    rmSync(work, { recursive: true, force: true });
  });

  it('writes one model.safetensors, config.json and the tokenizer / generation / template files, nothing else', () => {
    assert.deepEqual(entries(out), ['chat_template.jinja', 'config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    assert.equal(readFileSync(join(out, 'tokenizer.json'), 'utf8'), '{"marker": 1}');
    assert.equal(readFileSync(join(out, 'chat_template.jinja'), 'utf8'), '{{ marker }}');
    assert.deepEqual(entries(join(work, 'out')), ['fp8'], 'no temporary directory left');
    const f = SafetensorsFile.open(join(out, 'model.safetensors'));
    try {
      assert.match(f.metadata.producer ?? '', /seekd/);
      assert.equal(f.metadata.format, 'pt');
    } finally {
      f.close();
    }
  });

  it('(a) every projection F8_E4M3 with its weight_scale_inv, the rest BF16, the router bias F32: tiny-v3-fp8\'s header exactly', () => {
    const src = headers(input), got = headers(out);
    const want = new Map<string, Header>();
    let fp8 = 0;
    for (const [n, t] of src) {
      if (FP8_NAME.test(n)) {
        fp8++;
        const [r, c] = t.shape as [number, number];
        want.set(n, { dtype: 'F8_E4M3', shape: [r, c] });
        want.set(n.replace(/\.weight$/, '.weight_scale_inv'), { dtype: 'F32', shape: [Math.ceil(r / 128), Math.ceil(c / 128)] });
      } else {
        want.set(n, { dtype: n.endsWith('.e_score_correction_bias') ? 'F32' : 'BF16', shape: t.shape });
      }
    }
    assert.deepEqual(new Map([...got].sort()), new Map([...want].sort()));
    assert.deepEqual(new Map([...got].sort()), new Map([...headers(FP8_DIR)].sort()), 'same names, dtypes and shapes as the reference FP8 checkpoint');
    assert.equal(fp8, 176);
    assert.equal(summary.quantized, fp8);
    assert.equal(summary.tensors, src.size);
    assert.equal(summary.bytesIn, statSync(join(input, 'model.safetensors')).size);
    assert.equal(summary.bytesOut, statSync(join(out, 'model.safetensors')).size);
    assert.ok(summary.seconds > 0);
  });

  it('the data is tiny-v3-fp8\'s: scales and unquantized tensors bit for bit, codes but for 4 signed zeros', () => {
    const ours = Checkpoint.open(out), theirs = Checkpoint.open(FP8_DIR);
    try {
      let codes = 0, negZero = 0;
      for (const [n, t] of ours.tensors) {
        const a = ours.readBytes(n), b = theirs.readBytes(n);
        if (t.dtype !== 'F8_E4M3') {
          assert.ok(Buffer.from(a).equals(Buffer.from(b)), `${n}: ${t.dtype} bytes`);
          continue;
        }
        for (let i = 0; i < a.length; i++) {
          codes++;
          if (a[i] === b[i]) continue;
          assert.ok(a[i] === 0x80 && b[i] === 0x00, `${n}[${i}]: code 0x${a[i]!.toString(16)} vs reference 0x${b[i]!.toString(16)}`);
          negZero++;
        }
      }
      assert.equal(codes, 3_735_552);
      assert.equal(negZero, 4);
    } finally {
      ours.close();
      theirs.close();
    }
  });

  it('(b) loads to the same logits, bit for bit, as tiny-v3-bf16 with quantize fp8 (and not as plain BF16)', async () => {
    kernels = await loadBackend('ref', { threads: 1 });
    const written = await DeepseekModel.load(out, kernels);
    const onTheFly = await DeepseekModel.load(input, kernels, { quantize: 'fp8' });
    const plain = await DeepseekModel.load(input, kernels);
    try {
      const prompt = [3, 141, 59, 265, 35];
      const run = (m: DeepseekModel) => {
        const cache = m.createCache(LatentCache.blocksFor(prompt.length + 3));
        const blockTable = Int32Array.from({ length: cache.numBlocks }, (_, i) => i);
        const rows = [m.forward({ tokens: Int32Array.from(prompt), seqs: [{ blockTable, numCached: 0, numNew: prompt.length }] }, cache).slice()];
        for (let j = 0; j < 3; j++) {
          rows.push(m.forward({ tokens: Int32Array.of(7 + 100 * j), seqs: [{ blockTable, numCached: prompt.length + j, numNew: 1 }] }, cache).slice());
        }
        return rows;
      };
      const a = run(written), b = run(onTheFly), c = run(plain);
      assert.equal(a.length, 4);
      assert.equal(a[0]!.length, 512);
      a.forEach((row, j) => {
        assert.ok(row.every(Number.isFinite), `step ${j}: finite`);
        assert.deepEqual(new Uint32Array(row.buffer), new Uint32Array(b[j]!.buffer), `step ${j}: same bits`);
      });
      assert.ok(a.some((row, j) => row.some((v, i) => v !== c[j]![i])), 'FP8 logits differ from BF16 ones');
    } finally {
      written.close();
      onTheFly.close();
      plain.close();
    }
  });

  it('(c) config.json: the input\'s fields, DeepSeek\'s quantization_config and torch_dtype bfloat16', () => {
    const raw = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    const orig = JSON.parse(readFileSync(join(input, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(raw.quantization_config, { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [128, 128] });
    assert.equal(raw.torch_dtype, 'bfloat16');
    const { quantization_config: _q, torch_dtype: _t, ...rest } = raw;
    const { quantization_config: _q2, torch_dtype: _t2, ...origRest } = orig;
    assert.deepEqual(rest, origRest);
    const c = loadConfig(out);
    assert.deepEqual(c.quantization_config?.weight_block_size, [128, 128]);
    assert.deepEqual(JSON.parse(JSON.stringify(FP8_QUANTIZATION_CONFIG)), raw.quantization_config);
  });

  it('F32 weights with F16 norms give the same file as the BF16 original (exact widenings round back)', () => {
    const dir = join(work, 'f32');
    mkdirSync(dir);
    copyFileSync(join(input, 'config.json'), join(dir, 'config.json'));
    const ck = Checkpoint.open(input);
    const tensors: TensorToWrite[] = [];
    try {
      for (const [n, t] of ck.tensors) {
        const v = toF32(ck.readBytes(n), t.dtype);
        tensors.push(/norm\.weight$/.test(n)
          ? { name: n, dtype: 'F16', shape: [...t.shape], data: encodeF16(v) }
          : { name: n, dtype: 'F32', shape: [...t.shape], data: v });
      }
    } finally {
      ck.close();
    }
    assert.ok(tensors.some((t) => t.dtype === 'F16'));
    writeSafetensors(join(dir, 'model.safetensors'), tensors);
    const o = join(work, 'f32-out');
    const s = writeFp8Checkpoint(dir, o);
    assert.equal(s.quantized, summary.quantized);
    assert.ok(s.bytesIn > 1.9 * summary.bytesIn);
    assert.ok(readFileSync(join(o, 'model.safetensors')).equals(readFileSync(join(out, 'model.safetensors'))));
  });

  it('(d) refuses an existing output without force, replaces it with force', () => {
    const before = readFileSync(join(out, 'model.safetensors'));
    writeFileSync(join(out, 'stale.txt'), 'old');
    assert.throws(() => writeFp8Checkpoint(input, out), (e: unknown) => e instanceof QuantizeCheckpointError && e.rule === 'output-exists' && e.exitCode === 2);
    assert.ok(existsSync(join(out, 'stale.txt')), 'untouched without force');
    // A plain file in the way is an existing output too.
    const file = join(work, 'a-file');
    writeFileSync(file, 'x');
    assert.throws(() => writeFp8Checkpoint(input, file), (e: unknown) => e instanceof QuantizeCheckpointError && e.rule === 'output-exists');
    // An empty directory holds nothing to lose.
    const empty = join(work, 'empty');
    mkdirSync(empty);
    writeFp8Checkpoint(input, empty);
    assert.ok(readFileSync(join(empty, 'model.safetensors')).equals(before));
    writeFp8Checkpoint(input, out, { force: true });
    assert.ok(!existsSync(join(out, 'stale.txt')), 'replaced as a whole');
    assert.ok(readFileSync(join(out, 'model.safetensors')).equals(before), 'deterministic');
    assert.deepEqual(entries(join(work, 'out')), ['fp8'], 'no temporary or old directory left');
    // Never into (or around) the input, even with force.
    assert.throws(() => writeFp8Checkpoint(input, join(input, 'sub'), { force: true }), (e: unknown) => e instanceof QuantizeCheckpointError && e.rule === 'output-overlaps-input');
    assert.throws(() => writeFp8Checkpoint(input, input, { force: true }), (e: unknown) => e instanceof QuantizeCheckpointError && e.rule === 'output-overlaps-input');
    assert.ok(existsSync(join(input, 'model.safetensors')));
  });

  it('(d) refuses an FP8 input with a typed error naming the tensor, writing nothing', () => {
    const o = join(work, 'from-fp8');
    assert.throws(() => writeFp8Checkpoint(FP8_DIR, o), (e: unknown) => {
      assert.ok(e instanceof QuantizeCheckpointError, String(e));
      assert.equal(e.rule, 'already-fp8');
      assert.equal(e.exitCode, 2);
      assert.match(e.tensor ?? '', /_proj\.weight(_scale_inv)?$/);
      return true;
    });
    assert.ok(!existsSync(o));
    assert.ok(!readdirSync(work).some((f) => f.startsWith('.')), 'no temporary directory left');
  });

  it('a non-finite weight is an Fp8QuantizeError and leaves no output', () => {
    const dir = join(work, 'nan');
    mkdirSync(dir);
    copyFileSync(join(input, 'config.json'), join(dir, 'config.json'));
    const ck = Checkpoint.open(input);
    const tensors: TensorToWrite[] = [];
    try {
      for (const [n, t] of ck.tensors) tensors.push({ name: n, dtype: t.dtype, shape: [...t.shape], data: ck.readBytes(n) });
    } finally {
      ck.close();
    }
    const victim = tensors.find((t) => t.name === 'model.layers.2.self_attn.o_proj.weight')!;
    const bits = new Uint16Array((victim.data as Uint8Array).slice().buffer);
    bits[300] = 0x7fc0; // a bf16 NaN
    victim.data = bits;
    writeSafetensors(join(dir, 'model.safetensors'), tensors);
    const o = join(work, 'nan-out');
    assert.throws(() => writeFp8Checkpoint(dir, o), (e: unknown) => e instanceof Fp8QuantizeError && /o_proj/.test(e.message) && /non-finite/.test(e.message));
    assert.ok(!existsSync(o));
    assert.ok(!readdirSync(work).some((f) => f.startsWith('.')), 'no temporary directory left');
  });
});
