// One op test suite for every backend: each op is compared against a float64 computation written
// here (not the ref backend), with the tolerance stated next to each check. Calls are awaited so a
// backend whose ops return promises can reuse the suite unchanged.
// Usage (in a backend's test file):  runOpSuite('wasm', { threads: 2 });
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { encodeBf16, f32ToFp8e4m3, FP8_E4M3_TABLE, bf16ToF32 } from '../tensor/dtypes.ts';
import {
  FP8_BLOCK, groupSlice, loadBackend, type KernelOps, type WeightMatrix, type WeightDType, type OpName,
} from './api.ts';
import './index.ts';
import { mulberry32 } from '../tensor/random.ts';
import { KernelShapeError } from './ref/ops.ts';

/** What the suite needs of a backend: the ops, each returning its result or a promise of it (webgpu). */
export type SuiteKernels = {
  [K in keyof KernelOps]: (...args: Parameters<KernelOps[K]>) => ReturnType<KernelOps[K]> | Promise<ReturnType<KernelOps[K]>>;
} & { readonly native: ReadonlySet<OpName>; dispose(): Promise<void> };

export interface OpSuiteOptions {
  threads?: number;
  /** Loads the backend instead of the registry's loadBackend (async backends such as webgpu). */
  load?: () => Promise<SuiteKernels>;
  /** Only run the ops the backend implements itself (default true: fallbacks are tested on `ref`). */
  nativeOnly?: boolean;
}

/** Deterministic PRNG (mulberry32) so failures reproduce. */
export const rng = mulberry32;

function randn(r: () => number, n: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12);
    out[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
  }
  return out;
}

/** A weight in `dtype` filled from random values, plus its exact dequantised f64 values. */
async function makeWeight(k: SuiteKernels, dtype: WeightDType, rows: number, cols: number, r: () => number): Promise<{ w: WeightMatrix; dense: Float64Array }> {
  const w = await k.allocWeight(dtype, rows, cols);
  return { w, dense: fillWeight(w, r) };
}

/** Fills an allocated weight with random values in its format; returns the exact dequantised f64 values. */
function fillWeight(w: WeightMatrix, r: () => number): Float64Array {
  const { rows, cols } = w;
  const vals = randn(r, rows * cols, 1 / Math.sqrt(cols));
  const dense = new Float64Array(rows * cols);
  if (w.dtype === 'f32') {
    w.data.set(vals);
    for (let i = 0; i < vals.length; i++) dense[i] = vals[i]!;
  } else if (w.dtype === 'bf16') {
    const b = encodeBf16(vals);
    w.data.set(b);
    for (let i = 0; i < b.length; i++) dense[i] = bf16ToF32(b[i]!);
  } else {
    const sc = Math.ceil(cols / FP8_BLOCK);
    const sr = Math.ceil(rows / FP8_BLOCK);
    for (let bi = 0; bi < sr; bi++) {
      for (let bj = 0; bj < sc; bj++) {
        // Different magnitudes per block so a wrong scale index is caught.
        const s = Math.fround((0.5 + r()) / 448 * (1 + ((bi * 3 + bj) % 4)));
        w.scaleInv[bi * sc + bj] = s;
        for (let i = bi * FP8_BLOCK; i < Math.min(rows, (bi + 1) * FP8_BLOCK); i++) {
          for (let j = bj * FP8_BLOCK; j < Math.min(cols, (bj + 1) * FP8_BLOCK); j++) {
            const q = f32ToFp8e4m3(vals[i * cols + j]! * 300 * (1 + ((bi + bj) % 2)));
            w.data[i * cols + j] = q;
            dense[i * cols + j] = Math.fround(FP8_E4M3_TABLE[q]! * s);
          }
        }
      }
    }
  }
  return dense;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function assertClose(name: string, got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol = 0): void {
  assert.equal(got.length, want.length, `${name}: length`);
  let worst = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!, w = want[i]!;
    const err = Math.abs(g - w) - (atol + rtol * Math.abs(w));
    if (!(err <= 0) && (Number.isNaN(err) || err > worst)) { worst = Number.isNaN(err) ? Infinity : err; at = i; }
  }
  assert.ok(at < 0, `${name}: element ${at} is ${got[at]} but expected ${want[at]} (atol ${atol}, rtol ${rtol})`);
}

export function runOpSuite(backendName: string, opts: OpSuiteOptions = {}): void {
  describe(`kernel ops on backend "${backendName}"`, () => {
    let k: SuiteKernels;
    const nativeOnly = opts.nativeOnly ?? true;
    before(async () => {
      k = opts.load ? await opts.load() : await loadBackend(backendName, { threads: opts.threads ?? 1 });
    });
    after(async () => {
      await k?.dispose();
    });
    const skip = (op: OpName) => nativeOnly && backendName !== 'ref' && k && !k.native.has(op);
    // Ops every backend must implement itself (no silent fallback to ref): MoE runs its experts as
    // grouped products, so a backend without a native groupedMatmul fails here instead of skipping.
    const requireNative = (op: OpName): void => {
      if (backendName !== 'ref') assert.ok(k.native.has(op), `${backendName} implements ${op} natively`);
    };

    // Shapes: partial FP8 blocks on both axes (200 = 128 + 72, 300 = 2*128 + 44), M = 1 (decode) and
    // M > 1 (prefill), and a K that is not a multiple of 4 or 8 (SIMD tails).
    const shapes: [number, number, number][] = [[1, 200, 300], [7, 300, 200], [3, 130, 37], [16, 64, 256]];
    for (const dtype of ['f32', 'bf16', 'fp8'] as const) {
      it(`matmul ${dtype}: y = x·Wᵀ matches float64 within 1e-6·Σ|x||w| + 1e-6`, async (t) => {
        if (skip('matmul')) return t.skip('not native');
        const r = rng(1000 + dtype.length);
        for (const [m, n, kk] of shapes) {
          const { w, dense } = await makeWeight(k, dtype, n, kk, r);
          const x = randn(r, m * kk);
          const got = await k.matmul(x, m, w);
          assert.equal(got.length, m * n);
          for (let i = 0; i < m; i++) {
            for (let j = 0; j < n; j++) {
              let s = 0, mag = 0;
              for (let q = 0; q < kk; q++) { s += x[i * kk + q]! * dense[j * kk + q]!; mag += Math.abs(x[i * kk + q]! * dense[j * kk + q]!); }
              const g = got[i * n + j]!;
              // f32 accumulation of K terms: error bound ~ K·2^-24·Σ|x w|; 1e-6·Σ is generous for K ≤ 300
              // yet catches any dequantisation error (FP8 steps are 6% of a value).
              assert.ok(Math.abs(g - s) <= 1e-6 * mag + 1e-6, `${dtype} [${m},${n},${kk}] y[${i},${j}] = ${g}, expected ${s}`);
            }
          }
          // `out` is honoured.
          const out = new Float32Array(m * n);
          const got2 = await k.matmul(x, m, w, out);
          assert.equal(got2, out);
          assertClose('matmul out', out, got, 0);
        }
      });
    }

    // Grouped products: G = 5 groups of [136, 200] (partial FP8 blocks on both axes), two layouts:
    // contiguous segments (one empty group, one 1-row group: the GEMV path, others the GEMM path) and
    // masked [G, mMax] segments whose padding rows must come back as 0.
    for (const dtype of ['f32', 'bf16', 'fp8'] as const) {
      it(`groupedMatmul ${dtype}: each segment's rows = x·W_gᵀ within 1e-6·Σ|x||w| + 1e-6, other rows 0`, async () => {
        requireNative('groupedMatmul');
        const r = rng(2000 + dtype.length);
        const G = 5, n = 136, kk = 200;
        const w = await k.allocGroupedWeight(dtype, G, n, kk);
        assert.ok(w.groups === G && w.rows === n && w.cols === kk && w.data.length === G * n * kk);
        const dense = Array.from({ length: G }, (_, g) => fillWeight(groupSlice(w, g), r));
        const counts = Int32Array.from([3, 0, 1, 5, 2]);
        const contiguous = { start: new Int32Array(G), count: counts };
        for (let g = 1; g < G; g++) contiguous.start[g] = contiguous.start[g - 1]! + counts[g - 1]!;
        const mMax = 4;
        const masked = { start: Int32Array.from({ length: G }, (_, g) => g * mMax), count: Int32Array.from([2, 0, 4, 1, 3]) };
        // `out` in host memory, and in backend memory (where the wasm backend writes in place).
        for (const [layout, seg, m, where] of [['contiguous', contiguous, 11, 'host'], ['masked', masked, G * mMax, 'host'],
          ['contiguous', contiguous, 11, 'backend'], ['masked', masked, G * mMax, 'backend']] as const) {
          const x = randn(r, m * kk);
          const out = where === 'host' ? new Float32Array(m * n) : (await k.allocWeight('f32', m, n)).data as Float32Array;
          out.fill(Number.NaN);
          const got = await k.groupedMatmul(x, m, w, seg, out);
          assert.equal(got, out, `out (${where}) is honoured`);
          const groupOf = new Int32Array(m).fill(-1);
          for (let g = 0; g < G; g++) groupOf.fill(g, seg.start[g]!, seg.start[g]! + seg.count[g]!);
          for (let i = 0; i < m; i++) {
            const g = groupOf[i]!;
            for (let j = 0; j < n; j++) {
              const v: number = got[i * n + j]!;
              if (g < 0) { assert.equal(v, 0, `${layout}: row ${i} is in no segment`); continue; }
              let s = 0, mag = 0;
              for (let q = 0; q < kk; q++) { const p = x[i * kk + q]! * dense[g]![j * kk + q]!; s += p; mag += Math.abs(p); }
              assert.ok(Math.abs(v - s) <= 1e-6 * mag + 1e-6, `${dtype} ${layout} y[${i},${j}] (group ${g}) = ${v}, expected ${s}`);
            }
          }
        }
      });
    }

    it('groupedMatmul rejects overlapping or out-of-range segments and bad lengths', async () => {
      requireNative('groupedMatmul');
      const w = await k.allocGroupedWeight('f32', 2, 8, 4);
      const x = new Float32Array(5 * 4);
      const seg = (start: number[], count: number[]) => ({ start: Int32Array.from(start), count: Int32Array.from(count) });
      await assert.rejects(async () => k.groupedMatmul(x, 5, w, seg([0, 2], [3, 2])), /overlap/);
      await assert.rejects(async () => k.groupedMatmul(x, 5, w, seg([0, 4], [2, 2])), /outside/);
      await assert.rejects(async () => k.groupedMatmul(x, 5, w, seg([0], [2])), /segments\.start/);
      await assert.rejects(async () => k.groupedMatmul(new Float32Array(7), 5, w, seg([0, 2], [2, 2])), /x has length/);
    });

    it('matmul rejects mismatched shapes', async (t) => {
      if (skip('matmul')) return t.skip('not native');
      const w = await k.allocWeight('f32', 4, 8);
      await assert.rejects(async () => k.matmul(new Float32Array(9), 1, w));
    });

    it('allocWeight gives zeroed storage of the right size (fp8 with ceil-div scale grid)', async (t) => {
      if (skip('allocWeight')) return t.skip('not native');
      const w = await k.allocWeight('fp8', 200, 300);
      assert.equal(w.data.length, 60000);
      assert.ok(w.dtype === 'fp8' && w.scaleInv.length === 2 * 3);
      const b = await k.allocWeight('bf16', 3, 5);
      assert.ok(b.data instanceof Uint16Array && b.data.length === 15);
      const f = await k.allocWeight('f32', 3, 5);
      assert.ok(f.data instanceof Float32Array && maxAbs(f.data) === 0);
    });

    it('rmsNorm matches float64 within 2e-6 relative', async (t) => {
      if (skip('rmsNorm')) return t.skip('not native');
      const r = rng(7);
      for (const [rows, d] of [[1, 256], [5, 96], [3, 7]] as const) {
        const x = randn(r, rows * d, 3);
        const wt = randn(r, d);
        const want = new Float64Array(rows * d);
        for (let i = 0; i < rows; i++) {
          let ss = 0;
          for (let j = 0; j < d; j++) ss += x[i * d + j]! ** 2;
          const inv = 1 / Math.sqrt(ss / d + 1e-6);
          for (let j = 0; j < d; j++) want[i * d + j] = x[i * d + j]! * inv * wt[j]!;
        }
        assertClose('rmsNorm', await k.rmsNorm(x, rows, wt, 1e-6), want, 1e-6, 2e-6);
        const out = new Float32Array(rows * d);
        assert.equal(await k.rmsNorm(x, rows, wt, 1e-6, out), out);
      }
    });

    it('rope rotates interleaved pairs with stride/offset, leaving other values alone (1e-6)', async (t) => {
      if (skip('rope')) return t.skip('not native');
      const r = rng(9);
      const rows = 6, stride = 40, offset = 8, dim = 32, half = 16;
      const x = randn(r, rows * stride);
      const orig = Float64Array.from(x);
      const cos = new Float32Array(rows * half), sin = new Float32Array(rows * half);
      for (let i = 0; i < rows * half; i++) { const a = r() * 20; cos[i] = Math.cos(a); sin[i] = Math.sin(a); }
      await k.rope(x, rows, stride, offset, dim, cos, sin);
      const want = Float64Array.from(orig);
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < half; j++) {
          const p = i * stride + offset + 2 * j;
          const c = cos[i * half + j]!, s = sin[i * half + j]!;
          want[p] = orig[p]! * c - orig[p + 1]! * s;
          want[p + 1] = orig[p]! * s + orig[p + 1]! * c;
        }
      }
      assertClose('rope', x, want, 1e-6, 1e-6);
    });

    it('softmax matches float64 (1e-7 abs), rows sum to 1, stable for large inputs', async (t) => {
      if (skip('softmax')) return t.skip('not native');
      const r = rng(11);
      const rows = 4, cols = 77;
      const x = randn(r, rows * cols, 5);
      x[3] = 1000; // would overflow exp without max subtraction
      const want = new Float64Array(rows * cols);
      for (let i = 0; i < rows; i++) {
        let mx = -Infinity;
        for (let j = 0; j < cols; j++) mx = Math.max(mx, x[i * cols + j]!);
        let s = 0;
        for (let j = 0; j < cols; j++) s += Math.exp(x[i * cols + j]! - mx);
        for (let j = 0; j < cols; j++) want[i * cols + j] = Math.exp(x[i * cols + j]! - mx) / s;
      }
      await k.softmax(x, rows, cols);
      assertClose('softmax', x, want, 1e-7, 1e-6);
    });

    it('siluMul matches float64 within 1e-6 relative', async (t) => {
      if (skip('siluMul')) return t.skip('not native');
      const r = rng(13);
      const n = 1003;
      const g = randn(r, n, 4), u = randn(r, n);
      const want = Float64Array.from(g, (v, i) => (v / (1 + Math.exp(-v))) * u[i]!);
      assertClose('siluMul', await k.siluMul(g, u), want, 1e-7, 1e-6);
      const out = new Float32Array(n);
      assert.equal(await k.siluMul(g, u, out), out);
    });

    it('topk returns the k largest in descending order, ties to the lower index', async (t) => {
      if (skip('topk')) return t.skip('not native');
      const r = rng(17);
      const rows = 9, cols = 64, kk = 6;
      const x = randn(r, rows * cols);
      // Ties: row 0 has equal values at 5, 9, 40 (and they are the largest).
      x[5] = x[9] = x[40] = 10;
      x[cols + 3] = x[cols + 2] = -0.5; // a tie further down the order
      const got = await k.topk(x, rows, cols, kk);
      for (let i = 0; i < rows; i++) {
        const order = Array.from({ length: cols }, (_, j) => j).sort((a, b) => x[i * cols + b]! - x[i * cols + a]! || a - b);
        assert.deepEqual(Array.from(got.indices.subarray(i * kk, (i + 1) * kk)), order.slice(0, kk), `row ${i}`);
        assert.deepEqual(Array.from(got.values.subarray(i * kk, (i + 1) * kk)), order.slice(0, kk).map((j) => x[i * cols + j]!));
      }
      assert.deepEqual(Array.from(got.indices.subarray(0, 3)), [5, 9, 40]);
      const all = await k.topk(new Float32Array([1, 3, 2]), 1, 3, 3);
      assert.deepEqual(Array.from(all.indices), [1, 2, 0]);
    });

    // Small shapes run on one thread; [600, 523] and [310, 1027] (over the wasm pool's 2^18 threshold,
    // columns not a multiple of 4) are split across threads.
    const rowShapes: [number, number, number][] = [[5, 13, 11], [40, 64, 123], [600, 523, 900], [310, 1027, 620]];

    it('gatherRows copies the indexed rows exactly (repeats allowed; into host or backend memory)', async () => {
      requireNative('gatherRows');
      const r = rng(19);
      for (const [rows, cols, n] of rowShapes) {
        const x = randn(r, rows * cols);
        const index = Int32Array.from({ length: n }, (_, i) => (i === 1 ? rows - 1 : Math.floor(r() * rows)));
        index[2] = index[0]!; // a repeated row
        const want = new Float32Array(n * cols);
        for (let i = 0; i < n; i++) for (let c = 0; c < cols; c++) want[i * cols + c] = x[index[i]! * cols + c]!;
        assert.deepEqual(await k.gatherRows(x, cols, index), want, `[${rows}, ${cols}] x ${n}`);
        const host = new Float32Array(n * cols);
        assert.equal(await k.gatherRows(x, cols, index, host), host);
        assert.deepEqual(host, want);
        const dev = (await k.allocWeight('f32', n, cols)).data as Float32Array;
        assert.equal(await k.gatherRows(x, cols, index, dev), dev);
        assert.deepEqual(dev, want);
      }
      assert.equal((await k.gatherRows(new Float32Array(6), 3, new Int32Array(0))).length, 0);
      await assert.rejects(async () => k.gatherRows(new Float32Array(6), 3, Int32Array.of(0, 2)), KernelShapeError);
      await assert.rejects(async () => k.gatherRows(new Float32Array(6), 3, Int32Array.of(-1)), KernelShapeError);
      await assert.rejects(async () => k.gatherRows(new Float32Array(7), 3, Int32Array.of(0)), KernelShapeError);
      await assert.rejects(async () => k.gatherRows(new Float32Array(6), 3, Int32Array.of(0), new Float32Array(4)), KernelShapeError);
    });

    it('scatterAddRows adds weighted rows in order, each step rounded from float64 (bit-exact; host or backend out)', async () => {
      requireNative('scatterAddRows');
      const r = rng(23);
      for (const [rows, cols, n] of rowShapes) {
        const y = randn(r, n * cols);
        const weight = randn(r, n);
        // Few destination rows, so most receive several rows whose order matters for the bits.
        const dst = Math.max(2, rows >> 3);
        const index = Int32Array.from({ length: n }, () => Math.floor(r() * dst));
        const init = randn(r, dst * cols);
        const want = Float32Array.from(init);
        const f32only = Float32Array.from(init);
        for (let i = 0; i < n; i++) {
          const o = index[i]! * cols, w = weight[i]!;
          for (let c = 0; c < cols; c++) {
            want[o + c] = want[o + c]! + w * y[i * cols + c]!; // float64 sum of an exact product, then f32
            f32only[o + c] = Math.fround(f32only[o + c]! + Math.fround(w * y[i * cols + c]!));
          }
        }
        // The check can tell the stated rounding from f32 arithmetic.
        assert.notDeepEqual(f32only, want);
        const host = Float32Array.from(init);
        assert.equal(await k.scatterAddRows(y, cols, index, weight, host), host);
        assert.deepEqual(host, want, `[${dst}, ${cols}] += ${n} rows`);
        const dev = (await k.allocWeight('f32', dst, cols)).data as Float32Array;
        dev.set(init);
        assert.equal(await k.scatterAddRows(y, cols, index, weight, dev), dev);
        assert.deepEqual(dev, want, `[${dst}, ${cols}] += ${n} rows, backend out`);
      }
      const out = new Float32Array(6);
      await assert.rejects(async () => k.scatterAddRows(new Float32Array(3), 3, Int32Array.of(2), new Float32Array(1), out), KernelShapeError);
      await assert.rejects(async () => k.scatterAddRows(new Float32Array(3), 3, Int32Array.of(0), new Float32Array(2), out), KernelShapeError);
      await assert.rejects(async () => k.scatterAddRows(new Float32Array(4), 3, Int32Array.of(0), new Float32Array(1), out), KernelShapeError);
      assert.deepEqual(out, new Float32Array(6), 'refused calls leave out untouched');
    });

    it('gatherRows and scatterAddRows write nothing outside out when index lives inside out', async () => {
      requireNative('scatterAddRows');
      requireNative('gatherRows');
      for (const op of ['scatter', 'gather'] as const) {
        // One backend buffer: out [2, 4], then 8 guard floats; index is a view of out's first 8 bytes.
        const buf = (await k.allocWeight('f32', 1, 16)).data as Float32Array;
        const out = buf.subarray(0, 8), guard = buf.subarray(8);
        guard.fill(-3);
        const index = new Int32Array(out.buffer, out.byteOffset, 2);
        index.set([0, 1]);
        if (op === 'scatter') await k.scatterAddRows(new Float32Array(8).fill(123), 4, index, Float32Array.of(1, 1), out);
        else await k.gatherRows(new Float32Array(8).fill(5), 4, index, out);
        assert.deepEqual(guard, new Float32Array(8).fill(-3), `${op}: the floats after out are untouched`);
      }
    });

    it('copyStrided moves [n0, n1, len] blocks between strided layouts exactly, leaving the rest of dst alone', async () => {
      requireNative('copyStrided');
      const r = rng(29);
      // [heads, positions, len] out of a [positions, heads, width] tensor and back (the decompressed MLA
      // layouts), a stride-0 broadcast, and grids over the wasm pool's threshold.
      const cases: { n: [number, number, number]; s: { offset: number; strides: [number, number] }; d: { offset: number; strides: [number, number] } }[] = [
        { n: [4, 9, 5], s: { offset: 3, strides: [8, 32] }, d: { offset: 2, strides: [9 * 7, 7] } },
        { n: [4, 9, 5], s: { offset: 0, strides: [9 * 5, 5] }, d: { offset: 1, strides: [6, 24] } },
        { n: [3, 11, 6], s: { offset: 0, strides: [0, 6] }, d: { offset: 0, strides: [11 * 6, 6] } },
        { n: [16, 300, 128], s: { offset: 128, strides: [256, 16 * 256] }, d: { offset: 0, strides: [320 * 300, 320] } },
        { n: [16, 257, 67], s: { offset: 5, strides: [67, 16 * 67] }, d: { offset: 64, strides: [257 * 140, 140] } },
      ];
      for (const [where, c] of cases.flatMap((c) => [['host', c], ['backend', c]] as const)) {
        const [n0, n1, len] = c.n;
        const sLen = c.s.offset + (n0 - 1) * c.s.strides[0] + (n1 - 1) * c.s.strides[1] + len + 3;
        const dLen = c.d.offset + (n0 - 1) * c.d.strides[0] + (n1 - 1) * c.d.strides[1] + len + 2;
        let src: Float32Array, dst: Float32Array;
        if (where === 'host') { src = randn(r, sLen); dst = new Float32Array(dLen); }
        else {
          // One backend buffer holding both (disjoint spans of the same memory).
          const both = (await k.allocWeight('f32', 1, sLen + dLen)).data as Float32Array;
          src = both.subarray(0, sLen); src.set(randn(r, sLen));
          dst = both.subarray(sLen);
        }
        dst.fill(-7);
        const want = Float32Array.from(dst);
        for (let i = 0; i < n0; i++) for (let j = 0; j < n1; j++) for (let q = 0; q < len; q++) {
          want[c.d.offset + i * c.d.strides[0] + j * c.d.strides[1] + q] = src[c.s.offset + i * c.s.strides[0] + j * c.s.strides[1] + q]!;
        }
        await k.copyStrided(src, c.s, dst, c.d, c.n);
        assert.deepEqual(dst, want, `${where} [${c.n.join(', ')}]`);
      }
      const src = new Float32Array(40), dst = new Float32Array(40).fill(1);
      const at = (offset: number, s0: number, s1: number) => ({ offset, strides: [s0, s1] as [number, number] });
      await assert.rejects(async () => k.copyStrided(src, at(0, 10, 2), dst, at(0, 10, 2), [4, 5, 3]), KernelShapeError); // src span 41 > 40
      await assert.rejects(async () => k.copyStrided(src, at(0, 10, 2), dst, at(-1, 10, 2), [2, 2, 2]), KernelShapeError);
      await assert.rejects(async () => k.copyStrided(src, at(0, 10, 2.5), dst, at(0, 10, 2), [2, 2, 2]), KernelShapeError);
      await assert.rejects(async () => k.copyStrided(src.subarray(0, 30), at(0, 10, 2), src.subarray(10), at(0, 5, 2), [2, 2, 2]), KernelShapeError); // overlap
      await assert.rejects(async () => k.copyStrided(src, at(0, 0, 3), dst, at(0, 0, 0), [1, 4, 3]), /dst rows overlap/); // order-dependent
      await assert.rejects(async () => k.copyStrided(src, at(0, 10, 3), dst, at(0, 9, 2), [2, 4, 3]), /dst rows overlap/); // 9 < 3·2 + 3
      assert.deepEqual(dst, new Float32Array(40).fill(1), 'refused calls leave dst untouched');
      await k.copyStrided(src, at(0, 1, 1), dst, at(0, 1, 1), [0, 5, 5]); // empty grid: nothing to do
    });
  });
}
