// `npm run bench -- gemm [--json] [--threads 1,2] [--m 1,64,4096] [--n4096 512] [--shapes 0,1,...]`
// FP8 GEMMs on the wasm backend for DeepSeek-V3's N×K shapes (the DeepGEMM test shapes), next to the
// same process's memory-copy bandwidth and its own f32 GEMM (wasm matmul, f32 weights) on the same shape.
// Cases per shape, M and thread count:
//   fp8w  weight-only FP8 (f32 activations, FP8 weights with 128x128 scales): KernelOps.matmul, what
//         the model runs for FP8 checkpoints;
//   fp8   DeepGEMM fp8GemmNt (FP8 activations with 1x128 scales, FP8 weights);
//   f32   f32 weights (the baseline), bf16 for reference.
// Formulas (DeepGEMM's): FLOPs = 2·m·n·k; bytes = activations + weights + 4·m·n (f32 out) + scales, with
// activations m·k (fp8) or 4·m·k (f32) and weights n·k (fp8), 2·n·k (bf16), 4·n·k (f32).
// Ratios: at M = 1, GB/s over copy bandwidth and f32 time over FP8 time (goal ≥ 0.5 and ≥ 2);
// at M > 1, GFLOP/s over the f32 GEMM's (goal ≥ 0.8). M = 4096 cuts N to --n4096 columns (default
// 512) so a run stays within minutes on 2 cores; the row says so.
import { copyBandwidthGBs } from './lib/bandwidth.ts';
import { median, type BenchReport, type BenchRow } from './lib/report.ts';
import { WasmOps } from '../src/kernels/wasm/backend.ts';
import { WasmDeepGemm } from '../src/kernels/deepgemm/wasm.ts';
import { quantizePerToken } from '../src/kernels/deepgemm/quant.ts';
import { f32ToFp8e4m3, encodeBf16 } from '../src/tensor/dtypes.ts';
import type { WeightMatrix } from '../src/kernels/api.ts';

const SHAPES: Array<[number, number, string]> = [
  [2112, 7168, 'q_a+kv_a'], [24576, 1536, 'q_b'], [32768, 512, 'wkv_b'],
  [7168, 16384, 'wo'], [4096, 7168, 'expert gate+up'], [7168, 2048, 'expert down'],
];

function opt(args: string[], name: string, def: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : def;
}
const list = (s: string): number[] => s.split(',').map(Number).filter((x) => Number.isFinite(x));

/** Cheap Gaussian-like FP8 codes: a table of quantized normal samples (amax ≈ 4.5σ), indexed at random. */
const CODE_TABLE = (() => {
  const t = new Uint8Array(65536);
  let s = 12345;
  const u = () => { s = (Math.imul(s, 1103515245) + 12345) >>> 0; return (s + 0.5) / 4294967296; };
  for (let i = 0; i < t.length; i++) {
    const g = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
    t[i] = f32ToFp8e4m3((g / 4.5) * 448);
  }
  return t;
})();

function fillCodes(d: Uint8Array): void {
  let s = 2463534242;
  for (let i = 0; i < d.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    d[i] = CODE_TABLE[(s >>> 0) & 0xffff]!;
  }
}

function randomF32(len: number, seed: number): Float32Array {
  const x = new Float32Array(len);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; x[i] = ((s >>> 0) / 4294967296 - 0.5) * 2; }
  return x;
}

function timeIt(fn: () => void, reps: number, warmup: number): number {
  for (let i = 0; i < warmup; i++) fn();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    t.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return median(t);
}

function freeWeight(ops: WasmOps, w: WeightMatrix): void {
  ops.runtime.heap.free(w.data.byteOffset);
  if (w.dtype === 'fp8') ops.runtime.heap.free(w.scaleInv.byteOffset);
}

export default async function gemmBench(args: string[]): Promise<BenchReport> {
  const threadsList = list(opt(args, 'threads', '1,2'));
  const ms = list(opt(args, 'm', '1,64,4096'));
  const n4096 = Number(opt(args, 'n4096', '512'));
  const shapeIdx = list(opt(args, 'shapes', SHAPES.map((_, i) => i).join(',')));
  const rows: BenchRow[] = [];
  const baseline: Record<string, number | string> = {};
  const copy: Record<number, number> = {};
  for (const t of threadsList) {
    copy[t] = await copyBandwidthGBs(t);
    baseline[`copy GB/s (${t} thread${t > 1 ? 's' : ''})`] = copy[t]!;
  }
  const bestF32: Record<number, number> = {};
  for (const threads of threadsList) {
    const ops = await WasmOps.create(threads);
    const dg = new WasmDeepGemm(ops.runtime);
    try {
      for (const si of shapeIdx) {
        const [N, K, layer] = SHAPES[si]!;
        const kb = Math.ceil(K / 128);
        // Weights, allocated in wasm memory once per shape.
        const wf8 = ops.allocWeight('fp8', N, K);
        if (wf8.dtype !== 'fp8') throw new Error('allocWeight fp8');
        fillCodes(wf8.data);
        wf8.scaleInv.fill(1 / 448);
        const wf32 = ops.allocWeight('f32', N, K);
        if (wf32.dtype === 'f32') { const v = randomF32(N * K, 7); wf32.data.set(v); }
        const wbf = ops.allocWeight('bf16', N, K);
        if (wbf.dtype === 'bf16' && wf32.dtype === 'f32') wbf.data.set(encodeBf16(wf32.data));
        const b8 = { rows: N, cols: K, data: wf8.data, scales: wf8.scaleInv, scaleBlock: '128x128' as const };
        for (const m of ms) {
          // M = 4096: N is cut to the first n4096 weight rows (views; the kernels see an [n4096, K] matrix).
          const n = m >= 4096 ? Math.min(N, n4096) : N;
          const cut = <T extends WeightMatrix>(w: T): T => (n === N ? w : ({
            ...w, rows: n, data: w.data.subarray(0, n * K),
            ...(w.dtype === 'fp8' ? { scaleInv: w.scaleInv.subarray(0, Math.ceil(n / 128) * kb) } : {}),
          } as T));
          const label = `${N}x${K} ${layer} M=${m}${n !== N ? ` (N cut to ${n})` : ''}`;
          const reps = m === 1 ? 7 : m <= 64 ? 3 : 1;
          const warm = m >= 4096 ? 0 : 1;
          const x = randomF32(m * K, 11);
          const a8 = quantizePerToken(x, m, K);
          const out = new Float32Array(m * n);
          const flops = 2 * m * n * K;
          const outB = 4 * m * n, wScales = Math.ceil(n / 128) * kb * 4;
          const tF32 = timeIt(() => ops.matmul(x, m, cut(wf32), out), reps, warm);
          const tBf = timeIt(() => ops.matmul(x, m, cut(wbf), out), reps, warm);
          const tW8 = timeIt(() => ops.matmul(x, m, cut(wf8), out), reps, warm);
          const bCut = { ...b8, rows: n, data: b8.data.subarray(0, n * K), scales: b8.scales.subarray(0, Math.ceil(n / 128) * kb) };
          const t8 = timeIt(() => dg.fp8GemmNt(a8, bCut, out), reps, warm);
          const gf = (t: number) => flops / t / 1e9;
          const f32GF = gf(tF32);
          bestF32[threads] = Math.max(bestF32[threads] ?? 0, f32GF);
          const bytes = {
            f32: 4 * m * K + 4 * n * K + outB, bf16: 4 * m * K + 2 * n * K + outB,
            fp8w: 4 * m * K + n * K + wScales + outB, fp8: m * K + n * K + m * kb * 4 + wScales + outB,
          };
          const time = { f32: tF32, bf16: tBf, fp8w: tW8, fp8: t8 };
          for (const kind of ['f32', 'bf16', 'fp8w', 'fp8'] as const) {
            const gbs = bytes[kind] / time[kind] / 1e9;
            const isF32 = kind === 'f32';
            rows.push({ case: `${label} ${kind}`, threads, metric: 'GFLOP/s', value: gf(time[kind]), unit: 'GFLOP/s', ratio: m > 1 && !isF32 ? gf(time[kind]) / f32GF : null });
            rows.push({ case: `${label} ${kind}`, threads, metric: 'bandwidth', value: gbs, unit: 'GB/s', ratio: m === 1 ? gbs / copy[threads]! : null });
            if (m === 1 && !isF32) rows.push({ case: `${label} ${kind}`, threads, metric: 'speedup vs f32 weights', value: tF32 / time[kind], unit: 'x', ratio: tF32 / time[kind] });
          }
        }
        freeWeight(ops, wf8);
        freeWeight(ops, wf32);
        freeWeight(ops, wbf);
      }
    } finally {
      await ops.dispose();
    }
  }
  for (const t of threadsList) baseline[`best wasm f32 GEMM GFLOP/s (${t} thread${t > 1 ? 's' : ''})`] = bestF32[t] ?? NaN;
  return {
    bench: 'gemm',
    baseline,
    rows,
    notes: [
      'fp8w = weight-only FP8 (f32 activations, KernelOps.matmul); fp8 = DeepGEMM fp8GemmNt (FP8 activations); f32/bf16 = same shape with f32/bf16 weights',
      'ratio: M=1 rows: GB/s / copy bandwidth (goal fp8 >= 0.5) and f32 time / time (goal >= 2); M>1 rows: GFLOP/s / f32 GEMM GFLOP/s (goal >= 0.8)',
      `M=4096 rows use the first ${n4096} output columns of each shape`,
    ],
  };
}
