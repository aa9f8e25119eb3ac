// WebGPU kernels: forward matmul (fp8 weights), DeepGEMM fp8 GEMMs and FlashMLA decode, timed per call
// (upload of activations + dispatch + readback; weights stay resident). Medians of several runs.
// Default shapes are scaled for llvmpipe (CPU); `--full` uses DeepSeek-V3 sizes (for a real GPU,
// scripts/device-webgpu.sh). Speed is reported, never asserted.
import { quantizeGrouped, quantizePerBlock, quantizePerToken } from '../src/kernels/deepgemm/quant.ts';
import { closeDevice, getDevice } from '../src/kernels/webgpu/device.ts';
import { fp8GemmNt, webgpuDeepGemm } from '../src/kernels/webgpu/deepgemm.ts';
import { matmul } from '../src/kernels/webgpu/ops.ts';
import { createWebGpuFlashMla, flashMlaWithKvcacheWebGpu } from '../src/kernels/webgpu/flashmla.ts';
import { getMlaMetadata } from '../src/kernels/flashmla/metadata.ts';
import { buildCase } from '../src/kernels/flashmla/testing.ts';
import { median, timeRunsAsync, type BenchReport, type BenchRow } from './lib/report.ts';

function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 4294967296 - 0.5) * 2;
  }
  return out;
}

export default async function webgpuBench(args: string[]): Promise<BenchReport> {
  const full = args.includes('--full');
  const d = full ? 1 : 8; // N and K divisor on llvmpipe
  const reps = full ? 10 : 3;
  const ctx = await getDevice();
  const rows: BenchRow[] = [];
  const time = async (fn: () => Promise<unknown>) => median(await timeRunsAsync(async () => { await fn(); }, reps, 1));

  // Forward-op matmul with fp8 weights at decode (M = 1): weight bytes per second.
  for (const [n, k] of [[7168, 2048], [2112, 7168]] as const) {
    const N = n / d, K = k / d;
    const b = quantizePerBlock(rand(N * K, 1), N, K);
    const w = { dtype: 'fp8' as const, rows: N, cols: K, data: b.data, scaleInv: b.scales };
    const x = rand(K, 2);
    const s = await time(() => matmul(x, 1, w));
    rows.push({ case: `matmul fp8 M=1 ${N}x${K}`, threads: 1, metric: 'weights', value: (N * K) / s / 1e9, unit: 'GB/s', ratio: null });
  }
  // DeepGEMM normal GEMM, fp8 x fp8.
  for (const m of [1, 128]) {
    const [N, K] = [4096 / d, 7168 / d];
    const a = quantizePerToken(rand(m * K, 3), m, K);
    const b = quantizePerBlock(rand(N * K, 4), N, K);
    const s = await time(() => fp8GemmNt(a, b));
    rows.push({ case: `fp8GemmNt M=${m} ${N}x${K}`, threads: 1, metric: 'compute', value: (2 * m * N * K) / s / 1e9, unit: 'GFLOP/s', ratio: null });
  }
  // DeepGEMM masked grouped GEMM (decode MoE): 8 experts, up to 32 tokens each.
  {
    // Full size: 4 experts of 4096x7168 fp8 = 117 MB, under a 128 MiB storage binding.
    const [G, N, K, mMax] = [full ? 4 : 8, 4096 / d, 7168 / d, 32];
    const b = quantizeGrouped(rand(G * N * K, 5), G, N, K);
    const a = quantizePerToken(rand(G * mMax * K, 6), G * mMax, K);
    const maskedM = Int32Array.from({ length: G }, (_, g) => 4 + ((g * 7) % 29));
    const used = maskedM.reduce((x, y) => x + y, 0);
    const s = await time(() => webgpuDeepGemm.mGroupedFp8GemmNtMasked(a, b, maskedM, mMax));
    rows.push({ case: `masked G=${G} ${N}x${K} m=${used}`, threads: 1, metric: 'compute', value: (2 * used * N * K) / s / 1e9, unit: 'GFLOP/s', ratio: null });
  }
  // FlashMLA decode: V3 absorbed MLA (dQK 576, dV 512, hKv 1, hQ 128 in full / 16 scaled), bf16 cache.
  {
    const [b, sK, hQ] = full ? [16, 4096, 128] : [2, 512, 16]; // full: 75 MB of cache, under a 128 MiB binding
    const built = buildCase({ b, sQ: 1, sK, hQ, hKv: 1, varlen: false, causal: false }, { seed: 1, dtype: 'bf16', numParts: 1 });
    const kernel = createWebGpuFlashMla();
    const meta = getMlaMetadata(built.args.cacheSeqlens, hQ, 1, kernel.numParts(b, 1, hQ, 1));
    const args = { ...built.args, meta };
    const s = await time(() => flashMlaWithKvcacheWebGpu(args));
    rows.push({ case: `flashmla b=${b} sK=${sK} hQ=${hQ} bf16`, threads: 1, metric: 'compute', value: (2 * b * hQ * sK * (576 + 512)) / s / 1e9, unit: 'GFLOP/s', ratio: null });
    rows.push({ case: `flashmla b=${b} sK=${sK} hQ=${hQ} bf16`, threads: 1, metric: 'kv read', value: (b * sK * 576 * 2) / s / 1e9, unit: 'GB/s', ratio: null });
  }
  await closeDevice();
  return {
    bench: 'webgpu',
    baseline: { device: `${ctx.platform} ${ctx.adapterDescription}`, shapes: full ? 'DeepSeek-V3' : `V3 N,K / ${d}` },
    rows,
    notes: ['per-call time includes activation upload and readback; weights resident; FlashMLA uploads q and the whole K cache per call'],
  };
}
