import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bf16ToF32, f32ToBf16, f32ToFp8e4m3, fp8e4m3ToF32, FP8_E4M3_TABLE } from './dtypes.ts';

test('fp8 e4m3fn landmarks', () => {
  assert.equal(fp8e4m3ToF32(0x38), 1);
  assert.equal(fp8e4m3ToF32(0x08), 2 ** -6);
  assert.equal(fp8e4m3ToF32(0x01), 2 ** -9);
  assert.equal(fp8e4m3ToF32(0x7e), 448);
  assert.ok(Number.isNaN(fp8e4m3ToF32(0x7f)) && Number.isNaN(fp8e4m3ToF32(0xff)));
  assert.ok(Object.is(fp8e4m3ToF32(0x80), -0));
  assert.equal(f32ToFp8e4m3(1000), 0x7e);
  assert.equal(f32ToFp8e4m3(-1000), 0xfe);
  let nan = 0;
  for (const v of FP8_E4M3_TABLE) if (Number.isNaN(v)) nan++;
  assert.equal(nan, 2);
});

test('bf16 round trip and rounding to nearest even', () => {
  assert.equal(bf16ToF32(f32ToBf16(1)), 1);
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even (1).
  assert.equal(bf16ToF32(f32ToBf16(1 + 2 ** -8)), 1);
  assert.equal(bf16ToF32(f32ToBf16(1 + 3 * 2 ** -8)), 1 + 2 ** -6);
});
