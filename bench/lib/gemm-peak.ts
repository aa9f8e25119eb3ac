// The GEMM peak a prefill is measured against: the best of the wasm backend's own f32 and bf16 weight
// GEMMs (KernelOps.matmul, the products the model runs; bench/gemm.ts times the same calls per DeepSeek
// shape and SIMD level) at one prefill-like shape, with the given thread count, in this process.
// Activations and output live in backend memory, as the model's workspace buffers do, so no copy in or
// out is timed.
import { loadBackend } from '../../src/kernels/index.ts';
import type { Kernels, WeightMatrix } from '../../src/kernels/api.ts';
import { median } from './report.ts';

export interface GemmPeak {
  /** Best median GFLOP/s over the weight formats. */
  gflops: number;
  /** The format that reached it. */
  kind: 'f32' | 'bf16';
  /** Median GFLOP/s per format. */
  byKind: Record<'f32' | 'bf16', number>;
  /** The fastest single product of either format, GFLOP/s (the least disturbed on a shared machine). */
  best: number;
  shape: { m: number; n: number; k: number };
}

/** M = 512 prompt rows (the protocol's prefill) times a 2048x1024 weight: ~2.1 GFLOP per product. */
export const PEAK_SHAPE = { m: 512, n: 2048, k: 1024 } as const;

function fill(out: Float32Array, seed: number): void {
  let s = seed >>> 0 || 1;
  for (let i = 0; i < out.length; i++) { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; out[i] = ((s >>> 0) / 4294967296 - 0.5) * 2; }
}

/** bf16 bits of f32 values, truncated (rounding does not matter: the values are only there to be multiplied). */
function toBf16(v: Float32Array, out: Uint16Array): void {
  const u = new Uint32Array(v.buffer, v.byteOffset, v.length);
  for (let i = 0; i < v.length; i++) out[i] = u[i]! >>> 16;
}

/**
 * The peak's backend, weights and buffers, made once: `measure()` times `reps` interleaved rounds of both
 * formats (after one warm-up round on the first call) and allocates nothing, so a probe taken between two
 * timed runs of something else leaves no garbage for their collector (bench forward's paired ratios).
 */
export class GemmProbe {
  private warm = false;
  private constructor(
    private readonly ops: Kernels,
    private readonly kinds: Array<['f32' | 'bf16', WeightMatrix]>,
    private readonly x: Float32Array,
    private readonly out: Float32Array,
    readonly shape: { m: number; n: number; k: number },
  ) {}

  static async create(threads: number, shape: { m: number; n: number; k: number } = PEAK_SHAPE): Promise<GemmProbe> {
    const { m, n, k } = shape;
    const ops = await loadBackend('wasm', { threads });
    try {
      const vals = new Float32Array(n * k);
      fill(vals, 7);
      const wF32 = ops.allocWeight('f32', n, k);
      const wBf16 = ops.allocWeight('bf16', n, k);
      if (wF32.dtype !== 'f32' || wBf16.dtype !== 'bf16') throw new Error('allocWeight returned the wrong dtype');
      wF32.data.set(vals);
      toBf16(vals, wBf16.data);
      const x = ops.allocWeight('f32', 1, m * k).data as Float32Array;
      fill(x, 11);
      const out = ops.allocWeight('f32', 1, m * n).data as Float32Array;
      return new GemmProbe(ops, [['f32', wF32], ['bf16', wBf16]], x, out, { m, n, k });
    } catch (e) {
      await ops.dispose();
      throw e;
    }
  }

  /** Median GFLOP/s of each format over `reps` interleaved rounds; the better format is the peak. */
  measure(reps = 3): GemmPeak {
    const { m, n, k } = this.shape;
    const times: Record<'f32' | 'bf16', number[]> = { f32: [], bf16: [] };
    for (let r = this.warm ? 0 : -1; r < reps; r++) {
      for (const [kind, w] of this.kinds) {
        const t0 = process.hrtime.bigint();
        this.ops.matmul(this.x, m, w, this.out);
        const s = Number(process.hrtime.bigint() - t0) / 1e9;
        if (r >= 0) times[kind].push(s);
      }
    }
    this.warm = true;
    const gf = (t: number): number => (2 * m * n * k) / t / 1e9;
    const byKind = { f32: gf(median(times.f32)), bf16: gf(median(times.bf16)) };
    const kind = byKind.f32 >= byKind.bf16 ? 'f32' : 'bf16';
    return { gflops: byKind[kind], kind, byKind, best: gf(Math.min(...times.f32, ...times.bf16)), shape: { m, n, k } };
  }

  close(): Promise<void> {
    return this.ops.dispose();
  }
}
