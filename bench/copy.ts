// The baseline on its own: memory-copy bandwidth with 1 and 2 threads.
import { copyBandwidthGBs } from './lib/bandwidth.ts';
import type { BenchReport } from './lib/report.ts';

export default async function copyBench(): Promise<BenchReport> {
  const one = await copyBandwidthGBs(1);
  const two = await copyBandwidthGBs(2);
  return {
    bench: 'copy',
    baseline: {},
    rows: [
      { case: 'copy 256MiB', threads: 1, metric: 'bandwidth', value: one, unit: 'GB/s', ratio: null },
      { case: 'copy 256MiB', threads: 2, metric: 'bandwidth', value: two, unit: 'GB/s', ratio: null },
    ],
  };
}
