// `npm run bench -- ep [--json] [--reps N] [--quick]`: DeepEP dispatch / combine bandwidth with DeepEP's
// byte accounting (see bench/lib/ep-rank.ts), normal mode (T=4096, H=7168, K=8, E=256: FP8 dispatch,
// BF16 combine) and low-latency mode (T=128), on 2 and 4 worker-thread ranks (shared-memory rings) and
// on 2 process ranks over loopback TCP; next to the memory-copy bandwidth measured in the same run.
// value = per-rank bytes / median per-rank time, averaged over ranks; ratio = value / copy bandwidth
// of as many threads as ranks (capped at 2, the cores of the reference machine).
import { copyBandwidthGBs } from './lib/bandwidth.ts';
import { median, type BenchReport, type BenchRow } from './lib/report.ts';
import { launchProcessRanks, launchThreadRanks, type RankOutcome } from '../src/parallel/deepep/launch.ts';
import type { EpBenchParams, EpBenchResult } from './lib/ep-rank.ts';

const RANK = new URL('./lib/ep-rank.ts', import.meta.url);

function arg(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

async function runGroup(transport: 'thread' | 'process', R: number, p: EpBenchParams): Promise<EpBenchResult[]> {
  const timeoutMs = 300_000;
  const { group } = transport === 'thread'
    ? launchThreadRanks(RANK, R, p, { capacity: 16 << 20, timeoutMs })
    : launchProcessRanks(RANK, R, p, { timeoutMs });
  try {
    const outcomes: RankOutcome[] = await group.outcomes;
    return outcomes.map((o) => {
      if (!o.ok) throw new Error(`${transport} rank ${o.rank}: ${o.error.name}: ${o.error.message}`);
      return o.value as EpBenchResult;
    });
  } finally {
    await group.close();
  }
}

export default async function epBench(args: string[]): Promise<BenchReport> {
  const quick = args.includes('--quick');
  const reps = Number(arg(args, '--reps') ?? (quick ? 2 : 5));
  const H = quick ? 1024 : 7168;
  const normal = { mode: 'normal', T: quick ? 512 : 4096, H, K: 8, E: 256, reps } as const;
  const ll = { mode: 'low-latency', T: 128, H, K: 8, E: 256, reps } as const;
  const copy1 = await copyBandwidthGBs(1);
  const copy2 = await copyBandwidthGBs(2);
  const rows: BenchRow[] = [];
  const configs: [('thread' | 'process'), number][] = [['thread', 2], ['thread', 4], ['process', 2]];
  for (const p of [normal, ll] as EpBenchParams[]) {
    for (const [transport, R] of configs) {
      const res = await runGroup(transport, R, p);
      const gbs = (bytes: (r: EpBenchResult) => number, secs: (r: EpBenchResult) => number[]): number =>
        res.reduce((a, r) => a + bytes(r) / median(secs(r)) / 1e9, 0) / res.length;
      const us = (secs: (r: EpBenchResult) => number[]): number => median(res.map((r) => median(secs(r)))) * 1e6;
      const base = R >= 2 ? copy2 : copy1;
      const name = `${p.mode} T=${p.T} H=${p.H} K=${p.K} E=${p.E} ${transport === 'thread' ? 'threads' : 'processes'}=${R}`;
      const d = gbs((r) => r.dispatchBytes, (r) => r.dispatchSeconds);
      const c = gbs((r) => r.combineBytes, (r) => r.combineSeconds);
      rows.push(
        { case: `${name} dispatch${p.mode === 'normal' ? ' fp8' : ' (fp8 cast inside)'}`, threads: R, metric: 'bandwidth', value: d, unit: 'GB/s', ratio: d / base },
        { case: `${name} combine bf16`, threads: R, metric: 'bandwidth', value: c, unit: 'GB/s', ratio: c / base },
        { case: `${name} dispatch`, threads: R, metric: 'latency', value: us((r) => r.dispatchSeconds), unit: 'us', ratio: null },
        { case: `${name} combine`, threads: R, metric: 'latency', value: us((r) => r.combineSeconds), unit: 'us', ratio: null },
      );
    }
  }
  return {
    bench: 'ep',
    baseline: { copy_1thread_GBps: copy1, copy_2threads_GBps: copy2 },
    rows,
    notes: [
      'bytes as DeepEP tests count them: normal = received rows x (H + H/32) (FP8) / 2H (BF16); low latency = selections x (H + H/32 + 16) / (2H + 16)',
      `median of ${reps} runs per rank after one warm-up; ranks share the machine's cores`,
    ],
  };
}
