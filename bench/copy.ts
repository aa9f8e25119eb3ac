// The baselines on their own: memory-copy bandwidth (STREAM counting, read + write bytes) and the
// read-only bandwidth the wasm kernels see (bench/lib/bandwidth.ts), with 1 and 2 threads.
import { copyBandwidthGBs, wasmReadBandwidthStats } from './lib/bandwidth.ts';
import type { BenchReport, BenchRow } from './lib/report.ts';

export default async function copyBench(): Promise<BenchReport> {
  const rows: BenchRow[] = [];
  for (const threads of [1, 2]) {
    const copy = await copyBandwidthGBs(threads);
    const read = await wasmReadBandwidthStats(threads);
    rows.push({ case: 'copy 256MiB', threads, metric: 'bandwidth', value: copy, unit: 'GB/s', ratio: null });
    // ratio: the read rate over the copy figure measured just before it (what a decode ratio against copy can reach at most).
    rows.push({ case: 'wasm read 256MiB', threads, metric: 'bandwidth', value: read.median, unit: 'GB/s', ratio: read.median / copy });
  }
  return { bench: 'copy', baseline: {}, rows, notes: ['wasm read: the kernels\' readBytes (four interleaved streams per thread) over 256 MiB of wasm memory; ratio = read / copy (STREAM-counted) at that thread count'] };
}
