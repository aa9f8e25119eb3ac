// The load-time FP8 quantizer against DeepGEMM's per_block_cast_to_fp8 port (kernels/deepgemm/quant.ts,
// itself the element-by-element rule: f32 division, f32ToFp8e4m3), bit for bit: BF16 through its
// lookup tables (both the 4-wide and the scalar loop), F16 and F32 through the direct path, partial
// edge blocks, the amax floor, signed zeros, non-finite input, and streaming from a file 128 rows at a
// time through the ranged read. Throughput is printed as a diagnostic (params per CPU second).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { quantizePerBlock } from '../kernels/deepgemm/quant.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, f32ToFp8e4m3 } from '../tensor/dtypes.ts';
import { Checkpoint } from './checkpoint.ts';
import { Fp8QuantizeError, Fp8StreamQuantizer, e4m3CodeOfBits, quantizeBlockRow, quantizeMatrixFp8 } from './quantize.ts';
import { rng, tempDir, throwsRule } from './testutil.ts';
import { writeSafetensors } from './writer.ts';

const tmp = tempDir('seekd-quant-');
after(tmp.cleanup);

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function gaussian(next: () => number, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next()) * std;
  return out;
}

const toBf16 = (x: Float32Array) => Uint16Array.from(x, (v) => f32ToBf16(v));
const fromBf16 = (h: Uint16Array) => Float32Array.from(h, (v) => bf16ToF32(v));

/** Our BF16 path vs DeepGEMM's quantizer on the same (bf16-exact) values; returns codes for more checks. */
function checkBf16(h: Uint16Array, rows: number, cols: number, label: string): Uint8Array {
  const want = quantizePerBlock(fromBf16(h), rows, cols);
  const got = quantizeMatrixFp8('BF16', h, rows, cols);
  assert.deepEqual(got.scaleInv, want.scales, `${label}: scales`);
  for (let i = 0; i < want.data.length; i++) {
    if (got.codes[i] !== want.data[i]) {
      assert.fail(`${label}: code at [${Math.floor(i / cols)}, ${i % cols}] is 0x${got.codes[i]!.toString(16)}, want 0x${want.data[i]!.toString(16)} (x = ${bf16ToF32(h[i]!)})`);
    }
  }
  return got.codes;
}

describe('FP8 quantization while loading', () => {
  it('e4m3CodeOfBits equals f32ToFp8e4m3 on every f32 pattern of the top 16 bits x 6 low patterns (ties included)', () => {
    let n = 0;
    for (let hi = 0; hi < 0x7f80; hi++) {
      for (const lo of [0, 1, 0x7fff, 0x8000, 0x8001, 0xffff]) {
        const bits = ((hi << 16) | lo) >>> 0;
        u32[0] = bits;
        const want = f32ToFp8e4m3(f32[0]!);
        const got = e4m3CodeOfBits(bits);
        if (got !== want) assert.fail(`bits 0x${bits.toString(16)} (${f32[0]}): 0x${got.toString(16)}, want 0x${want.toString(16)}`);
        n++;
      }
    }
    assert.equal(n, 0x7f80 * 6);
  });

  it('BF16: Gaussian weights, partial edge blocks on both axes, 4-wide and scalar loops', () => {
    const next = rng(1);
    for (const [rows, cols] of [[300, 260], [128, 128], [1, 4], [129, 130], [64, 257], [200, 2]] as const) {
      checkBf16(toBf16(gaussian(next, rows * cols, 1 / Math.sqrt(cols))), rows, cols, `${rows}x${cols}`);
    }
    // Codes written at an offset that is not a multiple of 4 take the scalar loop.
    const h = toBf16(gaussian(next, 128 * 256, 0.05));
    const codes = new Uint8Array(1 + 128 * 256), scales = new Float32Array(2);
    quantizeBlockRow('BF16', h, 128, 256, codes, 1, scales, 0);
    const want = quantizePerBlock(fromBf16(h), 128, 256);
    assert.deepEqual(codes.subarray(1), want.data);
    assert.deepEqual(scales, want.scales);
  });

  it('BF16: the 8192 bf16 magnitudes below amax in one block (every table entry and below), both signs', () => {
    // One 128x128 block per amax: magnitudes top, top - 1, ... (64 binades: the table's ~21 and the
    // signed zeros under it), each positive and negative.
    for (const amax of [448, 1, 0.0625, 3e-3, 5e-5, 1e-30, 1e-38]) {
      const top = f32ToBf16(amax);
      const h = new Uint16Array(128 * 128);
      for (let i = 0; i < 8192; i++) {
        const m = Math.max(0, top - i);
        h[2 * i] = m;
        h[2 * i + 1] = m | 0x8000;
      }
      checkBf16(h, 128, 128, `magnitudes <= ${amax}`);
    }
  });

  it('BF16: a block after a block of much smaller amax still maps tiny values to signed zero', () => {
    // Block 1 (amax 1e-6) fills the table far down; block 2 (amax 1) must not read those entries for
    // its own tiny values, which are code 0 / 0x80 at its scale.
    const cols = 256, rows = 4;
    const x = new Float32Array(rows * cols);
    const next = rng(2);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < 128; c++) x[r * cols + c] = (next() - 0.5) * 2e-6;
      for (let c = 128; c < cols; c++) x[r * cols + c] = (c % 2 ? 1 : -1) * (c === 129 ? 1 : (next() * 2e-6));
    }
    const codes = checkBf16(toBf16(x), rows, cols, 'small then large amax');
    assert.ok(codes.subarray(130, 256).every((c) => c === 0 || c === 0x80), 'tiny values of block 2 are zeros');
  });

  it('BF16: all-zero blocks, negative zeros, values below the amax floor (1e-4), bf16 subnormals', () => {
    const cols = 384, rows = 3;
    const h = new Uint16Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < 128; c++) h[r * cols + c] = c % 2 ? 0x8000 : 0; // block 0: +-0 only
      for (let c = 128; c < 256; c++) h[r * cols + c] = f32ToBf16((c % 2 ? -1 : 1) * (c - 127) * 3e-7); // block 1: amax < 1e-4
      for (let c = 256; c < 384; c++) h[r * cols + c] = (c % 2 ? 0x8000 : 0) | (c - 255); // block 2: bf16 subnormals only
    }
    const codes = checkBf16(h, rows, cols, 'zeros and tiny blocks');
    assert.equal(codes[1], 0x80, '-0 keeps its sign, as torch / DeepGEMM do');
    const q = quantizeMatrixFp8('BF16', h, rows, cols);
    assert.equal(q.scaleInv[0], Math.fround(1e-4 / 448), 'amax floor');
  });

  it('F16 and F32 sources give the codes of their values', () => {
    const next = rng(3);
    const rows = 140, cols = 200;
    const x = gaussian(next, rows * cols, 0.1);
    const h16 = Uint16Array.from(x, (v) => f32ToF16(v));
    const want16 = quantizePerBlock(Float32Array.from(h16, (v) => f16ToF32(v)), rows, cols);
    const got16 = quantizeMatrixFp8('F16', h16, rows, cols);
    assert.deepEqual(got16.codes, want16.data);
    assert.deepEqual(got16.scaleInv, want16.scales);
    x[7] = -0;
    x[8] = 1e-40; // an f32 subnormal
    const want32 = quantizePerBlock(x, rows, cols);
    const got32 = quantizeMatrixFp8('F32', x, rows, cols);
    assert.deepEqual(got32.codes, want32.data);
    assert.deepEqual(got32.scaleInv, want32.scales);
  });

  it('non-finite values are a typed error naming the tensor and the element', () => {
    const cases: ['BF16' | 'F16' | 'F32', Uint16Array | Float32Array, string][] = [
      ['BF16', Uint16Array.from({ length: 260 }, (_, i) => (i === 200 ? 0x7f80 : 0x3f80)), 'bits 0x7f80'],
      ['BF16', Uint16Array.from({ length: 260 }, (_, i) => (i === 200 ? 0xffc1 : 0x3f80)), 'bits 0xffc1'],
      ['F16', Uint16Array.from({ length: 260 }, (_, i) => (i === 200 ? 0xfc00 : 0x3c00)), 'bits 0xfc00'],
      ['F32', Float32Array.from({ length: 260 }, (_, i) => (i === 200 ? NaN : 1)), 'bits 0x7fc00000'],
    ];
    for (const [dt, x, bits] of cases) {
      assert.throws(() => quantizeBlockRow(dt, x, 2, 130, new Uint8Array(260), 0, new Float32Array(2), 0, 'w.weight', 256),
        (e: unknown) => e instanceof Fp8QuantizeError && e.tensor === 'w.weight' && e.message.includes(bits) && e.message.includes('[257, 70]'),
        `${dt} ${bits}`);
    }
    assert.throws(() => quantizeMatrixFp8('BF16', new Uint16Array(5), 2, 3), Fp8QuantizeError);
  });

  it('streams a checkpoint tensor 128 rows at a time through one staging buffer (ranged reads)', () => {
    const next = rng(4);
    const rows = 300, cols = 196;
    const x = gaussian(next, rows * cols, 0.05);
    const bf = toBf16(x);
    const path = join(tmp.dir, 'w.safetensors');
    writeSafetensors(path, [
      { name: 'a.weight', dtype: 'BF16', shape: [rows, cols], data: bf },
      { name: 'b.weight', dtype: 'F32', shape: [rows, cols], data: fromBf16(bf) },
      { name: 'c.weight', dtype: 'F8_E4M3', shape: [2, 2], data: new Uint8Array(4) },
      { name: 'v', dtype: 'BF16', shape: [cols], data: bf.subarray(0, cols) },
    ]);
    const ck = Checkpoint.open(path);
    try {
      const q = new Fp8StreamQuantizer();
      const want = quantizePerBlock(fromBf16(bf), rows, cols);
      const codes = new Uint8Array(rows * cols), scales = new Float32Array(3 * 2);
      q.quantizeTensor(ck, 'a.weight', codes, scales);
      assert.deepEqual(codes, want.data);
      assert.deepEqual(scales, want.scales);
      assert.equal(q.stagingBytes, 128 * cols * 2, 'one 128-row slab of staging, not the tensor');
      q.quantizeTensor(ck, 'b.weight', codes, scales); // F32 source of the same (bf16-exact) values
      assert.deepEqual(codes, want.data);
      assert.equal(q.stagingBytes, 128 * cols * 4);
      assert.equal(q.elements, 2 * rows * cols);
      const bad = (name: string, c: Uint8Array, s: Float32Array, msg: RegExp) =>
        assert.throws(() => q.quantizeTensor(ck, name, c, s), (e: unknown) => e instanceof Fp8QuantizeError && e.tensor === name && msg.test(e.message));
      bad('c.weight', new Uint8Array(4), new Float32Array(1), /dtype F8_E4M3 cannot be quantized/);
      bad('v', new Uint8Array(cols), new Float32Array(2), /2-D/);
      bad('a.weight', new Uint8Array(rows * cols - 1), scales, /code buffer/);
      bad('a.weight', codes, new Float32Array(5), /scale buffer/);
      bad('nope', codes, scales, /no such tensor/);
      // The ranged read itself: a middle range, and ranges outside the tensor.
      const mid = new Uint16Array(cols);
      ck.readRangeInto('a.weight', 129 * cols * 2, mid);
      assert.deepEqual(mid, bf.subarray(129 * cols, 130 * cols));
      throwsRule(() => ck.readRangeInto('a.weight', (rows * cols - cols + 1) * 2, mid), 'bad-destination', 'a.weight');
      throwsRule(() => ck.readRangeInto('a.weight', -2, mid), 'bad-destination', 'a.weight');
      throwsRule(() => ck.readRangeInto('a.weight', 0.5, mid), 'bad-destination', 'a.weight');
    } finally {
      ck.close();
    }
  });

  it('throughput (BF16, 512x4096, params per CPU second; diagnostic)', (t) => {
    const rows = 512, cols = 4096;
    const h = toBf16(gaussian(rng(5), rows * cols, 0.02));
    const codes = new Uint8Array(rows * cols), scales = new Float32Array(4 * 32);
    for (let i = 0; i < 3; i++) quantizeMatrixFp8('BF16', h, rows, cols, codes, scales);
    let best = 0;
    for (let k = 0; k < 3; k++) {
      const c0 = process.cpuUsage();
      for (let i = 0; i < 3; i++) quantizeMatrixFp8('BF16', h, rows, cols, codes, scales);
      const c = process.cpuUsage(c0);
      best = Math.max(best, (3 * rows * cols) / ((c.user + c.system) / 1e6));
    }
    t.diagnostic(`BF16 -> FP8: ${(best / 1e6).toFixed(0)} M params/s per CPU second`);
    assert.ok(best > 0);
  });
});
