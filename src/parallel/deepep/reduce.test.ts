import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bf16ToF32, decodeBf16, f32ToBf16 } from '../../tensor/dtypes.ts';
import { addScaled2Bf16, addScaledBf16, addScaledF32, combineBf16 } from './reduce.ts';
import { f32ArrayToBf16 } from './tokens.ts';
import { rng } from './testing/data.ts';

// Random bf16 bits over a wide exponent range, with some -0 and +0 (the -0 + 0 = +0 case matters).
function randomBf16(n: number, rand: () => number): Uint16Array {
  const v = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const u = rand();
    v[i] = u < 0.05 ? 0x8000 : u < 0.1 ? 0 : f32ToBf16((rand() * 2 - 1) * 2 ** Math.floor(rand() * 40 - 20));
  }
  return v;
}

test('combineBf16 equals summing into a zeroed f32 [T, H] in rank order, bit for bit', () => {
  const rand = rng(7);
  const T = 37, H = 24, R = 3;
  const sendIdx: Int32Array[] = [];
  for (let r = 0; r < R; r++) {
    const idx: number[] = [];
    for (let t = 0; t < T; t++) if (rand() < (t % 5 === 0 ? 0 : 0.6)) idx.push(t); // some tokens go nowhere
    sendIdx.push(Int32Array.from(idx));
  }
  const views = sendIdx.map((idx) => randomBf16(idx.length * H, rand));
  const ref = new Float32Array(T * H);
  views.forEach((v, r) => sendIdx[r]!.forEach((t, i) => {
    for (let c = 0; c < H; c++) ref[t * H + c] += bf16ToF32(v[i * H + c]!);
  }));
  const want = f32ArrayToBf16(ref);
  const got = combineBf16(views, sendIdx, T, H);
  assert.deepEqual(got, want);
  assert.ok(got.some((b) => b !== 0) && [...want].every((b) => b !== 0x8000), 'data exercises nonzero sums and no -0 result');
});

test('addScaledBf16 equals decode then w·y accumulation', () => {
  const rand = rng(8);
  const H = 40;
  const y = randomBf16(3 * H, rand);
  const yf = decodeBf16(y);
  const a = new Float32Array(2 * H), b = new Float32Array(2 * H);
  for (const [row, w] of [[0, 0.25], [2, -1.5], [1, 1]] as const) {
    addScaledBf16(a, H, y, row * H, H, w);
    addScaledF32(b, H, yf, row * H, H, w);
  }
  assert.deepEqual(a, b);
  assert.ok(a.subarray(H).some((v) => v !== 0) && a.subarray(0, H).every((v) => v === 0));
});

test('addScaled2Bf16 equals two addScaledBf16 calls, bit for bit', () => {
  const rand = rng(9);
  const H = 64;
  const y = randomBf16(2 * H, rand);
  const a = new Float32Array(H), b = new Float32Array(H);
  for (let i = 0; i < H; i++) a[i] = b[i] = (rand() - 0.5) * 2 ** Math.floor(rand() * 20 - 10);
  const [wa, wb] = [Math.fround(0.3), Math.fround(-0.7)];
  addScaledBf16(a, 0, y, 0, H, wa);
  addScaledBf16(a, 0, y, H, H, wb);
  addScaled2Bf16(b, 0, y, 0, wa, y, H, wb, H);
  assert.deepEqual(b, a);
});
