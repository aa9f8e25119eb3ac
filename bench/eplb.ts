// EPLB planning time at DeepSeek-V3 scale: 58 MoE layers × 256 routed experts, 8 groups; the prefill
// setting (4 nodes × 8 GPUs, 32 redundant experts: 288 slots, hierarchical) and the decode setting
// (18 nodes × 8 GPUs, 288 slots, global since 8 groups % 18 nodes ≠ 0). Loads: seeded Zipf-like.
import { rebalanceExperts, gpuLoads, imbalance } from '../src/parallel/eplb/eplb.ts';
import { median, timeRuns, type BenchReport, type BenchRow } from './lib/report.ts';

export default async function eplbBench(): Promise<BenchReport> {
  const L = 58;
  const E = 256;
  let s = 7;
  const rnd = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const weight = Array.from({ length: L }, () => Array.from({ length: E }, () => Math.floor(1000 / (1 + 40 * rnd() ** 3))));
  const rows: BenchRow[] = [];
  for (const [name, R, nodes, gpus] of [['prefill EP32', 288, 4, 32], ['decode EP144', 288, 18, 144]] as const) {
    const t = median(timeRuns(() => rebalanceExperts(weight, R, 8, nodes, gpus), 5));
    const plan = rebalanceExperts(weight, R, 8, nodes, gpus);
    const bal = median(weight.map((w, l) => imbalance(gpuLoads(w, plan.phy2log[l]!, plan.logcnt[l]!, gpus))));
    rows.push({ case: `${name} (${L}×${E} → ${R} slots)`, threads: 1, metric: 'plan time', value: t * 1e3, unit: 'ms', ratio: null });
    rows.push({ case: `${name} (${L}×${E} → ${R} slots)`, threads: 1, metric: 'max/mean GPU load (median layer)', value: bal, unit: '', ratio: null });
  }
  return { bench: 'eplb', baseline: {}, rows };
}
