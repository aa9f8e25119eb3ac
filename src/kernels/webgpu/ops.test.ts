// WebGPU forward ops against float64 references (Dawn on Mesa llvmpipe in CI: small shapes).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { bf16ToF32, encodeBf16, encodeFp8e4m3, fp8e4m3ToF32 } from '../../tensor/dtypes.ts';
import type { WeightMatrix } from '../api.ts';
import { closeDevice, devicesOpened, getDevice } from './device.ts';
import { emptyStorage, packWords, readBuffer, uploadStorage } from './buffers.ts';
import { WebGpuDeviceLostError, WebGpuLimitError, WebGpuShaderError, WebGpuValidationError } from './errors.ts';
import { KernelShapeError } from '../ref/ops.ts';
import { getPipeline, pipelinesCreated, runPasses } from './pipelines.ts';
import { loadWebGpuBackend } from './ops.ts';
import { setGemmStrategy } from './deepgemm.ts';
import { runOpSuite } from '../ops.test-suite.ts';
import { randn, rng, worstRatio } from './testutil.ts';

after(closeDevice);

const opened0 = devicesOpened();
const gpu = await loadWebGpuBackend();

test('the device opens lazily, once, with the adapter limits requested', async () => {
  assert.equal(opened0, 0);
  const ctx = await getDevice();
  assert.equal(devicesOpened(), 1);
  assert.equal(await getDevice(), ctx);
  // Compat defaults are 128 invocations and 16 KiB; the adapter (llvmpipe) allows 1024 and 32 KiB.
  assert.ok(ctx.limits.maxComputeInvocationsPerWorkgroup >= 256, `${ctx.limits.maxComputeInvocationsPerWorkgroup}`);
  assert.ok(ctx.limits.maxComputeWorkgroupStorageSize >= 32768);
  assert.ok(ctx.limits.maxStorageBuffersPerShaderStage >= 10);
});

test('packWords packs bytes and halves little-endian into u32 words', () => {
  assert.deepEqual([...packWords(new Uint8Array([1, 2, 3, 4, 5]))], [0x04030201, 5]);
  assert.deepEqual([...packWords(new Uint16Array([0x1234, 0xabcd, 7]))], [0xabcd1234, 7]);
  assert.deepEqual([...packWords(new Uint8Array(0))], [0]);
});

test('upload and readback round-trip 8-bit data through a storage buffer', async () => {
  const ctx = await getDevice();
  const bytes = new Uint8Array(1001).map((_, i) => (i * 37) & 255);
  const b = uploadStorage(ctx, bytes, 't');
  const back = new Uint8Array(await readBuffer(ctx, b, bytes.length));
  b.destroy();
  assert.deepEqual(back, bytes);
});

test('a single storage buffer beyond maxStorageBufferBindingSize is refused with a typed error', async () => {
  // Ops split their tensors to fit (split.test.ts); one buffer is the unit that cannot be split.
  const ctx = await getDevice();
  assert.throws(() => emptyStorage(ctx, ctx.limits.maxStorageBufferBindingSize + 4, 'huge'),
    (e: unknown) => e instanceof WebGpuLimitError && e.message.includes('huge'));
});

test('WGSL that does not compile is a WebGpuShaderError naming the key', async () => {
  const ctx = await getDevice();
  await assert.rejects(getPipeline(ctx, 'broken:test', () => '@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }'),
    (e: unknown) => e instanceof WebGpuShaderError && e.shaderKey === 'broken:test');
});

function refMatmul(x: Float32Array, m: number, n: number, k: number, wAt: (i: number) => number, scale: (nn: number, kk: number) => number): Float64Array {
  const y = new Float64Array(m * n);
  for (let r = 0; r < m; r++) for (let c = 0; c < n; c++) {
    let s = 0;
    for (let i = 0; i < k; i++) s += x[r * k + i]! * wAt(c * k + i) * scale(c, i);
    y[r * n + c] = s;
  }
  return y;
}

// Shapes with partial 128-blocks in both N and K and more rows than one workgroup covers.
const M = 5, N = 130, K = 300;

test('matmul with f32, bf16 and fp8 (128x128 scaleInv) weights matches float64', async () => {
  const r = rng(1);
  const x = randn(M * K, r);
  const wf = randn(N * K, r, 0.05);
  const f32: WeightMatrix = { dtype: 'f32', rows: N, cols: K, data: wf };
  const bf: WeightMatrix = { dtype: 'bf16', rows: N, cols: K, data: encodeBf16(wf) };
  const scaleInv = new Float32Array(Math.ceil(N / 128) * Math.ceil(K / 128)).map(() => 0.5 + r());
  const fp: WeightMatrix = { dtype: 'fp8', rows: N, cols: K, data: encodeFp8e4m3(wf.map((v) => v * 40)), scaleInv };
  const cases: [WeightMatrix, (i: number) => number, (n: number, k: number) => number][] = [
    [f32, (i) => wf[i]!, () => 1],
    [bf, (i) => bf16ToF32(bf.data[i]!), () => 1],
    [fp, (i) => fp8e4m3ToF32(fp.data[i]!), (n, k) => scaleInv[Math.floor(n / 128) * Math.ceil(K / 128) + Math.floor(k / 128)]!],
  ];
  for (const [w, at, sc] of cases) {
    const want = refMatmul(x, M, N, K, at, sc);
    const got = await gpu.matmul(x, M, w);
    const ratio = worstRatio(got, want, 1e-4, 1e-4);
    assert.ok(ratio <= 1, `${w.dtype}: worst allclose ratio ${ratio}`);
  }
});

test('matmul in row blocks (4 rows per invocation from 4 rows on) equals row by row, bit for bit', async () => {
  // 7 rows (a partial last block), K = 130 (not a multiple of 4: the scalar loop; a partial 128 block).
  const r = rng(11);
  const m = 7, n = 70, k = 130;
  const x = randn(m * k, r);
  const wf = randn(n * k, r, 0.05);
  const ws: WeightMatrix[] = [
    { dtype: 'f32', rows: n, cols: k, data: wf },
    { dtype: 'bf16', rows: n, cols: k, data: encodeBf16(wf) },
    { dtype: 'fp8', rows: n, cols: k, data: encodeFp8e4m3(wf.map((v) => v * 40)), scaleInv: Float32Array.of(0.5, 0.75) },
  ];
  for (const kk of [k, 128]) {
    for (const w0 of ws) {
      const w = kk === k ? w0 : { ...w0, cols: kk, data: w0.data.slice(0, n * kk), ...(w0.dtype === 'fp8' ? { scaleInv: Float32Array.of(0.5) } : {}) } as WeightMatrix;
      const xs = kk === k ? x : Float32Array.from({ length: m * kk }, (_, i) => x[i]!);
      const all = await gpu.matmul(xs, m, w);
      for (let i = 0; i < m; i++) {
        const one = await gpu.matmul(xs.subarray(i * kk, (i + 1) * kk), 1, w);
        assert.deepEqual(all.subarray(i * n, (i + 1) * n), one, `${w.dtype} k=${kk}: row ${i}`);
      }
    }
  }
});

test('matmul on the split-K path (GPU adapters, small M) matches float64 for all weight formats', async () => {
  const old = setGemmStrategy('split');
  try {
    const r = rng(21);
    const x = randn(2 * K, r);
    const wf = randn(N * K, r, 0.05);
    const scaleInv = new Float32Array(Math.ceil(N / 128) * Math.ceil(K / 128)).map(() => 0.5 + r());
    const fp: WeightMatrix = { dtype: 'fp8', rows: N, cols: K, data: encodeFp8e4m3(wf.map((v) => v * 40)), scaleInv };
    const bf: WeightMatrix = { dtype: 'bf16', rows: N, cols: K, data: encodeBf16(wf) };
    const want = (at: (i: number) => number, sc: (n: number, k: number) => number) => refMatmul(x, 2, N, K, at, sc);
    assert.ok(worstRatio(await gpu.matmul(x, 2, { dtype: 'f32', rows: N, cols: K, data: wf }), want((i) => wf[i]!, () => 1), 1e-4, 1e-4) <= 1);
    assert.ok(worstRatio(await gpu.matmul(x, 2, bf), want((i) => bf16ToF32(bf.data[i]!), () => 1), 1e-4, 1e-4) <= 1);
    assert.ok(worstRatio(await gpu.matmul(x, 2, fp), want((i) => fp8e4m3ToF32(fp.data[i]!),
      (n, k) => scaleInv[Math.floor(n / 128) * Math.ceil(K / 128) + Math.floor(k / 128)]!), 1e-4, 1e-4) <= 1);
  } finally {
    setGemmStrategy(old);
  }
});

test('matmul compiles its pipeline once: a second call creates none and writes into out', async () => {
  const r = rng(2);
  const w: WeightMatrix = { dtype: 'f32', rows: 3, cols: 4, data: randn(12, r) };
  const x = randn(8, r);
  await gpu.matmul(x, 2, w);
  const before = pipelinesCreated();
  const out = new Float32Array(6);
  const got = await gpu.matmul(x, 2, w, out);
  assert.equal(pipelinesCreated(), before);
  assert.equal(got, out);
  const want = refMatmul(x, 2, 3, 4, (i) => w.data[i]!, () => 1);
  assert.ok(worstRatio(out, want, 1e-5, 1e-6) <= 1);
});

test('fp8 decoding in WGSL matches the e4m3fn table for all 256 codes (NaN included)', async () => {
  // Weight row of all codes times an identity-like x picks each decoded value out.
  const codes = new Uint8Array(256).map((_, i) => i);
  const w: WeightMatrix = { dtype: 'fp8', rows: 256, cols: 1, data: codes, scaleInv: new Float32Array([1, 1]) };
  const got = await gpu.matmul(new Float32Array([1]), 1, w);
  for (let c = 0; c < 256; c++) {
    const want = fp8e4m3ToF32(c);
    if (Number.isNaN(want)) assert.ok(Number.isNaN(got[c]!), `code ${c}`);
    else assert.ok(got[c] === want, `code ${c}: ${got[c]} vs ${want}`); // -0 sums to +0
  }
});

test('rmsNorm matches float64', async () => {
  const r = rng(3);
  const rows = 7, cols = 300;
  const x = randn(rows * cols, r), wt = randn(cols, r);
  const got = await gpu.rmsNorm(x, rows, wt, 1e-6);
  const want = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += x[i * cols + c]! ** 2;
    const inv = 1 / Math.sqrt(ss / cols + 1e-6);
    for (let c = 0; c < cols; c++) want[i * cols + c] = x[i * cols + c]! * inv * wt[c]!;
  }
  assert.ok(worstRatio(got, want, 1e-5, 1e-6) <= 1);
});

test('rope rotates interleaved pairs in place inside strided rows', async () => {
  const r = rng(4);
  const rows = 6, stride = 40, offset = 8, dim = 16, half = 8;
  const x = randn(rows * stride, r);
  const cos = new Float32Array(rows * half), sin = new Float32Array(rows * half);
  for (let i = 0; i < rows * half; i++) { const a = r() * 6.28; cos[i] = Math.cos(a); sin[i] = Math.sin(a); }
  const want = Float64Array.from(x);
  for (let i = 0; i < rows; i++) for (let j = 0; j < half; j++) {
    const o = i * stride + offset + 2 * j, c = cos[i * half + j]!, s = sin[i * half + j]!;
    want[o] = x[o]! * c - x[o + 1]! * s;
    want[o + 1] = x[o]! * s + x[o + 1]! * c;
  }
  await gpu.rope(x, rows, stride, offset, dim, cos, sin);
  assert.ok(worstRatio(x, want, 1e-5, 1e-6) <= 1);
});

test('softmax is row-wise, max-subtracted (large logits stay finite)', async () => {
  const r = rng(5);
  const rows = 3, cols = 200;
  const x = randn(rows * cols, r, 5);
  x[0] = 1000; // overflow without the max subtraction
  const want = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    let mx = -Infinity, s = 0;
    for (let c = 0; c < cols; c++) mx = Math.max(mx, x[i * cols + c]!);
    for (let c = 0; c < cols; c++) s += Math.exp(x[i * cols + c]! - mx);
    for (let c = 0; c < cols; c++) want[i * cols + c] = Math.exp(x[i * cols + c]! - mx) / s;
  }
  await gpu.softmax(x, rows, cols);
  assert.ok(worstRatio(x, want, 1e-5, 1e-7) <= 1);
});

test('siluMul matches float64 and fills a given out', async () => {
  const r = rng(6);
  const n = 1000;
  const g = randn(n, r, 4), u = randn(n, r);
  g[0] = -200; g[1] = 200;
  const out = new Float32Array(n);
  assert.equal(await gpu.siluMul(g, u, out), out);
  const want = Array.from(g, (v, i) => (v / (1 + Math.exp(-v))) * u[i]!);
  assert.ok(worstRatio(out, want, 1e-5, 1e-7) <= 1);
});

test('topk: descending values, ties to the lower index, NaN last', async () => {
  const rows = 3, cols = 300, k = 8;
  const r = rng(7);
  const x = randn(rows * cols, r);
  x[5] = 9; x[77] = 9; x[200] = 9; // ties in row 0
  x[cols + 3] = NaN;
  for (let c = 0; c < cols; c++) x[2 * cols + c] = c % 2 === 0 ? NaN : -c; // row 2: half NaN
  const got = await gpu.topk(x, rows, cols, k);
  for (let i = 0; i < rows; i++) {
    const idx = Array.from({ length: cols }, (_, c) => c);
    const key = (c: number) => (Number.isNaN(x[i * cols + c]!) ? -Infinity : x[i * cols + c]!);
    idx.sort((a, b) => {
      const na = Number.isNaN(x[i * cols + a]!), nb = Number.isNaN(x[i * cols + b]!);
      if (na !== nb) return na ? 1 : -1;
      return key(b) - key(a) || a - b;
    });
    assert.deepEqual([...got.indices.subarray(i * k, (i + 1) * k)], idx.slice(0, k), `row ${i}`);
    assert.deepEqual([...got.values.subarray(i * k, (i + 1) * k)], idx.slice(0, k).map((c) => x[i * cols + c]!));
  }
  assert.deepEqual([...got.indices.subarray(0, 3)], [5, 77, 200]);
});

test('bad shapes are KernelShapeError (as on every backend)', async () => {
  const w: WeightMatrix = { dtype: 'f32', rows: 2, cols: 3, data: new Float32Array(6) };
  await assert.rejects(gpu.matmul(new Float32Array(5), 2, w), KernelShapeError);
  await assert.rejects(gpu.matmul(new Float32Array(6), 2, w, new Float32Array(3)), KernelShapeError);
  await assert.rejects(gpu.topk(new Float32Array(4), 1, 4, 5), KernelShapeError);
  await assert.rejects(gpu.siluMul(new Float32Array(4), new Float32Array(3)), KernelShapeError);
  await assert.rejects(gpu.rope(new Float32Array(4), 1, 4, 0, 3, new Float32Array(2), new Float32Array(2)), KernelShapeError);
});

test('after closeDevice the next op opens a fresh device and recompiles', async () => {
  const before = devicesOpened();
  const created = pipelinesCreated();
  await closeDevice();
  const y = await gpu.siluMul(new Float32Array([1, 2]), new Float32Array([1, 1]));
  assert.equal(devicesOpened(), before + 1);
  assert.equal(pipelinesCreated(), created + 1);
  assert.ok(Math.abs(y[0]! - 1 / (1 + Math.exp(-1))) < 1e-6);
});

// The generic op suite every backend runs (src/kernels/ops.test-suite.ts), on the async WebGPU ops.
runOpSuite('webgpu', { load: loadWebGpuBackend });

test('a lost device surfaces as WebGpuDeviceLostError and the next call opens a new device', async () => {
  const ctx = await getDevice();
  const opened = devicesOpened();
  ctx.device.destroy();
  await ctx.device.lost;
  await assert.rejects(runPasses(ctx, 'after-loss', [], []), WebGpuDeviceLostError);
  const y = await gpu.siluMul(new Float32Array([0]), new Float32Array([1]));
  assert.equal(y[0], 0);
  assert.equal(devicesOpened(), opened + 1);
});

test('an error outside any scope (uncapturederror) makes the next op fail with WebGpuValidationError', async () => {
  const ctx = await getDevice();
  // MAP_READ may only be combined with COPY_DST: invalid, and no error scope is open.
  ctx.device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
  await ctx.device.queue.onSubmittedWorkDone();
  await new Promise((r) => setTimeout(r, 20));
  await assert.rejects(gpu.siluMul(new Float32Array([1]), new Float32Array([1])),
    (e: unknown) => e instanceof WebGpuValidationError && e.kind === 'uncaptured');
  // Reported once: the device itself is fine afterwards.
  assert.equal((await gpu.siluMul(new Float32Array([0]), new Float32Array([1])))[0], 0);
});
