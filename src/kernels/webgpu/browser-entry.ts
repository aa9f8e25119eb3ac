// Browser smoke run of the WebGPU backend (bundled by browser.test.ts and loaded in headless Chromium):
// the same modules as in Node, but the device comes from navigator.gpu. POSTs one JSON object to /result:
// platform, adapter limits and the errors of a matmul, a DeepGEMM GEMM and a FlashMLA call against float64.
import { calcDiff, dequantize, quantizePerBlock, quantizePerToken } from '../deepgemm/quant.ts';
import { buildCase, checkIsAllclose, denseSdpaF64, TOL } from '../flashmla/testing.ts';
import { getDevice } from './device.ts';
import { fp8GemmNt } from './deepgemm.ts';
import { flashMlaWithKvcacheWebGpu } from './flashmla.ts';
import { matmul } from './ops.ts';

function randn(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0), s / 4294967296);
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next()));
}

async function run(): Promise<Record<string, unknown>> {
  const ctx = await getDevice();
  const [m, n, k] = [3, 130, 300];
  const x = randn(m * k, 1);
  const q = quantizePerBlock(randn(n * k, 2), n, k);
  const wd = dequantize(q);
  const y = await matmul(x, m, { dtype: 'fp8', rows: n, cols: k, data: q.data, scaleInv: q.scales });
  const want = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let c = 0; c < k; c++) s += x[i * k + c]! * wd[j * k + c]!;
    want[i * n + j] = s;
  }
  const a = quantizePerToken(randn(m * k, 3), m, k);
  const ad = dequantize(a);
  const g = await fp8GemmNt(a, q);
  const gWant = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let c = 0; c < k; c++) s += ad[i * k + c]! * wd[j * k + c]!;
    gWant[i * n + j] = s;
  }
  const c = { b: 2, sQ: 2, sK: 140, hQ: 4, hKv: 1, varlen: true, causal: true };
  const built = buildCase(c, { seed: 5, numParts: 3, dtype: 'bf16' });
  const args = built.args;
  const exp = denseSdpaF64(args.q, built.keys, args.cacheSeqlens, { b: c.b, sQ: c.sQ, hQ: c.hQ, hKv: c.hKv, dQK: 576, dV: 512 }, args.softmaxScale, c.causal);
  const mla = await flashMlaWithKvcacheWebGpu(args);
  const o = checkIsAllclose('out', mla.out, exp.out, TOL.out.abs, TOL.out.rel, TOL.out.cos);
  const l = checkIsAllclose('lse', mla.lse, exp.lse, TOL.lse.abs, TOL.lse.rel, TOL.lse.cos);
  return {
    platform: ctx.platform,
    featureLevel: ctx.featureLevel,
    limits: { storage: ctx.limits.maxComputeWorkgroupStorageSize, buffers: ctx.limits.maxStorageBuffersPerShaderStage },
    matmulCalcDiff: calcDiff(y, want),
    gemmCalcDiff: calcDiff(g, gWant),
    mlaOut: o.message, mlaOutOk: o.ok, mlaLse: l.message, mlaLseOk: l.ok,
  };
}

// The test's HTTP server receives the result.
const report = (r: unknown) => fetch('/result', { method: 'POST', body: JSON.stringify(r) });
run().then(report, (e: Error) => report({ error: `${e.name}: ${e.message}` }));
