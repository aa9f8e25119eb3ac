// The 1D1D FP8 GEMM (both operands 1x128 along K: DeepGEMM's wgrad recipe, DeepSeek-V3's Wgrad):
// (a) ref against the float64 product of the dequantized operands, calc_diff < 1e-6 and per element
//     |got - want| <= 1e-5·Σ|a·b| (f32 partials over 128 K and f32 promotion; the bound is loose by design);
// (b) on activations whose channels differ in magnitude by up to 1e6, 1x128 tiles on B keep the product closer
//     to the unquantized f64 one than 128x128 blocks do (why Wgrad wants 1D1D);
// (c) wasm equals ref bit for bit in the order of the path it takes (GEMV 'lanes16' below 12 rows, packed
//     GEMM 'sequential' from 12), 1 and 2 threads; `out` fully overwritten; shape errors typed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { calcDiff, dequantize, quantizePerBlock, quantizePerToken } from './quant.ts';
import * as ref from './ref.ts';
import { DeepGemmShapeError } from './types.ts';
import { WasmDeepGemm } from './wasm.ts';
import { WasmRuntime } from '../wasm/runtime.ts';
import { randn } from './testutil.ts';

/** float64 a[m, k]·b[n, k]ᵀ and Σ|a·b| per element. */
function f64Nt(a: ArrayLike<number>, b: ArrayLike<number>, m: number, n: number, k: number): { y: Float64Array; mag: Float64Array } {
  const y = new Float64Array(m * n), mag = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0, t = 0;
      for (let c = 0; c < k; c++) { const p = a[i * k + c]! * b[j * k + c]!; s += p; t += Math.abs(p); }
      y[i * n + j] = s;
      mag[i * n + j] = t;
    }
  }
  return { y, mag };
}

test('ref fp8GemmNt1d1d equals the float64 product of the dequantized operands (calc_diff < 1e-6, per element 1e-5·Σ|ab|)', () => {
  for (const [m, n, k, seed] of [[3, 5, 100, 1], [40, 130, 300, 2], [129, 17, 512, 3], [7, 256, 1000, 4]] as const) {
    const a = quantizePerToken(randn(m * k, seed, 2), m, k), b = quantizePerToken(randn(n * k, seed + 50), n, k);
    const got = ref.fp8GemmNt1d1d(a, b);
    const { y, mag } = f64Nt(dequantize(a), dequantize(b), m, n, k);
    assert.ok(calcDiff(got, y) < 1e-6, `[${m}, ${n}, ${k}] calc_diff ${calcDiff(got, y)}`);
    for (let i = 0; i < y.length; i++) assert.ok(Math.abs(got[i]! - y[i]!) <= 1e-5 * mag[i]!, `[${m}, ${n}, ${k}] ${i}: ${got[i]} vs ${y[i]}`);
  }
});

test('Wgrad-shaped inputs with channel magnitudes 1e-6..1: on the small channels 1D1D is far closer to f64 than 1D2D (128x128 blocks on B)', () => {
  // dW = dyᵀ·x: A = dyᵀ [N, T], B = xᵀ [K, T]; B's rows are channels, scaled 1, 1e-2, 1e-4, 1e-6 in turn.
  const N = 32, K = 128, T = 256;
  const a = randn(N * T, 11), b = randn(K * T, 12);
  for (let r = 0; r < K; r++) for (let t = 0; t < T; t++) b[r * T + t] = b[r * T + t]! * 10 ** (-2 * (r % 4));
  const { y } = f64Nt(a, b, N, K, T);
  const qa = quantizePerToken(a, N, T);
  // Relative error of the 1e-6 channels' columns, where 128x128 blocks lose their bits.
  const relErr = (got: Float32Array) => {
    let e = 0, s = 0;
    for (let i = 0; i < N; i++) for (let j = 3; j < K; j += 4) { e += (got[i * K + j]! - y[i * K + j]!) ** 2; s += y[i * K + j]! ** 2; }
    return Math.sqrt(e / s);
  };
  const r1 = relErr(ref.fp8GemmNt1d1d(qa, quantizePerToken(b, K, T))), r2 = relErr(ref.fp8GemmNt(qa, quantizePerBlock(b, K, T)));
  // Both recipes agree on the large channels (DeepGEMM's calc_diff of the whole product is about the same,
  // ~7e-4, dominated by them); on the 1e-6 channels (below e4m3's subnormals at a 1.0 channel's scale) a 128x128 block's scale is set by the 1.0 channels.
  assert.ok(r1 < 0.1 && r2 > 5 * r1, `1e-6 channels: relative error 1D1D ${r1}, 1D2D ${r2}`);
  assert.ok(calcDiff(ref.fp8GemmNt1d1d(qa, quantizePerToken(b, K, T)), y) < 1e-3);
});

for (const threads of [1, 2]) {
  let dg: WasmDeepGemm;
  before(async () => { dg = new WasmDeepGemm(await WasmRuntime.create({ threads }), true); });
  after(async () => { await dg.dispose(); });

  test(`wasm fp8GemmNt1d1d equals ref bit for bit in its path's order (${threads} thread(s))`, () => {
    let seed = 300 + threads, differ = 0;
    for (const [m, n, k] of [[1, 3, 130], [1, 130, 207], [5, 136, 207], [9, 24, 16], [13, 40, 300], [64, 256, 512], [20, 129, 1000]] as const) {
      const a = quantizePerToken(randn(m * k, seed++, 2), m, k), b = quantizePerToken(randn(n * k, seed++), n, k);
      const out = new Float32Array(m * n).fill(7);
      const got = dg.fp8GemmNt1d1d(a, b, out);
      assert.equal(got, out);
      const want = ref.fp8GemmNt1d1d(a, b, undefined, { order: m < 12 ? 'lanes16' : 'sequential' });
      for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) assert.fail(`[${m}, ${n}, ${k}] ${i}: ${got[i]} vs ref ${want[i]}`);
      const other = ref.fp8GemmNt1d1d(a, b, undefined, { order: m < 12 ? 'sequential' : 'lanes16' });
      differ += other.filter((v, i) => v !== got[i]).length;
    }
    assert.ok(differ > 0, 'the two promotion orders are distinguishable on these inputs');
    // K = 0: zeros; empty sides; typed shape errors.
    const z = dg.fp8GemmNt1d1d(quantizePerToken(new Float32Array(0), 3, 0), quantizePerToken(new Float32Array(0), 2, 0), new Float32Array(6).fill(1));
    assert.deepEqual([...z], [0, 0, 0, 0, 0, 0]);
    assert.equal(dg.fp8GemmNt1d1d(quantizePerToken(new Float32Array(0), 0, 4), quantizePerToken(randn(8, 1), 2, 4)).length, 0);
    const a = quantizePerToken(randn(4 * 200, 1), 4, 200);
    assert.throws(() => dg.fp8GemmNt1d1d(a, quantizePerBlock(randn(3 * 200, 2), 3, 200)), DeepGemmShapeError);
    assert.throws(() => dg.fp8GemmNt1d1d(a, quantizePerToken(randn(3 * 100, 2), 3, 100)), DeepGemmShapeError);
    assert.throws(() => ref.fp8GemmNt1d1d(a, quantizePerToken(randn(3 * 200, 2), 3, 200), new Float32Array(5)), DeepGemmShapeError);
  });
}
