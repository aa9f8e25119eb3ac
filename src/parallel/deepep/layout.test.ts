// Pure parts of the DeepEP port: get_dispatch_layout against hand-computed values, input validation,
// and the per-token 1x128 FP8 cast.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeepEPShapeError } from './errors.ts';
import { castToFp8, fp8ToF32 } from './fp8.ts';
import { getDispatchLayout } from './layout.ts';

test('getDispatchLayout: one count per rank even with several experts there; -1 ignored', () => {
  // E = 8 over R = 4 ranks: rank r holds experts 2r, 2r+1. T = 3, K = 3.
  const idx = new Int32Array([0, 1, 5, /**/ -1, 7, 6, /**/ -1, -1, -1]);
  const l = getDispatchLayout(idx, 3, 8, 4);
  assert.deepEqual([...l.numTokensPerRank], [1, 0, 1, 1]);
  assert.deepEqual([...l.numTokensPerExpert], [1, 1, 0, 0, 0, 1, 1, 1]);
  assert.deepEqual([...l.isTokenInRank], [1, 0, 1, 0, /**/ 0, 0, 0, 1, /**/ 0, 0, 0, 0]);
});

test('getDispatchLayout rejects bad input with DeepEPShapeError', () => {
  assert.throws(() => getDispatchLayout(new Int32Array([8]), 1, 8, 4), DeepEPShapeError);
  assert.throws(() => getDispatchLayout(new Int32Array([-2]), 1, 8, 4), DeepEPShapeError);
  assert.throws(() => getDispatchLayout(new Int32Array([0]), 1, 6, 4), DeepEPShapeError);
  assert.throws(() => getDispatchLayout(new Int32Array([0, 1, 2]), 2, 8, 4), DeepEPShapeError);
});

test('FP8 cast: amax = max(|x|, 1e-4), scale = amax / 448, error within half a step', () => {
  const H = 200; // one full and one partial 128-group
  const x = new Float32Array(2 * H).map((_, i) => Math.sin(i * 0.37) * (i < H ? 3 : 0.001));
  x.fill(0, H + 128); // an all-zero block takes the 1e-4 floor
  const { data, scales } = castToFp8(x, 2, H);
  assert.equal(scales.length, 4);
  let amax0 = 0;
  for (let c = 0; c < 128; c++) amax0 = Math.max(amax0, Math.abs(x[c]!));
  assert.equal(scales[0], Math.fround(amax0 / 448));
  assert.equal(scales[3], Math.fround(1e-4 / 448));
  const back = fp8ToF32(data, scales, 2, H);
  for (let t = 0; t < 2; t++) {
    for (let g = 0; g < 2; g++) {
      const c0 = g * 128;
      const c1 = Math.min(H, c0 + 128);
      let amax = 1e-4;
      for (let c = c0; c < c1; c++) amax = Math.max(amax, Math.abs(x[t * H + c]!));
      for (let c = c0; c < c1; c++) assert.ok(Math.abs(back[t * H + c]! - x[t * H + c]!) <= amax / 28, `[${t},${c}]`);
    }
  }
  // The block maximum is exactly representable: it maps to +-448.
  let arg = 0;
  for (let c = 0; c < 128; c++) if (Math.abs(x[c]!) > Math.abs(x[arg]!)) arg = c;
  assert.equal(data[arg]! & 0x7f, 0x7e);
});
