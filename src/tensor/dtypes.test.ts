// Exhaustive and edge-case tests of the number formats. Expected values come from formulas written
// here independently of dtypes.ts (OCP OFP8 / IEEE 754 definitions), never from the codecs themselves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bf16ToF32, decodeBf16, decodeF16, decodeFp8e4m3, DTYPE_BYTES, e8m0ToF32, encodeBf16, encodeF16, encodeFp8e4m3,
  f16ToF32, f32ToBf16, f32ToF16, f32ToFp8e4m3, FP8_E4M3_MAX, FP8_E4M3_TABLE, fp8e4m3ToF32, fp8e5m2ToF32, fromF32,
  isDType, roundToBf16, toF32,
} from './dtypes.ts';
import { mulberry32 } from './random.ts';

// ------------------------------------------------------------------ helpers (independent of dtypes.ts)

const fbuf = new Float32Array(1);
const ubuf = new Uint32Array(fbuf.buffer);
const bitsToF32 = (u: number): number => { ubuf[0] = u >>> 0; return fbuf[0]!; };
const f32Bits = (x: number): number => { fbuf[0] = x; return ubuf[0]!; };
/** The next f32 above / below x (x finite, x > 0). */
const nextUp = (x: number): number => bitsToF32(f32Bits(x) + 1);
const nextDown = (x: number): number => bitsToF32(f32Bits(x) - 1);

/** Seeded PRNG (mulberry32) so any failure reproduces. */
const rng = mulberry32;

/** OCP E4M3 value of a code, from the spec's definition (bias 7, no infinities, S.1111.111 = NaN). */
function e4m3Spec(code: number): number {
  const sign = code >= 128 ? -1 : 1;
  const exp = (code & 0x7f) >> 3;
  const man = code & 7;
  if (exp === 15 && man === 7) return NaN;
  // Subnormals: 0.MMM x 2^(1-7); normals: 1.MMM x 2^(E-7).
  const mag = exp === 0 ? (man / 8) * Math.pow(2, -6) : ((8 + man) / 8) * Math.pow(2, exp - 7);
  return sign * mag;
}

/** IEEE binary16 value of a code, from the definition. */
function f16Spec(h: number): number {
  const sign = h >= 0x8000 ? -1 : 1;
  const exp = (h & 0x7fff) >> 10;
  const man = h & 0x3ff;
  if (exp === 31) return man === 0 ? sign * Infinity : NaN;
  const mag = exp === 0 ? (man / 1024) * Math.pow(2, -14) : ((1024 + man) / 1024) * Math.pow(2, exp - 15);
  return sign * mag;
}

/**
 * Round-to-nearest-even by exhaustive neighbour search over a sorted list of (value, code) of one sign's
 * finite codes, plus an "overflow" code standing one step above the largest value (IEEE behaviour:
 * ties at max + half-ulp go to the even overflow code). x must be >= 0 and finite.
 */
function rneSearch(x: number, values: Float64Array, codes: Uint32Array): number {
  let lo = 0, hi = values.length - 1;
  if (x >= values[hi]!) return codes[hi]!;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (values[mid]! <= x) lo = mid; else hi = mid;
  }
  const dl = x - values[lo]!, dh = values[hi]! - x; // exact in f64 for these formats
  if (dl < dh) return codes[lo]!;
  if (dh < dl) return codes[hi]!;
  return (codes[lo]! & 1) === 0 ? codes[lo]! : codes[hi]!;
}

// ------------------------------------------------------------------ FP8 e4m3fn

test('fp8 e4m3fn: every one of the 256 codes decodes to the OCP value', () => {
  let nans = 0;
  for (let c = 0; c < 256; c++) {
    const want = e4m3Spec(c);
    const got = fp8e4m3ToF32(c);
    if (Number.isNaN(want)) {
      assert.ok(Number.isNaN(got), `code ${c}`);
      nans++;
    } else {
      assert.ok(Object.is(got, want), `code 0x${c.toString(16)}: got ${got}, want ${want}`);
    }
    assert.ok(Object.is(FP8_E4M3_TABLE[c], got) || (Number.isNaN(got) && Number.isNaN(FP8_E4M3_TABLE[c]!)));
  }
  assert.equal(nans, 2);
  // Landmarks stated in the reference README.
  assert.equal(fp8e4m3ToF32(0x38), 1);
  assert.equal(fp8e4m3ToF32(0x08), 2 ** -6);
  assert.equal(fp8e4m3ToF32(0x01), 0.001953125);
  assert.equal(fp8e4m3ToF32(0x7e), 448);
  assert.equal(fp8e4m3ToF32(0x7e), FP8_E4M3_MAX);
  assert.equal(fp8e4m3ToF32(0xfe), -448);
  assert.equal(fp8e4m3ToF32(0x78), 256); // E = 15 with M < 7 is an ordinary number
  assert.ok(Number.isNaN(fp8e4m3ToF32(0x7f)) && Number.isNaN(fp8e4m3ToF32(0xff)));
  assert.ok(Object.is(fp8e4m3ToF32(0x80), -0));
  assert.ok(Object.is(fp8e4m3ToF32(0x00), 0));
});

test('fp8 e4m3fn: encode(decode(c)) == c for every non-NaN code, -0 included', () => {
  for (let c = 0; c < 256; c++) {
    if (c === 0x7f || c === 0xff) continue;
    assert.equal(f32ToFp8e4m3(e4m3Spec(c)), c, `code 0x${c.toString(16)}`);
  }
  assert.equal(f32ToFp8e4m3(-0), 0x80);
  assert.equal(f32ToFp8e4m3(0), 0x00);
});

test('fp8 e4m3fn: every midpoint between adjacent codes rounds to the even code, neighbours round correctly', () => {
  let checked = 0;
  for (const sign of [0, 0x80]) {
    // Codes 0..0x7E of one sign increase monotonically in magnitude.
    for (let c = 0; c < 0x7e; c++) {
      const a = Math.abs(e4m3Spec(c)), b = Math.abs(e4m3Spec(c + 1));
      const mid = (a + b) / 2; // exact in f32: at most 5 significant bits
      assert.equal(Math.fround(mid), mid);
      const even = (c & 1) === 0 ? c : c + 1;
      const s = sign ? -1 : 1;
      assert.equal(f32ToFp8e4m3(s * mid), sign | even, `midpoint of 0x${c.toString(16)}/0x${(c + 1).toString(16)} sign ${sign}`);
      assert.equal(f32ToFp8e4m3(s * nextDown(mid)), sign | c);
      assert.equal(f32ToFp8e4m3(s * nextUp(mid)), sign | (c + 1));
      checked++;
    }
  }
  assert.equal(checked, 2 * 126);
  // Spot checks written out: halfway between 0 and the smallest subnormal goes to 0, and the
  // subnormal/normal boundary (7.5 * 2^-9) goes up to the even code 0x08.
  assert.equal(f32ToFp8e4m3(2 ** -10), 0x00);
  assert.equal(f32ToFp8e4m3(-(2 ** -10)), 0x80);
  assert.equal(f32ToFp8e4m3(nextUp(2 ** -10)), 0x01);
  assert.equal(f32ToFp8e4m3(7.5 * 2 ** -9), 0x08);
  assert.equal(f32ToFp8e4m3(1.0625), 0x38); // 1 + 1/16: tie, 0x38 is even
  assert.equal(f32ToFp8e4m3(1.1875), 0x3a); // 1 + 3/16: tie between 0x39 and 0x3A
  assert.equal(f32ToFp8e4m3(15.5), 0x58); // tie between 15 (0x57) and 16 (0x58): carry into the exponent
  assert.equal(f32ToFp8e4m3(432), 0x7e); // tie between 416 (0x7D) and 448 (0x7E)
});

test('fp8 e4m3fn: random f32 values match a neighbour search', () => {
  const vals: number[] = [], codes: number[] = [];
  for (let c = 0; c <= 0x7e; c++) { vals.push(e4m3Spec(c)); codes.push(c); }
  const V = Float64Array.from(vals), C = Uint32Array.from(codes);
  const r = rng(7);
  for (let i = 0; i < 50_000; i++) {
    // Magnitudes spread over the whole range, 2^-12 .. 2^9.
    const x = Math.fround(Math.pow(2, -12 + r() * 21));
    const want = rneSearch(x, V, C); // >= 448 stays at 0x7E: saturation
    assert.equal(f32ToFp8e4m3(x), want, `x = ${x}`);
    assert.equal(f32ToFp8e4m3(-x), 0x80 | want, `x = ${-x}`);
  }
});

test('fp8 e4m3fn: saturation at +-448, NaN, infinities', () => {
  for (const x of [448, 449, 463.99, 464, 480, 1e6, 3.4e38, Infinity]) {
    assert.equal(f32ToFp8e4m3(x), 0x7e, `${x}`);
    assert.equal(f32ToFp8e4m3(-x), 0xfe, `${-x}`);
  }
  assert.equal(f32ToFp8e4m3(nextDown(448)), 0x7e); // rounds to 448, not saturation
  assert.equal(f32ToFp8e4m3(424), 0x7d); // below the 432 midpoint
  const nanCode = f32ToFp8e4m3(NaN);
  assert.ok(nanCode === 0x7f || nanCode === 0xff);
  assert.ok(Number.isNaN(fp8e4m3ToF32(nanCode)));
  assert.equal(f32ToFp8e4m3(bitsToF32(0xffc00000)), 0xff); // negative NaN keeps its sign
  assert.equal(f32ToFp8e4m3(bitsToF32(0x7f800001)), 0x7f); // signalling-pattern NaN
  // Finite inputs never produce a NaN code.
  for (let c = 0; c < 256; c++) {
    const v = e4m3Spec(c);
    if (Number.isNaN(v)) continue;
    const code = f32ToFp8e4m3(v * 1.03);
    assert.ok(code !== 0x7f && code !== 0xff);
  }
});

test('fp8 e4m3fn: array codecs agree with the scalar ones', () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const dec = decodeFp8e4m3(all);
  for (let c = 0; c < 256; c++) assert.ok(Object.is(dec[c], fp8e4m3ToF32(c)) || Number.isNaN(dec[c]!));
  const enc = encodeFp8e4m3(dec);
  for (let c = 0; c < 256; c++) if (c !== 0x7f && c !== 0xff) assert.equal(enc[c], c);
  const out = new Float32Array(4);
  assert.equal(decodeFp8e4m3(Uint8Array.of(0x38, 0xb8, 0x7e, 0x01), out), out);
  assert.deepEqual([...out], [1, -1, 448, 2 ** -9]);
});

// ------------------------------------------------------------------ bf16

test('bf16: every code decodes as the top half of an f32 and re-encodes to itself', () => {
  for (let h = 0; h < 0x10000; h++) {
    const v = bf16ToF32(h);
    assert.ok(Object.is(v, bitsToF32(h << 16)) || Number.isNaN(v));
    const exp = (h >> 7) & 0xff, man = h & 0x7f;
    if (exp === 0xff && man !== 0) {
      assert.ok(Number.isNaN(v));
      assert.ok((f32ToBf16(v) & 0x7f80) === 0x7f80 && (f32ToBf16(v) & 0x7f) !== 0);
      continue;
    }
    if (f32ToBf16(v) !== h) assert.fail(`bf16 0x${h.toString(16)} did not round-trip`);
  }
});

test('bf16: round-to-nearest-even edge cases', () => {
  const enc = (u: number): number => f32ToBf16(bitsToF32(u));
  assert.equal(enc(0x3f808000), 0x3f80); // 1 + 2^-8: tie, to even (1.0)
  assert.equal(enc(0x3f808001), 0x3f81); // just above the tie
  assert.equal(enc(0x3f818000), 0x3f82); // 1 + 3*2^-8: tie, odd below -> up
  assert.equal(enc(0x3f817fff), 0x3f81);
  assert.equal(enc(0x3fff8000), 0x4000); // tie at the top of the mantissa: carry into the exponent (2.0)
  assert.equal(enc(0x3fffffff), 0x4000);
  assert.equal(enc(0x7f7f7fff), 0x7f7f); // largest finite stays finite below the tie
  assert.equal(enc(0x7f7f8000), 0x7f80); // tie at the largest finite value: odd -> overflows to +Inf
  assert.equal(enc(0x7f7fffff), 0x7f80); // f32 max -> +Inf
  assert.equal(enc(0xff7fffff), 0xff80); // -f32 max -> -Inf
  assert.equal(enc(0x7f800000), 0x7f80); // +Inf
  assert.equal(enc(0xff800000), 0xff80); // -Inf
  assert.equal(enc(0x80000000), 0x8000); // -0
  assert.equal(enc(0x00008000), 0x0000); // subnormal tie to even (0)
  assert.equal(enc(0x00018000), 0x0002); // subnormal tie, odd below -> up
  assert.equal(enc(0x00000001), 0x0000); // smallest f32 subnormal -> 0
  assert.equal(enc(0x007fffff), 0x0080); // largest f32 subnormal carries to the smallest normal bf16
  // NaNs stay NaN even when the payload is only in the dropped half (truncation would give Inf).
  for (const u of [0x7f800001, 0x7fc00000, 0x7f80ffff, 0xff800001, 0xffffffff]) {
    const h = enc(u);
    assert.ok(Number.isNaN(bf16ToF32(h)), `0x${u.toString(16)}`);
    assert.equal(h & 0x8000, (u >>> 16) & 0x8000, 'NaN sign kept');
  }
});

test('bf16: random f32 bit patterns match the nearest-even neighbour', () => {
  const r = rng(11);
  for (let i = 0; i < 200_000; i++) {
    const u = Math.floor(r() * 2 ** 32);
    const x = bitsToF32(u);
    if (!Number.isFinite(x)) continue;
    const lo = u >>> 16; // truncation towards zero in magnitude
    const a = Math.abs(bitsToF32(lo << 16));
    const hiBits = (lo & 0x7fff) + 1; // next magnitude up (may be Inf: fine, it is also "2^128")
    const b = (hiBits & 0x7fff) === 0x7f80 ? 2 ** 128 : Math.abs(bitsToF32(hiBits << 16));
    const ax = Math.abs(x);
    let want: number;
    if (ax - a < b - ax) want = lo;
    else if (b - ax < ax - a) want = (lo & 0x8000) | hiBits;
    else want = (lo & 1) === 0 ? lo : (lo & 0x8000) | hiBits;
    assert.equal(f32ToBf16(x), want, `u = 0x${u.toString(16)}`);
  }
});

test('bf16: array helpers', () => {
  const src = Float32Array.of(1, -2.5, 1 + 2 ** -8, 3.140625);
  const bits = encodeBf16(src);
  assert.deepEqual([...bits], [0x3f80, 0xc020, 0x3f80, 0x4049]);
  assert.deepEqual([...decodeBf16(bits)], [1, -2.5, 1, 3.140625]);
  const x = Float32Array.of(1 + 3 * 2 ** -8, 0.1);
  roundToBf16(x);
  assert.equal(x[0], 1 + 2 ** -6);
  assert.equal(x[1], bitsToF32(0x3dcd0000)); // 0.1 = 0x3DCCCCCD rounds up
});

// ------------------------------------------------------------------ f16

test('f16: every code decodes to the IEEE value and re-encodes to itself', () => {
  for (let h = 0; h < 0x10000; h++) {
    const want = f16Spec(h);
    const got = f16ToF32(h);
    if (Number.isNaN(want)) {
      assert.ok(Number.isNaN(got));
      const back = f32ToF16(got);
      assert.ok((back & 0x7c00) === 0x7c00 && (back & 0x3ff) !== 0, 'NaN stays NaN');
      continue;
    }
    if (!Object.is(got, want)) assert.fail(`f16 0x${h.toString(16)}: got ${got}, want ${want}`);
    if (f32ToF16(got) !== h) assert.fail(`f16 0x${h.toString(16)} did not round-trip`);
  }
});

test('f16: rounding edge cases (ties, carries, overflow to Inf, subnormals, NaN)', () => {
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00); // tie -> even
  assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02); // tie, odd below -> up
  assert.equal(f32ToF16(nextUp(1 + 2 ** -11)), 0x3c01);
  assert.equal(f32ToF16(2 - 2 ** -11), 0x4000); // tie at the top of the mantissa: carry into the exponent
  assert.equal(f32ToF16(65504), 0x7bff); // largest finite
  assert.equal(f32ToF16(nextDown(65520)), 0x7bff);
  assert.equal(f32ToF16(65520), 0x7c00); // max + half ulp: tie, odd below -> overflows to Inf
  assert.equal(f32ToF16(-65520), 0xfc00);
  assert.equal(f32ToF16(1e6), 0x7c00);
  assert.equal(f32ToF16(3.4e38), 0x7c00);
  assert.equal(f32ToF16(Infinity), 0x7c00);
  assert.equal(f32ToF16(-Infinity), 0xfc00);
  assert.equal(f32ToF16(2 ** -24), 0x0001); // smallest subnormal
  assert.equal(f32ToF16(2 ** -25), 0x0000); // half of it: tie to even (0)
  assert.equal(f32ToF16(-(2 ** -25)), 0x8000);
  assert.equal(f32ToF16(nextUp(2 ** -25)), 0x0001);
  assert.equal(f32ToF16(1.5 * 2 ** -24), 0x0002); // tie between 1 and 2 units -> 2
  assert.equal(f32ToF16(2.5 * 2 ** -24), 0x0002); // tie between 2 and 3 units -> 2
  assert.equal(f32ToF16(1023.5 * 2 ** -24), 0x0400); // largest subnormal + half: carries to the smallest normal
  assert.equal(f32ToF16(2 ** -14), 0x0400);
  assert.equal(f32ToF16(1e-10), 0x0000);
  assert.equal(f32ToF16(bitsToF32(0x00000001)), 0x0000); // f32 subnormal
  assert.equal(f32ToF16(-0), 0x8000);
  const n = f32ToF16(NaN);
  assert.ok((n & 0x7c00) === 0x7c00 && (n & 0x3ff) !== 0);
  assert.equal(f32ToF16(bitsToF32(0xff800001)) & 0x8000, 0x8000, 'NaN sign kept');
  assert.ok((f32ToF16(bitsToF32(0x7f800001)) & 0x3ff) !== 0, 'NaN with a low payload stays NaN');
});

test('f16: random f32 values match a neighbour search', () => {
  const vals: number[] = [], codes: number[] = [];
  for (let h = 0; h < 0x7c00; h++) { vals.push(f16Spec(h)); codes.push(h); }
  vals.push(65536); codes.push(0x7c00); // the overflow step (IEEE: even, so ties at 65520 overflow)
  const V = Float64Array.from(vals), C = Uint32Array.from(codes);
  const r = rng(5);
  for (let i = 0; i < 100_000; i++) {
    const x = Math.fround(Math.pow(2, -27 + r() * 45)); // 2^-27 .. 2^18, past the overflow
    const want = rneSearch(x, V, C);
    assert.equal(f32ToF16(x), want, `x = ${x}`);
    assert.equal(f32ToF16(-x), 0x8000 | want, `x = ${-x}`);
  }
});

test('f16: array helpers', () => {
  const bits = encodeF16([1, -2, 65504, 2 ** -24]);
  assert.deepEqual([...bits], [0x3c00, 0xc000, 0x7bff, 0x0001]);
  assert.deepEqual([...decodeF16(bits)], [1, -2, 65504, 2 ** -24]);
});

// ------------------------------------------------------------------ other formats and whole tensors

test('fp8 e5m2 and e8m0 decode', () => {
  assert.equal(fp8e5m2ToF32(0x3c), 1);
  assert.equal(fp8e5m2ToF32(0x7b), 57344); // max finite e5m2
  assert.equal(fp8e5m2ToF32(0x7c), Infinity);
  assert.equal(fp8e5m2ToF32(0xfc), -Infinity);
  assert.ok(Number.isNaN(fp8e5m2ToF32(0x7d)));
  assert.equal(fp8e5m2ToF32(0x01), 2 ** -16);
  assert.equal(e8m0ToF32(127), 1);
  assert.equal(e8m0ToF32(0), 2 ** -127);
  assert.equal(e8m0ToF32(254), 2 ** 127);
  assert.ok(Number.isNaN(e8m0ToF32(255)));
});

test('toF32 / fromF32 over every float dtype, aligned and unaligned', () => {
  const vals = [1, -0.5, 448, 2 ** -9];
  for (const dt of ['F32', 'BF16', 'F16', 'F8_E4M3'] as const) {
    const bytes = fromF32(vals, dt);
    assert.equal(bytes.byteLength, vals.length * DTYPE_BYTES[dt]);
    assert.deepEqual([...toF32(bytes, dt)], vals, dt);
    // Same bytes at an odd offset: must be copied, not misread.
    const buf = new Uint8Array(bytes.byteLength + 1);
    buf.set(bytes, 1);
    assert.deepEqual([...toF32(buf.subarray(1), dt)], vals, `${dt} unaligned`);
  }
  const f64 = new Uint8Array(Float64Array.of(1.5, -3).buffer);
  assert.deepEqual([...toF32(f64, 'F64')], [1.5, -3]);
  assert.deepEqual([...toF32(Uint8Array.of(0x3c, 0xc0), 'F8_E5M2')], [1, -2]);
  assert.deepEqual([...toF32(Uint8Array.of(127, 128), 'F8_E8M0')], [1, 2]);
  assert.throws(() => toF32(new Uint8Array(4), 'I32'), TypeError);
  assert.throws(() => toF32(new Uint8Array(3), 'F16'), RangeError);
  // toF32 returns a copy, never a view of its input.
  const src = fromF32([1, 2], 'F32');
  const out = toF32(src, 'F32');
  src.fill(0);
  assert.deepEqual([...out], [1, 2]);
});

test('dtype names and sizes follow the safetensors reference', () => {
  for (const [name, size] of Object.entries({ F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, F8_E8M0: 1, C64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1 })) {
    assert.ok(isDType(name), name);
    assert.equal(DTYPE_BYTES[name as keyof typeof DTYPE_BYTES], size);
  }
  for (const bad of ['F4', 'f32', 'float32', '__proto__', 'toString', 'constructor', '']) assert.equal(isDType(bad), false, bad);
});
