import assert from 'node:assert/strict';
import { test } from 'node:test';
import { quantizePerToken } from '../../kernels/deepgemm/quant.ts';
import { castToFp8 } from './fp8.ts';
import { rng } from './testing/data.ts';

test('castToFp8 gives the bytes and scales of DeepGEMM quantizePerToken, bit for bit', () => {
  const rand = rng(11);
  const T = 9, H = 300; // H not a multiple of 128: a short last block
  const x = new Float32Array(T * H);
  for (let i = 0; i < x.length; i++) x[i] = (rand() * 2 - 1) * 2 ** Math.floor(rand() * 30 - 15);
  // Edge values: exact ties (in units of the block scale), subnormal codes, zeros, huge and non-finite.
  const edges = [0, -0, 1e-30, -1e-30, 448, -448, 1e30, Infinity, -Infinity, NaN, 2 ** -9, 3 * 2 ** -10, 1.0625, 1.1875];
  edges.forEach((v, i) => { x[2 * H + i] = v; });
  for (let i = 0; i < 128; i++) x[3 * H + i] = (i - 64) * 2 ** -12; // one block of tiny values (subnormal codes)
  for (let i = 0; i < 128; i++) x[4 * H + i] = i === 0 ? 448 : (i - 64) / 32; // scale exactly 1: ties at 1/16 steps
  const want = quantizePerToken(x, T, H);
  const got = castToFp8(x, T, H);
  assert.deepEqual(got.scales, want.scales);
  assert.deepEqual(got.data, want.data);
  assert.ok(new Set(got.data).size > 100, 'the data covers many codes');
});
