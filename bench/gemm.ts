// `npm run bench -- gemm [--json] [--threads 1,2] [--m 1,64,4096] [--n4096 512] [--shapes 0,1,...] [--simd plain,relaxed]`
// FP8 GEMMs on the wasm backend for DeepSeek-V3's N×K shapes (the DeepGEMM test shapes), next to the
// same process's memory-copy bandwidth and its own f32 GEMM (wasm matmul, f32 weights) on the same shape.
// Both SIMD levels of the kernels run side by side (interleaved repetitions, so machine noise hits both
// alike): 'plain' (kernels.wasm, SIMD128) and 'relaxed' (kernels-relaxed.wasm, fused multiply-adds;
// Node 20 runs it behind a V8 flag that src/kernels/wasm/runtime.ts sets). Cases per shape, M, thread
// count and level:
//   fp8w  weight-only FP8 (f32 activations, FP8 weights with 128x128 scales): KernelOps.matmul, what
//         the model runs for FP8 checkpoints;
//   fp8   DeepGEMM fp8GemmNt (FP8 activations with 1x128 scales, FP8 weights);
//   f32   f32 weights (the baseline), bf16 for reference.
// Formulas (DeepGEMM's): FLOPs = 2·m·n·k; bytes = activations + weights + 4·m·n (f32 out) + scales, with
// activations m·k (fp8) or 4·m·k (f32) and weights n·k (fp8), 2·n·k (bf16), 4·n·k (f32).
// Ratios are exactly issue #4's goals, against the BEST f32 of either level on the same shape, M and
// thread count: M = 1: GB/s over copy bandwidth (goal fp8 >= 0.5; the copy is also timed inside the same
// interleaved rounds on the pool threads, and the larger of the two copy figures is the denominator) and
// best-f32 time over time
// (goal >= 2); M > 1: GFLOP/s over the best f32 GEMM's GFLOP/s (goal >= 0.8). M = 4096 cuts N to
// --n4096 columns (default 512) so a run stays within minutes on 2 cores; the row says so.
import { copyBandwidthGBs } from './lib/bandwidth.ts';
import { median, type BenchReport, type BenchRow } from './lib/report.ts';
import { WasmMemoryOps } from '../src/kernels/wasm/backend.ts';
import { relaxedSimdSupported, WasmRuntime, type SimdLevel } from '../src/kernels/wasm/runtime.ts';
import { splitColumns } from '../src/kernels/wasm/matmul.ts';
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

/** Median seconds of each fn, repetitions interleaved (fn0, fn1, ..., fn0, fn1, ...) after `warmup` rounds. */
function timeInterleaved(fns: Array<() => void>, reps: number, warmup: number): number[] {
  for (let i = 0; i < warmup; i++) for (const f of fns) f();
  const t: number[][] = fns.map(() => []);
  for (let i = 0; i < reps; i++) {
    fns.forEach((f, j) => {
      const t0 = process.hrtime.bigint();
      f();
      t[j]!.push(Number(process.hrtime.bigint() - t0) / 1e9);
    });
  }
  return t.map(median);
}

function freeWeight(ops: WasmMemoryOps, w: WeightMatrix): void {
  ops.runtime.heap.free(w.data.byteOffset);
  if (w.dtype === 'fp8') ops.runtime.heap.free(w.scaleInv.byteOffset);
}

const KINDS = ['f32', 'bf16', 'fp8w', 'fp8'] as const;
/** Bytes per interleaved copy (each of source and destination; far beyond the 16 MiB L3). */
const COPY_BYTES = 128 << 20;
type Kind = typeof KINDS[number];

/** One SIMD level's runtime with the current shape's weights in its memory. */
interface Lane {
  simd: SimdLevel;
  ops: WasmMemoryOps;
  dg: WasmDeepGemm;
  w: { f32: WeightMatrix; bf16: WeightMatrix; fp8: WeightMatrix } | null;
}

export default async function gemmBench(args: string[]): Promise<BenchReport> {
  const threadsList = list(opt(args, 'threads', '1,2'));
  const ms = list(opt(args, 'm', '1,64,4096'));
  const n4096 = Number(opt(args, 'n4096', '512'));
  const shapeIdx = list(opt(args, 'shapes', SHAPES.map((_, i) => i).join(',')));
  const levels = opt(args, 'simd', relaxedSimdSupported() ? 'plain,relaxed' : 'plain').split(',') as SimdLevel[];
  const rows: BenchRow[] = [];
  const baseline: Record<string, number | string> = {};
  const copy: Record<number, number> = {};
  for (const t of threadsList) {
    copy[t] = await copyBandwidthGBs(t);
    baseline[`copy GB/s (${t} thread${t > 1 ? 's' : ''})`] = copy[t]!;
  }
  baseline['SIMD levels'] = levels.join(', ');
  const bestF32: Record<string, number> = {};
  /** Goal ratios per (kind, M class, level, threads) for the summary rows. */
  const goals = new Map<string, number[]>();
  const goal = (key: string, v: number): void => { goals.set(key, [...(goals.get(key) ?? []), v]); };
  for (const threads of threadsList) {
    const lanes: Lane[] = [];
    for (const simd of levels) {
      const ops = new WasmMemoryOps(await WasmRuntime.create({ threads, simd }));
      lanes.push({ simd, ops, dg: new WasmDeepGemm(ops.runtime), w: null });
    }
    // The copy baseline again, inside the M = 1 timing rounds (interleaved with the kernels, on the same
    // pool threads: wasm memory.copy, i.e. memmove, of COPY_BYTES split across the threads), so that a
    // busy machine slows the baseline and the kernels alike; the M = 1 ratios use its median per case.
    const rt0 = lanes[0]!.ops.runtime;
    const cSrc = rt0.heap.alloc(COPY_BYTES), cDst = rt0.heap.alloc(COPY_BYTES);
    new Uint8Array(rt0.memory.buffer, cSrc, COPY_BYTES).fill(1);
    const cParts = splitColumns(COPY_BYTES, threads);
    const copyFn = (): void => rt0.pool.run('kernels', 'copyBytes', (t) => { const r = cParts[t]; return r ? [cSrc, cDst, r[0], r[1]] : null; });
    const inRunCopy: number[] = [];
    try {
      for (const si of shapeIdx) {
        const [N, K, layer] = SHAPES[si]!;
        const kb = Math.ceil(K / 128);
        // Weights, the same values in every lane's memory, once per shape.
        const codes = new Uint8Array(N * K);
        fillCodes(codes);
        const vals = randomF32(N * K, 7);
        const bfv = encodeBf16(vals);
        for (const lane of lanes) {
          const f8 = lane.ops.allocWeight('fp8', N, K), f32 = lane.ops.allocWeight('f32', N, K), bf = lane.ops.allocWeight('bf16', N, K);
          if (f8.dtype !== 'fp8' || f32.dtype !== 'f32' || bf.dtype !== 'bf16') throw new Error('allocWeight');
          f8.data.set(codes);
          f8.scaleInv.fill(1 / 448);
          f32.data.set(vals);
          bf.data.set(bfv);
          lane.w = { f32, bf16: bf, fp8: f8 };
        }
        for (const m of ms) {
          // M = 4096: N is cut to the first n4096 weight rows (views; the kernels see an [n4096, K] matrix).
          const n = m >= 4096 ? Math.min(N, n4096) : N;
          const cut = <T extends WeightMatrix>(w: T): T => (n === N ? w : ({
            ...w, rows: n, data: w.data.subarray(0, n * K),
            ...(w.dtype === 'fp8' ? { scaleInv: w.scaleInv.subarray(0, Math.ceil(n / 128) * kb) } : {}),
          } as T));
          const label = `${N}x${K} ${layer} M=${m}${n !== N ? ` (N cut to ${n})` : ''}`;
          const reps = m === 1 ? 7 : m <= 64 ? 3 : 1;
          // M = 1: 3 warm-up rounds, so that every pool worker runs V8's optimized (TurboFan) code: the
          // first calls of a fresh runtime run the baseline compiler's code until tier-up, which competes
          // for the same 2 cores.
          const warm = m === 1 ? 3 : m >= 4096 ? 0 : 1;
          const x = randomF32(m * K, 11);
          const a8 = quantizePerToken(x, m, K);
          const out = new Float32Array(m * n);
          const flops = 2 * m * n * K;
          const outB = 4 * m * n, wScales = Math.ceil(n / 128) * kb * 4;
          const fns: Array<() => void> = [];
          for (const lane of lanes) {
            const w = lane.w!;
            const f8 = w.fp8;
            if (f8.dtype !== 'fp8') throw new Error('fp8');
            const bCut = { rows: n, cols: K, data: f8.data.subarray(0, n * K), scales: f8.scaleInv.subarray(0, Math.ceil(n / 128) * kb), scaleBlock: '128x128' as const };
            fns.push(() => lane.ops.matmul(x, m, cut(w.f32), out), () => lane.ops.matmul(x, m, cut(w.bf16), out),
              () => lane.ops.matmul(x, m, cut(w.fp8), out), () => lane.dg.fp8GemmNt(a8, bCut, out));
          }
          if (m === 1) fns.push(copyFn);
          const times = timeInterleaved(fns, reps, warm);
          // Denominator: the larger of the start-of-run copy (TypedArray.set on plain buffers, as
          // bench/lib/bandwidth.ts) and the in-round pool copy (wasm memory.copy on the shared memory,
          // which V8 does with a slower atomics-safe memmove): never flattering, and load-aware.
          const copyRound = m === 1 ? (2 * COPY_BYTES) / times[fns.length - 1]! / 1e9 : copy[threads]!;
          const copyNow = Math.max(copy[threads]!, copyRound);
          if (m === 1) inRunCopy.push(copyRound);
          const gf = (t: number) => flops / t / 1e9;
          const tF32Best = Math.min(...lanes.map((_, li) => times[li * 4]!));
          const f32GF = gf(tF32Best);
          bestF32[threads] = Math.max(bestF32[threads] ?? 0, f32GF);
          const bytes = {
            f32: 4 * m * K + 4 * n * K + outB, bf16: 4 * m * K + 2 * n * K + outB,
            fp8w: 4 * m * K + n * K + wScales + outB, fp8: m * K + n * K + m * kb * 4 + wScales + outB,
          };
          lanes.forEach((lane, li) => {
            KINDS.forEach((kind: Kind, ki) => {
              const t = times[li * 4 + ki]!;
              const gbs = bytes[kind] / t / 1e9;
              const isF32 = kind === 'f32';
              const c = `${label} ${kind} [${lane.simd}]`;
              const rGf = m > 1 && !isF32 ? gf(t) / f32GF : null;
              const rBw = m === 1 ? gbs / copyNow : null;
              rows.push({ case: c, threads, metric: 'GFLOP/s', value: gf(t), unit: 'GFLOP/s', ratio: rGf });
              rows.push({ case: c, threads, metric: 'bandwidth', value: gbs, unit: 'GB/s', ratio: rBw });
              if (m === 1 && li === 0 && ki === 0) rows.push({ case: `${label} memory copy (pool, interleaved)`, threads, metric: 'bandwidth', value: copyRound, unit: 'GB/s', ratio: null });
              if (m === 1 && !isF32) rows.push({ case: c, threads, metric: 'speedup vs best f32 weights', value: tF32Best / t, unit: 'x', ratio: tF32Best / t });
              if (kind === 'fp8w' || kind === 'fp8') {
                if (m === 1) {
                  goal(`${kind} M=1 GB/s / copy [${lane.simd}] (${threads}t)`, rBw!);
                  goal(`${kind} M=1 speedup vs best f32 [${lane.simd}] (${threads}t)`, tF32Best / t);
                  goal(`${kind} M=1 speedup vs same-level f32 [${lane.simd}] (${threads}t)`, times[li * 4]! / t);
                } else {
                  goal(`${kind} M>1 GFLOP/s / best f32 [${lane.simd}] (${threads}t)`, rGf!);
                  goal(`${kind} M>1 GFLOP/s / same-level f32 [${lane.simd}] (${threads}t)`, times[li * 4]! / t);
                }
              }
            });
          });
        }
        for (const lane of lanes) {
          for (const w of Object.values(lane.w!)) freeWeight(lane.ops, w);
          lane.w = null;
        }
      }
      if (inRunCopy.length) baseline[`copy GB/s in the M=1 rounds, median (${threads} thread${threads > 1 ? 's' : ''})`] = median(inRunCopy);
    } finally {
      for (const lane of lanes) await lane.ops.dispose();
    }
  }
  for (const t of threadsList) baseline[`best wasm f32 GEMM GFLOP/s (${t} thread${t > 1 ? 's' : ''})`] = bestF32[t] ?? NaN;
  // Summary: the worst and median goal ratio over the shapes, per case class (the goals are stated against
  // the best f32 of either level; the same-level ratios show what each build achieves on its own).
  for (const [key, v] of goals) {
    const t = Number(/\((\d+)t\)$/.exec(key)![1]);
    rows.push({ case: `summary ${key.replace(/ \(\d+t\)$/, '')}`, threads: t, metric: 'worst over shapes', value: Math.min(...v), unit: 'ratio', ratio: Math.min(...v) });
    rows.push({ case: `summary ${key.replace(/ \(\d+t\)$/, '')}`, threads: t, metric: 'median over shapes', value: median(v), unit: 'ratio', ratio: median(v) });
  }
  return {
    bench: 'gemm',
    baseline,
    rows,
    notes: [
      'fp8w = weight-only FP8 (f32 activations, KernelOps.matmul); fp8 = DeepGEMM fp8GemmNt (FP8 activations); f32/bf16 = same shape with f32/bf16 weights; [plain] = SIMD128 kernels.wasm, [relaxed] = kernels-relaxed.wasm (fused multiply-adds)',
      'ratio (issue #4 goals): M=1 rows: GB/s / copy bandwidth, the larger of the start-of-run copy and the copy timed in the same interleaved rounds (goal fp8 >= 0.5) and best f32 time / time (goal >= 2); M>1 rows: GFLOP/s / best f32 GEMM GFLOP/s on the same shape (goal >= 0.8); best f32 = the faster SIMD level',
      `M=4096 rows use the first ${n4096} output columns of each shape`,
    ],
  };
}
