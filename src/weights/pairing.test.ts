// FP8 weight/scale pairing on the reference FP8 checkpoint (checked against the BF16 variant it was
// quantised from) and on hand-built files breaking each rule.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { bf16ToF32, fp8e4m3ToF32, fromF32 } from '../tensor/dtypes.ts';
import { Checkpoint } from './checkpoint.ts';
import { findFp8Pairs, fp8Pair, readFp8, readFp8Into } from './pairing.ts';
import { SafetensorsFile } from './safetensors.ts';
import { SHARED_REF, tempDir, throwsRule } from './testutil.ts';
import { writeSafetensors, type TensorToWrite } from './writer.ts';

const tmp = tempDir();
after(tmp.cleanup);

test('reference FP8 checkpoint: every FP8 weight pairs with its scale; dequantised values match the BF16 source', () => {
  const ck = Checkpoint.open(join(SHARED_REF, 'tiny-v3-fp8'));
  const bf = Checkpoint.open(join(SHARED_REF, 'tiny-v3-bf16'));
  try {
    const pairs = findFp8Pairs(ck);
    const fp8Count = [...ck.tensors.values()].filter((t) => t.dtype === 'F8_E4M3').length;
    const scaleCount = [...ck.tensors.keys()].filter((n) => n.endsWith('_scale_inv')).length;
    assert.equal(pairs.size, fp8Count);
    assert.equal(pairs.size, scaleCount);
    assert.ok(pairs.size > 100);
    // Shapes from the README, partial edge blocks on both axes.
    const expect: Record<string, [number, number, number, number]> = {
      'model.layers.0.self_attn.kv_a_proj_with_mqa.weight': [160, 256, 2, 2],
      'model.layers.0.self_attn.q_b_proj.weight': [384, 96, 3, 1],
      'model.layers.1.mlp.experts.3.gate_proj.weight': [64, 256, 1, 2],
      'model.layers.1.mlp.experts.3.down_proj.weight': [256, 64, 2, 1],
      'model.layers.0.mlp.down_proj.weight': [256, 384, 2, 3],
    };
    for (const [name, [r, c, sr, sc]] of Object.entries(expect)) {
      const p = pairs.get(name)!;
      assert.deepEqual([p.rows, p.cols, p.scaleRows, p.scaleCols], [r, c, sr, sc], name);
    }
    // Dequantise a few weights (one block-edge case each way) and compare with the BF16 original:
    // each element is within half an FP8 step of its block: |w - q*s| <= max(|w| * 2^-4, s * 2^-10).
    for (const name of Object.keys(expect)) {
      const { data, scaleInv, rows, cols } = readFp8(ck, name);
      const ref = bf.readBytes(name);
      const w = new Uint16Array(ref.buffer, ref.byteOffset, rows * cols);
      const sc = Math.ceil(cols / 128);
      let worst = 0;
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          const s = scaleInv[Math.floor(i / 128) * sc + Math.floor(j / 128)]!;
          const deq = Math.fround(fp8e4m3ToF32(data[i * cols + j]!) * s);
          const orig = bf16ToF32(w[i * cols + j]!);
          const err = Math.abs(deq - orig) / Math.max(Math.abs(orig) * 2 ** -4, s * 2 ** -10);
          worst = Math.max(worst, err);
        }
      }
      assert.ok(worst <= 1.0001, `${name}: error ${worst} half-steps`);
    }
    // readFp8Into writes into caller memory: here, views into one big arena.
    const p = pairs.get('model.layers.0.self_attn.kv_a_proj_with_mqa.weight')!;
    const arena = new ArrayBuffer(p.weight.byteLength + 16 + 4 * p.scaleRows * p.scaleCols);
    const dData = new Uint8Array(arena, 0, p.weight.byteLength);
    const dScale = new Float32Array(arena, p.weight.byteLength + 16, p.scaleRows * p.scaleCols);
    readFp8Into(ck, p.name, dData, dScale);
    const fresh = readFp8(ck, p.name);
    assert.deepEqual(dData, fresh.data);
    assert.deepEqual(dScale, fresh.scaleInv);
    assert.ok(dScale.every((v) => v > 0 && Number.isFinite(v)));
    throwsRule(() => readFp8Into(ck, p.name, dData.subarray(1), dScale), 'bad-destination', p.name);
    throwsRule(() => readFp8Into(ck, p.name, dData, dScale.subarray(1)), 'bad-destination', `${p.name}_scale_inv`);
    throwsRule(() => readFp8(ck, 'model.norm.weight'), 'dtype-mismatch', 'model.norm.weight');
    throwsRule(() => readFp8(ck, 'nope.weight'), 'missing-tensor', 'nope.weight');
    // The BF16 variant has no FP8 tensor and no scale: nothing to pair, nothing wrong.
    assert.equal(findFp8Pairs(bf).size, 0);
  } finally {
    ck.close();
    bf.close();
  }
});

const fp8 = (name: string, shape: number[]): TensorToWrite =>
  ({ name, dtype: 'F8_E4M3', shape, data: new Uint8Array(shape.reduce((a, b) => a * b, 1)).fill(0x38) });
const f32 = (name: string, shape: number[]): TensorToWrite =>
  ({ name, dtype: 'F32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5) });
let n = 0;
function file(tensors: TensorToWrite[]): SafetensorsFile {
  const p = join(tmp.dir, `p${n++}.safetensors`);
  writeSafetensors(p, tensors);
  return SafetensorsFile.open(p);
}

test('pairing rules: missing scale, wrong dtype, wrong shape, not 2-D, orphan scale; block size parameter', () => {
  const good = file([fp8('a.weight', [200, 300]), f32('a.weight_scale_inv', [2, 3]), f32('b.weight', [3])]);
  const pairs = findFp8Pairs(good);
  assert.deepEqual([...pairs.keys()], ['a.weight']);
  const w = readFp8(good, 'a.weight');
  assert.equal(w.data.length, 60000);
  assert.ok(w.data.every((c) => c === 0x38));
  assert.deepEqual([...w.scaleInv], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
  // The same file under a 64x64 block size needs a [4, 5] scale.
  throwsRule(() => findFp8Pairs(good, [64, 64]), 'fp8-scale-shape', 'a.weight_scale_inv');
  assert.throws(() => findFp8Pairs(good, [0, 128]), RangeError);
  good.close();

  const cases: [TensorToWrite[], Parameters<typeof throwsRule>[1], string][] = [
    [[fp8('a.weight', [200, 300])], 'fp8-missing-scale', 'a.weight'],
    [[fp8('a.weight', [200, 300]), f32('a.weight_scale', [2, 3])], 'fp8-missing-scale', 'a.weight'],
    [[fp8('a.weight', [200, 300]), { name: 'a.weight_scale_inv', dtype: 'BF16', shape: [2, 3], data: fromF32([1, 1, 1, 1, 1, 1], 'BF16') }], 'fp8-scale-dtype', 'a.weight_scale_inv'],
    [[fp8('a.weight', [200, 300]), f32('a.weight_scale_inv', [1, 1])], 'fp8-scale-shape', 'a.weight_scale_inv'],
    [[fp8('a.weight', [200, 300]), f32('a.weight_scale_inv', [3, 2])], 'fp8-scale-shape', 'a.weight_scale_inv'], // transposed
    [[fp8('a.weight', [200, 300]), f32('a.weight_scale_inv', [6])], 'fp8-scale-shape', 'a.weight_scale_inv'],
    [[fp8('a.weight', [200, 300]), f32('a.weight_scale_inv', [2, 3, 1])], 'fp8-scale-shape', 'a.weight_scale_inv'],
    [[fp8('a.weight', [256, 256]), f32('a.weight_scale_inv', [3, 3])], 'fp8-scale-shape', 'a.weight_scale_inv'], // exact multiple: no extra block
    [[fp8('a.weight', [300]), f32('a.weight_scale_inv', [3])], 'fp8-bad-shape', 'a.weight'],
    [[fp8('a.weight', [2, 3, 4]), f32('a.weight_scale_inv', [1, 1])], 'fp8-bad-shape', 'a.weight'],
    [[f32('a.weight', [2, 3]), f32('a.weight_scale_inv', [1, 1])], 'fp8-orphan-scale', 'a.weight_scale_inv'],
    [[f32('c.weight_scale_inv', [1, 1])], 'fp8-orphan-scale', 'c.weight_scale_inv'],
  ];
  for (const [tensors, rule, tensor] of cases) {
    const f = file(tensors);
    throwsRule(() => findFp8Pairs(f), rule, tensor, `${rule} ${tensors.map((t) => `${t.name}${JSON.stringify(t.shape)}`).join(' ')}`);
    f.close();
  }
  // fp8Pair on one name does the same checks.
  const f = file([fp8('a.weight', [128, 129]), f32('a.weight_scale_inv', [1, 1])]);
  throwsRule(() => fp8Pair(f, 'a.weight'), 'fp8-scale-shape', 'a.weight_scale_inv');
  f.close();
});
