// FlashMLA decode benchmark with FlashMLA's own accounting (benchmark/bench_flash_mla.py):
//   FLOPs = 2·b·sQ·hQ·mean_sK·(dQK + dV)
//   bytes = 2·(Σ sK·hKv·dQK + b·sQ·hQ·(dQK + dV))          (bf16 cache and q/out)
// Shapes: FlashMLA's memory-bound decode (b 64, sQ 1, hQ 16, hKv 1, varlen mean sK 4096, BF16 cache), its
// compute-heavy one (hQ 128, sQ 2; b 8 here), and hQ 1 (the shape that is memory-bound on a CPU, where the
// flop/byte ratio 2·hQ·sQ is low enough for SIMD128). Each runs on wasm with 1 and 2 threads and, with a
// smaller batch (same per-request shape), on ref. ratio = achieved GB/s ÷ the memory-copy GB/s this
// process measures with the same thread count (bench/lib/bandwidth.ts).
// Reference: https://github.com/deepseek-ai/FlashMLA/blob/main/benchmark/bench_flash_mla.py
import { copyBandwidthGBs } from './lib/bandwidth.ts';
import { median, timeRuns, type BenchReport, type BenchRow } from './lib/report.ts';
import { f32ToBf16 } from '../src/tensor/dtypes.ts';
import { loadFlashMla } from '../src/kernels/flashmla/index.ts';
import { getMlaMetadata } from '../src/kernels/flashmla/metadata.ts';
import { allocCacheLayer } from '../src/kernels/flashmla/kv-format.ts';
import { MLA_BLOCK_SIZE, V3_D_QK, V3_D_V, type FlashMlaKernel, type KvCacheLayer, type SyncFlashMlaKernel } from '../src/kernels/flashmla/types.ts';

interface Shape {
  name: string;
  b: number;
  sQ: number;
  hQ: number;
  hKv: number;
  meanSk: number;
  /** Batch for the (slow) ref backend; 0 = skip ref. */
  refB: number;
}

const SHAPES: Shape[] = [
  { name: 'memory-bound b64 sQ1 hQ16 sK~4096 bf16', b: 64, sQ: 1, hQ: 16, hKv: 1, meanSk: 4096, refB: 2 },
  { name: 'compute-heavy b8 sQ2 hQ128 sK~4096 bf16', b: 8, sQ: 2, hQ: 128, hKv: 1, meanSk: 4096, refB: 1 },
  { name: 'cpu-memory-bound b64 sQ1 hQ1 sK~4096 bf16', b: 64, sQ: 1, hQ: 1, hKv: 1, meanSk: 4096, refB: 8 },
];

/** Deterministic varlen lengths ~ N(mean, mean/2) clamped to [sQ, 2·mean] (FlashMLA's benchmark draw). */
function lengths(b: number, mean: number, sQ: number, seed: number): Int32Array {
  let x = seed | 1;
  const u = () => {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    return ((x >>> 0) + 0.5) / 4294967296;
  };
  return Int32Array.from({ length: b }, () => {
    const n = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
    return Math.max(sQ, Math.min(2 * mean, Math.round(mean + (n * mean) / 2)));
  });
}

interface Inputs {
  q: Float32Array;
  kCache: KvCacheLayer;
  blockTable: Int32Array;
  cacheSeqlens: Int32Array;
  maxBlocks: number;
}

/** Random bf16 cache for the batch (blocks handed out in order), built in the kernel's own memory. */
function inputs(k: FlashMlaKernel, s: Shape, b: number): Inputs {
  const cacheSeqlens = lengths(b, s.meanSk, s.sQ, 12345).subarray(0, b);
  const nbs = Array.from(cacheSeqlens, (l) => Math.ceil(l / MLA_BLOCK_SIZE));
  const numBlocks = nbs.reduce((x, y) => x + y, 0);
  const maxBlocks = Math.max(...nbs);
  const kCache = k.allocCache ? k.allocCache('bf16', numBlocks, s.hKv, V3_D_QK) : allocCacheLayer('bf16', numBlocks, s.hKv, V3_D_QK);
  // One block of random rows, repeated: contents do not change the timing, generation would dominate.
  const pattern = new Uint16Array(MLA_BLOCK_SIZE * s.hKv * V3_D_QK);
  let x = 99;
  for (let i = 0; i < pattern.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
    pattern[i] = f32ToBf16((((x >>> 8) & 0xffff) / 65536 - 0.5) * 0.35);
  }
  const data = kCache.data as Uint16Array;
  for (let blk = 0; blk < numBlocks; blk++) data.set(pattern, blk * pattern.length);
  const blockTable = new Int32Array(b * maxBlocks);
  let next = 0;
  for (let i = 0; i < b; i++) for (let j = 0; j < nbs[i]!; j++) blockTable[i * maxBlocks + j] = next++;
  const q = Float32Array.from({ length: b * s.sQ * s.hQ * V3_D_QK }, (_, i) => Math.sin(i) * 0.1);
  return { q, kCache, blockTable, cacheSeqlens, maxBlocks };
}

function accounting(s: Shape, lens: Int32Array): { flops: number; bytes: number } {
  const b = lens.length;
  let sum = 0;
  for (const l of lens) sum += l;
  const flops = 2 * b * s.sQ * s.hQ * (sum / b) * (V3_D_QK + V3_D_V);
  const bytes = 2 * (sum * s.hKv * V3_D_QK + b * s.sQ * s.hQ * (V3_D_QK + V3_D_V));
  return { flops, bytes };
}

async function measure(backend: string, threads: number, s: Shape, b: number, reps: number): Promise<{ sec: number; min: number; max: number; flops: number; bytes: number }> {
  const k = (await loadFlashMla(backend, { threads })) as SyncFlashMlaKernel;
  try {
    const inp = inputs(k, s, b);
    const meta = getMlaMetadata(inp.cacheSeqlens, (s.sQ * s.hQ) / s.hKv, s.hKv, k.numParts(b, s.sQ, s.hQ, s.hKv));
    const out = new Float32Array(b * s.sQ * s.hQ * V3_D_V);
    const lse = new Float32Array(b * s.hQ * s.sQ);
    const args = {
      q: inp.q, batch: b, seqLenQ: s.sQ, numHeadsQ: s.hQ, kCache: inp.kCache, blockTable: inp.blockTable,
      cacheSeqlens: inp.cacheSeqlens, dV: V3_D_V, meta, softmaxScale: 192 ** -0.5, causal: true, out, lse,
    };
    const times = timeRuns(() => { k.flashMlaWithKvcache(args); }, reps, 1);
    return { sec: median(times), min: Math.min(...times), max: Math.max(...times), ...accounting(s, inp.cacheSeqlens) };
  } finally {
    await k.dispose();
  }
}

export default async function mlaBench(args: string[]): Promise<BenchReport> {
  const reps = Number(args.find((a) => a.startsWith('--reps='))?.slice(7) ?? 5);
  const skipRef = args.includes('--no-ref');
  const copy1 = await copyBandwidthGBs(1);
  const copy2 = await copyBandwidthGBs(2);
  const copyOf = (t: number) => (t >= 2 ? copy2 : copy1);
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  for (const s of SHAPES) {
    const runs: { backend: string; threads: number; b: number }[] = [
      { backend: 'wasm', threads: 1, b: s.b }, { backend: 'wasm', threads: 2, b: s.b },
    ];
    if (!skipRef && s.refB > 0) runs.push({ backend: 'ref', threads: 1, b: s.refB });
    for (const r of runs) {
      const m = await measure(r.backend, r.threads, s, r.b, r.backend === 'ref' ? 1 : reps);
      const gbs = m.bytes / m.sec / 1e9;
      const label = `${s.name}${r.b !== s.b ? ` (b${r.b})` : ''} ${r.backend}`;
      rows.push({ case: label, threads: r.threads, metric: 'time', value: m.sec * 1e3, unit: 'ms', ratio: null });
      rows.push({ case: label, threads: r.threads, metric: 'bandwidth', value: gbs, unit: 'GB/s', ratio: gbs / copyOf(r.threads) });
      rows.push({ case: label, threads: r.threads, metric: 'compute', value: m.flops / m.sec / 1e9, unit: 'GFLOP/s', ratio: null });
      // Roofline: 0.8 of the copy bandwidth at this flop/byte needs this much compute; SIMD128 f32x4
      // mul+add peaks near 62 GFLOP/s per core (shared/notes/machine-limits.md), so hQ·sQ ≥ 2 is compute-bound.
      const need = 0.8 * copyOf(r.threads) * (m.flops / m.bytes);
      notes.push(`${label} x${r.threads}: median ${(m.sec * 1e3).toFixed(1)} ms (min ${(m.min * 1e3).toFixed(1)}, max ${(m.max * 1e3).toFixed(1)}), ${(m.flops / m.bytes).toFixed(1)} flop/byte: 0.8 of copy bandwidth would need ${need.toFixed(0)} GFLOP/s`);
    }
  }
  return {
    bench: 'mla',
    baseline: { 'copy GB/s x1': copy1, 'copy GB/s x2': copy2, reps },
    rows,
    notes,
  };
}
