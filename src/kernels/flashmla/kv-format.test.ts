// Cache row formats: f32 exact, bf16 round-to-nearest-even, FP8 (V3.2: 656 B/token, power-of-two scales
// 2^ceil(log2(max(amax/448, 1e-4))) per 128 values, bf16 RoPE), and the paged cache's bookkeeping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allocCacheLayer, fp8TileScale, poisonRow, readRow, writeRow } from './kv-format.ts';
import { KvCacheFullError, KvCacheSequenceError, PagedLatentCache } from './paged-cache.ts';
import { fp8BytesPerToken, FlashMlaError } from './types.ts';
import { bf16ToF32, f32ToBf16 } from '../../tensor/dtypes.ts';

test('FP8 layout is 656 bytes per token for V3 (512 e4m3 + 4 f32 scales + 64 bf16)', () => {
  assert.equal(fp8BytesPerToken(576, 64), 656);
  const l = allocCacheLayer('fp8', 2, 1, 576);
  assert.equal(l.data.byteLength, 2 * 64 * 656);
  assert.equal(allocCacheLayer('bf16', 2, 1, 576).data.byteLength, 2 * 64 * 1152);
});

test('FP8 tile scale: smallest power of two ≥ max(amax/448, 1e-4)', () => {
  assert.equal(fp8TileScale(448), 1);
  assert.equal(fp8TileScale(449), 2);
  assert.equal(fp8TileScale(224), 0.5);
  assert.equal(fp8TileScale(1), 2 ** -8); // 1/448 = 2^-8.81 -> 2^-8
  assert.equal(fp8TileScale(0), 2 ** -13); // 1e-4 -> 2^-13 = 1.22e-4
  assert.equal(fp8TileScale(896), 2);
});

test('FP8 row: exact for values on the e4m3 grid, bounded error otherwise, RoPE as bf16', () => {
  const l = allocCacheLayer('fp8', 1, 1, 576);
  const row = new Float32Array(576);
  // Tile 0: amax 448 -> scale 1, values on the grid round-trip exactly.
  for (let i = 0; i < 128; i++) row[i] = [448, -0.5, 3.25, 0, 2 ** -9][i % 5]!;
  for (let i = 128; i < 512; i++) row[i] = Math.sin(i) * (i < 256 ? 0.01 : 50);
  for (let i = 512; i < 576; i++) row[i] = Math.cos(i) * 3;
  writeRow(l, 0, 5, 0, row);
  const back = new Float32Array(576);
  readRow(l, 0, 5, 0, back);
  for (let i = 0; i < 128; i++) assert.equal(back[i], row[i]);
  const scales = new Float32Array(l.data.buffer, 5 * 656 + 512, 4);
  assert.deepEqual(Array.from(scales), [1, fp8TileScale(0.01), fp8TileScale(50), fp8TileScale(50)]);
  for (let i = 128; i < 512; i++) {
    const s = scales[Math.floor(i / 128)]!;
    assert.ok(Math.abs(back[i]! - row[i]!) <= Math.max(Math.abs(row[i]!) * 2 ** -4, s * 2 ** -10), `elem ${i}`);
  }
  for (let i = 512; i < 576; i++) assert.equal(back[i], bf16ToF32(f32ToBf16(row[i]!)));
});

test('bf16 rows round to nearest even; f32 rows are exact; poison is NaN in every format', () => {
  for (const dtype of ['f32', 'bf16', 'fp8'] as const) {
    const l = allocCacheLayer(dtype, 2, 2, 576);
    const row = Float32Array.from({ length: 576 }, (_, i) => Math.fround(Math.sin(i) * 0.3));
    writeRow(l, 1, 63, 1, row);
    const back = new Float32Array(576);
    readRow(l, 1, 63, 1, back);
    if (dtype === 'f32') assert.deepEqual(back, row);
    if (dtype === 'bf16') for (let i = 0; i < 576; i++) assert.equal(back[i], bf16ToF32(f32ToBf16(row[i]!)));
    poisonRow(l, 1, 63, 1);
    readRow(l, 1, 63, 1, back);
    assert.ok(back.every((x) => Number.isNaN(x)), dtype);
    readRow(l, 1, 63, 0, back); // the neighbouring head is untouched (zero)
    assert.ok(back.every((x) => x === 0), dtype);
  }
});

test('paged cache: blocks from a shared pool, per-sequence tables, lengths, release', () => {
  const c = new PagedLatentCache({ numLayers: 2, numBlocks: 5, headDim: 576, dtype: 'f32', poison: true });
  c.addSequence(7);
  c.addSequence(9);
  const rows = Float32Array.from({ length: 70 * 576 }, (_, i) => i % 1000);
  c.write(0, 7, 0, rows, 70); // 2 blocks
  c.write(1, 7, 0, rows, 70);
  c.setLength(7, 70);
  c.write(0, 9, 0, rows, 1);
  c.setLength(9, 1);
  assert.deepEqual(c.blocks(7), [0, 1]);
  assert.deepEqual(c.blocks(9), [2]);
  assert.equal(c.freeBlocks, 2);
  assert.deepEqual(c.readToken(1, 7, 69), rows.subarray(69 * 576, 70 * 576));
  assert.ok(Number.isNaN(c.readToken(1, 9, 0)[0])); // layer 1 of seq 9 was never written
  const t = c.batchTables([9, 7], undefined, -1);
  assert.deepEqual(Array.from(t.blockTable), [2, -1, 0, 1]);
  assert.deepEqual(Array.from(t.cacheSeqlens), [1, 70]);
  assert.throws(() => c.reserve(9, 64 * 4), KvCacheFullError);
  assert.deepEqual(c.blocks(9), [2]); // all or nothing
  assert.throws(() => c.setLength(9, 65), KvCacheSequenceError);
  c.release(7);
  assert.equal(c.freeBlocks, 4);
  assert.throws(() => c.length(7), KvCacheSequenceError);
  assert.throws(() => new PagedLatentCache({ numLayers: 1, numBlocks: 1, headDim: 100, dtype: 'fp8' }), FlashMlaError);
  assert.equal(new PagedLatentCache({ numLayers: 61, numBlocks: 1, headDim: 576, dtype: 'fp8' }).bytesPerToken, 61 * 656);
});
