// Memory-copy bandwidth measured by the benchmarking process itself, the baseline that kernel
// bandwidths are divided by. Copy = TypedArray.set over 256 MiB (STREAM counting: read + write bytes);
// with 2 threads each worker copies its own half concurrently.
import { Worker } from 'node:worker_threads';
import { median } from './report.ts';
import { WasmRuntime } from '../../src/kernels/wasm/runtime.ts';
import { splitColumns } from '../../src/kernels/wasm/matmul.ts';

/**
 * Bytes copied (and read): 256 MiB. The copy figure depends on the size (one thread here: 12-13 GB/s at
 * 64 MiB, 28 at 256; large copies take memcpy's streaming-store path), so every copy figure uses this one.
 */
const BYTES = 256 << 20;

function copyOnce(src: Float64Array, dst: Float64Array): number {
  const t0 = process.hrtime.bigint();
  dst.set(src);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

// Each message runs `reps` copies; the threads start each copy together (a spin barrier on `flag`, whose
// count keeps growing across messages: `round` is the copies this worker has done so far).
const WORKER_SRC = `
const { parentPort, workerData } = require('node:worker_threads');
const src = new Float64Array(workerData.bytes / 8).fill(1);
const dst = new Float64Array(workerData.bytes / 8);
dst.set(src);
const flag = new Int32Array(workerData.flag);
let round = 0;
parentPort.postMessage('ready');
parentPort.on('message', (reps) => {
  const times = [];
  for (let r = 0; r < reps; r++, round++) {
    Atomics.add(flag, 0, 1);
    while (Atomics.load(flag, 0) < (round + 1) * workerData.threads) {}
    const t0 = process.hrtime.bigint();
    dst.set(src);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  parentPort.postMessage(times);
});
`;

/**
 * Copy bandwidth with its buffers (and, for several threads, its workers) made once: `measure()` only
 * copies, so a probe between two timed runs of something else leaves no garbage (bench forward's paired
 * ratios). `bytes` in all, split across the threads; the first call warms up with one extra copy.
 */
export class CopyProbe {
  private warm = false;
  /** A worker's error or exit, kept: every later call fails with it (the others would spin at the barrier). */
  private failure: Error | null = null;
  /** Settles the call in flight, if any, when a worker fails. */
  private onFailure: ((e: Error) => void) | null = null;
  private constructor(
    readonly threads: number,
    readonly bytes: number,
    private readonly local: { src: Float64Array; dst: Float64Array } | null,
    private readonly workers: Worker[],
  ) {
    for (const w of workers) {
      // Listeners for the probe's whole life, so a failure between calls is kept, not thrown as uncaught.
      w.on('error', (e: Error) => this.fail(e));
      w.on('exit', (code: number) => this.fail(new Error(`copy probe worker exited (code ${code})`)));
    }
  }

  private fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    this.onFailure?.(e);
  }

  /** Workers allocate and fill their buffers before `create` returns, so that work is not timed elsewhere. */
  static async create(threads = 1, bytes = BYTES): Promise<CopyProbe> {
    if (threads <= 1) {
      const src = new Float64Array(bytes / 8).fill(1);
      return new CopyProbe(1, bytes, { src, dst: new Float64Array(bytes / 8) }, []);
    }
    const flag = new SharedArrayBuffer(4);
    const per = Math.floor(bytes / threads / 8) * 8;
    const workers = Array.from({ length: threads }, () =>
      new Worker(WORKER_SRC, { eval: true, workerData: { bytes: per, flag, threads } }));
    const probe = new CopyProbe(threads, per * threads, null, workers);
    try {
      await probe.replies(); // each worker's 'ready'
    } catch (e) {
      await probe.close();
      throw e;
    }
    return probe;
  }

  /** The next message of each worker; rejects with a worker's failure (kept: later calls fail with it too). */
  private replies(): Promise<unknown[]> {
    if (this.failure) return Promise.reject(this.failure);
    const all = Promise.all(this.workers.map((w) => new Promise<unknown>((r) => w.once('message', r))));
    return new Promise<unknown[]>((res, rej) => {
      this.onFailure = rej;
      void all.then((v) => { this.onFailure = null; res(v); });
    });
  }

  /** Per-copy seconds of `reps` copies (all threads' bytes over the slowest thread's time per copy). */
  private async times(reps: number): Promise<number[]> {
    if (this.local) {
      const { src, dst } = this.local;
      return Array.from({ length: reps }, () => copyOnce(src, dst));
    }
    const replies = this.replies();
    for (const w of this.workers) w.postMessage(reps);
    const results = (await replies) as number[][];
    return Array.from({ length: reps }, (_, r) => Math.max(...results.map((t) => t[r]!)));
  }

  /** GB/s (STREAM counting: read + write bytes), the median and the best of `reps` copies. */
  async measure(reps = 7): Promise<{ median: number; best: number }> {
    if (!this.warm) { await this.times(1); this.warm = true; }
    const t = await this.times(reps);
    return { median: (2 * this.bytes) / median(t) / 1e9, best: (2 * this.bytes) / Math.min(...t) / 1e9 };
  }

  async close(): Promise<void> {
    // Terminating is not a failure of a call: stop listening for exits first.
    this.failure ??= new Error('copy probe closed');
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/** Copy bandwidth in GB/s (1e9 bytes/s), median of `reps` runs, with 1 or more threads. */
export async function copyBandwidthGBs(threads = 1, reps = 7): Promise<number> {
  return (await copyBandwidthStats(threads, reps)).median;
}

/** Copy bandwidth in GB/s: the median and the best (fastest) of `reps` runs. */
export async function copyBandwidthStats(threads = 1, reps = 7): Promise<{ median: number; best: number }> {
  const probe = await CopyProbe.create(threads);
  try {
    return await probe.measure(reps);
  } finally {
    await probe.close();
  }
}

/**
 * Read-only bandwidth in GB/s as the wasm kernels see it: the backend's `readBytes` kernel streams 256 MiB
 * of its own memory (four interleaved streams per thread, each thread its half), median and best of `reps`.
 * A decode step only reads its weights; on some machines one core's read stream is much slower than half
 * the STREAM-counted copy (which moves read + write bytes at once), so this is the ceiling a GEMV faces.
 */
export async function wasmReadBandwidthStats(threads = 1, reps = 7): Promise<{ median: number; best: number }> {
  const rt = await WasmRuntime.create({ threads });
  try {
    const src = rt.heap.alloc(BYTES);
    new Uint8Array(rt.memory.buffer, src, BYTES).fill(1);
    const parts = splitColumns(BYTES, threads);
    const once = (): number => {
      const t0 = process.hrtime.bigint();
      rt.pool.run('kernels', 'readBytes', (t) => { const r = parts[t]; return r ? [src, r[0], r[1]] : null; });
      return Number(process.hrtime.bigint() - t0) / 1e9;
    };
    once();
    const times = Array.from({ length: reps }, once);
    return { median: BYTES / median(times) / 1e9, best: BYTES / Math.min(...times) / 1e9 };
  } finally {
    await rt.dispose();
  }
}
