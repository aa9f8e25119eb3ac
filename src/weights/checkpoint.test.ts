// Checkpoints: the reference BF16 single file and FP8 sharded checkpoint, and one bad index per rule.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint, INDEX_FILE } from './checkpoint.ts';
import { SHARED_REF, tempDir, throwsRule } from './testutil.ts';
import { writeSafetensors, type TensorToWrite } from './writer.ts';

const BF16_DIR = join(SHARED_REF, 'tiny-v3-bf16');
const FP8_DIR = join(SHARED_REF, 'tiny-v3-fp8');
const tmp = tempDir();
after(tmp.cleanup);

test('reference BF16 checkpoint: one file, every tensor readable, values as documented', () => {
  const ck = Checkpoint.open(BF16_DIR);
  try {
    assert.equal(ck.files.length, 1);
    assert.equal(ck.tensors.size, 207);
    let bytes = 0;
    for (const [name, t] of ck.tensors) {
      const b = ck.readBytes(name);
      assert.equal(b.byteLength, t.byteLength);
      bytes += b.byteLength;
    }
    // The tensors tile the data area: 8-byte length + 23448-byte header + data = file size.
    assert.equal(8 + 23448 + bytes, statSync(join(BF16_DIR, 'model.safetensors')).size);
    assert.equal(Math.min(...[...ck.tensors.values()].map((t) => t.fileOffset)), 8 + 23448);
    ck.expect('model.embed_tokens.weight', ['BF16'], [512, 256]);
    ck.expect('model.layers.1.mlp.gate.e_score_correction_bias', ['F32'], [16]);
    ck.expect('model.layers.0.self_attn.kv_a_proj_with_mqa.weight', ['BF16'], [160, 256]);
    // Norm weights are U(0.75, 1.25); the bias is F32 ~ N(0, 0.05^2).
    const norm = ck.readF32('model.norm.weight');
    assert.ok(norm.every((v) => v >= 0.75 && v <= 1.25));
    const bias = ck.readF32('model.layers.1.mlp.gate.e_score_correction_bias');
    assert.ok(bias.every((v) => Math.abs(v) < 0.5) && bias.some((v) => v !== 0));
    throwsRule(() => ck.expect('model.norm.weight', ['F32']), 'dtype-mismatch', 'model.norm.weight');
    throwsRule(() => ck.expect('model.norm.weight', ['BF16'], [255]), 'shape-mismatch', 'model.norm.weight');
    throwsRule(() => ck.info('model.nope'), 'missing-tensor', 'model.nope');
  } finally {
    ck.close();
  }
  // A .safetensors path works too.
  const one = Checkpoint.open(join(BF16_DIR, 'model.safetensors'));
  assert.equal(one.tensors.size, 207);
  one.close();
});

test('reference FP8 checkpoint: index + 2 shards, 383 tensors, same BF16 bytes as the BF16 variant', () => {
  const ck = Checkpoint.open(FP8_DIR);
  const bf = Checkpoint.open(BF16_DIR);
  try {
    assert.equal(ck.files.length, 2);
    assert.equal(ck.tensors.size, 383);
    const shards = new Set([...ck.tensors.values()].map((t) => t.file.split('/').pop()));
    assert.deepEqual([...shards].sort(), ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    let fp8 = 0, same = 0;
    for (const [name, t] of ck.tensors) {
      const dest = new Uint8Array(t.byteLength);
      ck.readInto(name, dest);
      assert.deepEqual(dest, ck.readBytes(name));
      if (t.dtype === 'F8_E4M3') fp8++;
      if (t.dtype === 'BF16' || (t.dtype === 'F32' && !name.endsWith('_scale_inv'))) {
        assert.deepEqual(dest, bf.readBytes(name), name); // unquantised tensors are identical
        same++;
      }
    }
    assert.ok(fp8 > 100 && same > 20, `${fp8} fp8, ${same} shared`);
    ck.expect('model.layers.0.self_attn.kv_a_proj_with_mqa.weight', ['F8_E4M3'], [160, 256]);
    ck.expect('model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv', ['F32'], [2, 2]);
  } finally {
    ck.close();
    bf.close();
  }
});

// ------------------------------------------------------------------ hand-built directories

const u8 = (name: string, ...v: number[]): TensorToWrite => ({ name, dtype: 'U8', shape: [v.length], data: Uint8Array.from(v) });
let dirCount = 0;

/** A fresh model dir with the given shards ({file: tensors}) and index weight_map (object or raw text). */
function modelDir(shards: Record<string, TensorToWrite[]>, index?: Record<string, string> | string): string {
  const dir = join(tmp.dir, `m${dirCount++}`);
  mkdirSync(dir);
  for (const [file, tensors] of Object.entries(shards)) writeSafetensors(join(dir, file), tensors);
  if (index !== undefined) {
    writeFileSync(join(dir, INDEX_FILE), typeof index === 'string' ? index : JSON.stringify({ metadata: { total_size: 0 }, weight_map: index }));
  }
  return dir;
}

test('a valid hand-built sharded checkpoint, with odd but legal shard spellings', () => {
  const dir = modelDir({ 'a.safetensors': [u8('x', 1, 2), u8('y', 3)], '..b.safetensors': [u8('z', 4)] },
    { x: 'a.safetensors', y: './a.safetensors', z: '..b.safetensors' }); // "./a" is "a"; "..b" is inside
  mkdirSync(join(dir, 'sub'));
  const ck = Checkpoint.open(dir);
  assert.deepEqual([...ck.tensors.keys()].sort(), ['x', 'y', 'z']);
  assert.deepEqual([...ck.readBytes('x')], [1, 2]);
  assert.deepEqual([...ck.readBytes('z')], [4]);
  assert.equal(ck.files.length, 2);
  ck.close();
  throwsRule(() => ck.readBytes('x'), 'io', 'x'); // closed
  // A symlink that stays inside the directory is fine.
  const dir2 = modelDir({ 'real.safetensors': [u8('x', 9)] }, { x: 'link.safetensors' });
  symlinkSync('real.safetensors', join(dir2, 'link.safetensors'));
  const ck2 = Checkpoint.open(dir2);
  assert.deepEqual([...ck2.readBytes('x')], [9]);
  ck2.close();
  // Without an index, every *.safetensors file is opened.
  const dir3 = modelDir({ 'p.safetensors': [u8('x', 1)], 'q.safetensors': [u8('y', 2)] });
  const ck3 = Checkpoint.open(dir3);
  assert.equal(ck3.tensors.size, 2);
  ck3.close();
});

test('index-escapes-dir: traversal, absolute paths, NUL, symlinks out of the directory', () => {
  const outside = join(tmp.dir, 'outside.safetensors');
  writeSafetensors(outside, [u8('x', 1)]);
  for (const shard of ['../outside.safetensors', 'sub/../../outside.safetensors', '..', outside, '/etc/passwd', 'a\0b', '.', 'sub/..']) {
    const dir = modelDir({ 'a.safetensors': [u8('y', 1)] }, { y: 'a.safetensors', x: shard });
    mkdirSync(join(dir, 'sub'));
    throwsRule(() => Checkpoint.open(dir), 'index-escapes-dir', 'x', shard);
  }
  // A symlink inside the directory that points out of it (directly, or through a symlinked folder).
  const dir = modelDir({}, { x: 'link.safetensors' });
  symlinkSync(outside, join(dir, 'link.safetensors'));
  throwsRule(() => Checkpoint.open(dir), 'index-escapes-dir', 'x');
  const dirB = modelDir({}, { x: 'sub/outside.safetensors' });
  symlinkSync(tmp.dir, join(dirB, 'sub'));
  throwsRule(() => Checkpoint.open(dirB), 'index-escapes-dir', 'x');
  // Opt-in for the Hugging Face cache layout (snapshots symlink into ../../blobs).
  const ck = Checkpoint.open(dir, { allowExternalSymlinks: true });
  assert.deepEqual([...ck.readBytes('x')], [1]);
  ck.close();
  throwsRule(() => Checkpoint.open(modelDir({}, { x: '../outside.safetensors' }), { allowExternalSymlinks: true }), 'index-escapes-dir', 'x');
});

test('missing-shard, missing-tensor, duplicate-tensor', () => {
  throwsRule(() => Checkpoint.open(modelDir({ 'a.safetensors': [u8('x', 1)] }, { x: 'a.safetensors', y: 'b.safetensors' })), 'missing-shard', 'y');
  const dangling = modelDir({}, { x: 'gone.safetensors' });
  symlinkSync('nowhere.safetensors', join(dangling, 'gone.safetensors'));
  throwsRule(() => Checkpoint.open(dangling), 'missing-shard', 'x');
  throwsRule(() => Checkpoint.open(modelDir({})), 'missing-shard');
  throwsRule(() => Checkpoint.open(join(tmp.dir, 'no-such-dir')), 'io');
  // Listed in the index, absent from its shard (even if another shard has it).
  const e = throwsRule(() => Checkpoint.open(modelDir({ 'a.safetensors': [u8('x', 1)], 'b.safetensors': [u8('y', 1)] },
    { x: 'a.safetensors', y: 'a.safetensors' })), 'missing-tensor', 'y');
  assert.match(e.file, /a\.safetensors$/);
  // The same tensor in two shards, whatever the index says.
  throwsRule(() => Checkpoint.open(modelDir({ 'a.safetensors': [u8('x', 1)], 'b.safetensors': [u8('x', 2), u8('y', 3)] },
    { x: 'a.safetensors', y: 'b.safetensors' })), 'duplicate-tensor', 'x');
  throwsRule(() => Checkpoint.open(modelDir({ 'a.safetensors': [u8('x', 1)], 'b.safetensors': [u8('x', 2)] })), 'duplicate-tensor', 'x');
});

test('bad-index and duplicate keys in the index', () => {
  const shards = { 'a.safetensors': [u8('x', 1)] };
  for (const text of ['', 'not json', '[]', '{}', '{"weight_map": []}', '{"weight_map": null}', '{"weight_map": "a"}',
    '{"weight_map": {"x": 5}}', '{"weight_map": {"x": ""}}', '{"weight_map": {"x": null}}', '\ufeff{"weight_map": {}}',
    '{"weight_map": {"x": "a.safetensors"}} trailing', '[' .repeat(100_000)]) {
    throwsRule(() => Checkpoint.open(modelDir(shards, text)), 'bad-index', undefined, text.slice(0, 40));
  }
  throwsRule(() => Checkpoint.open(modelDir(shards, '{"weight_map": {"x": "a.safetensors", "x": "a.safetensors"}}')), 'duplicate-key', 'x');
  throwsRule(() => Checkpoint.open(modelDir(shards, '{"weight_map": {}, "weight_map": {"x": "a.safetensors"}}')), 'duplicate-key');
  // An index that is a directory.
  const dir = modelDir(shards);
  mkdirSync(join(dir, INDEX_FILE));
  throwsRule(() => Checkpoint.open(dir), 'bad-index');
  // A shard with a bad header fails with the shard's own rule and path.
  const bad = modelDir(shards, { x: 'a.safetensors' });
  writeFileSync(join(bad, 'a.safetensors'), new Uint8Array(5));
  const err = throwsRule(() => Checkpoint.open(bad), 'file-too-small');
  assert.match(err.file, /a\.safetensors$/);
  // An empty weight_map is a (useless but) valid checkpoint.
  const empty = Checkpoint.open(modelDir(shards, '{"weight_map": {}}'));
  assert.equal(empty.tensors.size, 0);
  empty.close();
});
