// `seekd make-checkpoint` end to end: a config file to a directory `seekd score` runs, with tokenizer
// files; preset shard counts scaled to the bytes written; tokenizer copying; one-line usage errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BIN = new URL('../../../bin/seekd.mjs', import.meta.url).pathname;
const seekd = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

const SMALL = {
  architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', vocab_size: 512, hidden_size: 128,
  intermediate_size: 256, moe_intermediate_size: 64, num_hidden_layers: 2, first_k_dense_replace: 1,
  num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: 96, kv_lora_rank: 64, qk_nope_head_dim: 32,
  qk_rope_head_dim: 16, v_head_dim: 32, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2, n_group: 2,
  topk_group: 1, rope_scaling: null, max_position_embeddings: 512, num_nextn_predict_layers: 1,
};

test('make-checkpoint --config writes a model that seekd score runs, with the built-in tokenizer sized to the vocabulary', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-mkck-'));
  try {
    writeFileSync(join(dir, 'config.json'), JSON.stringify(SMALL));
    const out = join(dir, 'model');
    const r = seekd('make-checkpoint', '--config', join(dir, 'config.json'), '--out', out, '--dtype', 'fp8', '--shards', '2', '--seed', '5', '--json');
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout) as { files: string[]; shards: number; dtype: string; fill: string; dataBytes: number; mbPerSec: number };
    assert.equal(s.shards, 2);
    assert.equal(s.dtype, 'fp8');
    assert.equal(s.fill, 'random');
    assert.deepEqual(s.files, ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'config.json', 'tokenizer.json', 'tokenizer_config.json']);
    const tk = JSON.parse(readFileSync(join(out, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> }; added_tokens: { id: number }[] };
    const maxId = Math.max(...Object.values(tk.model.vocab), ...tk.added_tokens.map((a) => a.id));
    assert.equal(maxId + 1, SMALL.vocab_size);
    assert.ok(JSON.parse(readFileSync(join(out, 'tokenizer_config.json'), 'utf8')).chat_template);
    const score = seekd('score', '--model', out, '--ids', '0,5,17', '--json');
    assert.equal(score.status, 0, score.stderr);
    const logits = (JSON.parse(score.stdout) as { logits: number[] }).logits;
    assert.equal(logits.length, SMALL.vocab_size);
    assert.ok(logits.every(Number.isFinite));
    // Same seed again (--force): same bytes.
    const before = readFileSync(join(out, 'model-00002-of-00002.safetensors'));
    const again = seekd('make-checkpoint', '--config', join(dir, 'config.json'), '--out', out, '--dtype', 'fp8', '--shards', '2', '--seed', '5', '--force', '--json');
    assert.equal(again.status, 0, again.stderr);
    assert.ok(before.equals(readFileSync(join(out, 'model-00002-of-00002.safetensors'))));
    assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).quantization_config.quant_method, 'fp8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('make-checkpoint --preset: shard count follows the published shard size; --tokenizer-dir copies the files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-mkck-'));
  try {
    const tkDir = join(dir, 'tk');
    const outA = join(dir, 'a');
    mkdirSync(tkDir);
    writeFileSync(join(tkDir, 'tokenizer.json'), '{"version": "1.0", "marker": 42}');
    writeFileSync(join(tkDir, 'tokenizer_config.json'), '{"marker": 43}');
    // V2-Lite: 31.4 GB in 4 published shards; 2 of its 27 layers are ~2.3 GB, one shard at that size.
    const a = seekd('make-checkpoint', '--preset', 'v2-lite', '--fill', 'zeros', '--layers', '2', '--out', outA, '--tokenizer-dir', tkDir, '--json');
    assert.equal(a.status, 0, a.stderr);
    const sa = JSON.parse(a.stdout) as { shards: number; files: string[] };
    assert.equal(sa.shards, 1);
    assert.equal(sa.files[0], 'model.safetensors');
    assert.ok(!existsSync(join(outA, 'model.safetensors.index.json')));
    assert.equal(readFileSync(join(outA, 'tokenizer.json'), 'utf8'), '{"version": "1.0", "marker": 42}');
    assert.equal(readFileSync(join(outA, 'tokenizer_config.json'), 'utf8'), '{"marker": 43}');
    const info = seekd('info', '--model', outA, '--json');
    assert.equal(info.status, 0, info.stderr);
    assert.equal((JSON.parse(info.stdout) as { layers: { total: number } }).layers.total, 2);
    // Unmodified preset: exactly the published count.
    const outB = join(dir, 'b');
    const b = seekd('make-checkpoint', '--preset', 'v2-lite', '--fill', 'zeros', '--out', outB, '--tokenizer-dir', tkDir);
    assert.equal(b.status, 0, b.stderr);
    assert.match(b.stdout, /5291 tensors in 4 shards \(bf16, zeros\)/);
    assert.ok(existsSync(join(outB, 'model-00004-of-00004.safetensors')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('make-checkpoint: bad arguments exit 2 with one line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-mkck-'));
  try {
    writeFileSync(join(dir, 'x.txt'), 'not empty');
    const out = join(dir, 'o');
    for (const args of [
      ['--out', out],
      ['--preset', 'v3', '--config', 'c.json', '--out', out],
      ['--preset', 'v4', '--out', out],
      ['--preset', 'v2-lite', '--dtype', 'fp16', '--out', out],
      ['--preset', 'v2-lite', '--fill', 'ones', '--out', out],
      ['--preset', 'v2-lite', '--layers', '0', '--out', out],
      ['--preset', 'v2-lite', '--shards', '100000', '--fill', 'zeros', '--out', out],
      ['--preset', 'v2-lite', '--fill', 'zeros', '--out', dir],
      ['--config', join(dir, 'x.txt'), '--out', out],
    ]) {
      const r = seekd('make-checkpoint', ...args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
    assert.deepEqual(readdirSync(dir), ['x.txt'], 'nothing written on a usage error');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
