// Memory-copy bandwidth measured by the benchmarking process itself, the baseline that kernel
// bandwidths are divided by. Copy = TypedArray.set over 256 MiB (STREAM counting: read + write bytes);
// with 2 threads each worker copies its own half concurrently.
import { Worker } from 'node:worker_threads';
import { median } from './report.ts';
import { WasmRuntime } from '../../src/kernels/wasm/runtime.ts';
import { splitColumns } from '../../src/kernels/wasm/matmul.ts';

const BYTES = 256 << 20;

function copyOnce(src: Float64Array, dst: Float64Array): number {
  const t0 = process.hrtime.bigint();
  dst.set(src);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const WORKER_SRC = `
const { parentPort, workerData } = require('node:worker_threads');
const src = new Float64Array(workerData.bytes / 8).fill(1);
const dst = new Float64Array(workerData.bytes / 8);
dst.set(src);
const flag = new Int32Array(workerData.flag);
parentPort.on('message', (reps) => {
  const times = [];
  for (let r = 0; r < reps; r++) {
    Atomics.add(flag, 0, 1);
    while (Atomics.load(flag, 0) < (r + 1) * workerData.threads) {}
    const t0 = process.hrtime.bigint();
    dst.set(src);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  parentPort.postMessage(times);
});
`;

/** Copy bandwidth in GB/s (1e9 bytes/s), median of `reps` runs, with 1 or more threads. */
export async function copyBandwidthGBs(threads = 1, reps = 7): Promise<number> {
  return (await copyBandwidthStats(threads, reps)).median;
}

/** Copy bandwidth in GB/s: the median and the best (fastest) of `reps` runs. */
export async function copyBandwidthStats(threads = 1, reps = 7): Promise<{ median: number; best: number }> {
  if (threads <= 1) {
    const src = new Float64Array(BYTES / 8).fill(1);
    const dst = new Float64Array(BYTES / 8);
    copyOnce(src, dst);
    const times = Array.from({ length: reps }, () => copyOnce(src, dst));
    return { median: (2 * BYTES) / median(times) / 1e9, best: (2 * BYTES) / Math.min(...times) / 1e9 };
  }
  const flag = new SharedArrayBuffer(4);
  const per = Math.floor(BYTES / threads / 8) * 8;
  const workers = Array.from({ length: threads }, () =>
    new Worker(WORKER_SRC, { eval: true, workerData: { bytes: per, flag, threads } }));
  try {
    const results = await Promise.all(workers.map((w) => new Promise<number[]>((res, rej) => {
      w.once('message', res);
      w.once('error', rej);
      w.postMessage(reps);
    })));
    // Aggregate bandwidth per rep: all threads' bytes over the slowest thread's time.
    const perRep = Array.from({ length: reps }, (_, r) => Math.max(...results.map((t) => t[r]!)));
    return { median: (2 * per * threads) / median(perRep) / 1e9, best: (2 * per * threads) / Math.min(...perRep) / 1e9 };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
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
