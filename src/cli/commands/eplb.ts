// `seekd eplb`: runs the expert-parallelism load balancer on a JSON file of expert loads.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from '../errors.ts';
import { rebalanceExperts, EplbArgumentError, gpuLoads, imbalance, contiguousGpuLoads, policyOf } from '../../parallel/eplb/eplb.ts';

function positiveInt(name: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got '${v}'`);
  return n;
}

export function register(program: Command): void {
  program
    .command('eplb')
    .description('balance routed experts over GPUs (DeepSeek EPLB): replicate hot experts and place the replicas')
    .requiredOption('--weights <file>', 'JSON file: [[load of each logical expert] per MoE layer]')
    .requiredOption('--replicas <n>', 'physical expert slots in total (multiple of --gpus)')
    .requiredOption('--groups <n>', 'expert groups (hierarchical policy when a multiple of --nodes)')
    .requiredOption('--nodes <n>', 'server nodes')
    .requiredOption('--gpus <n>', 'GPUs in total (multiple of --nodes)')
    .option('--json', 'print {"phy2log", "log2phy", "logcnt"} as JSON')
    .action((opts: { weights: string; replicas: string; groups: string; nodes: string; gpus: string; json?: boolean }) => {
      const R = positiveInt('replicas', opts.replicas);
      const G = positiveInt('groups', opts.groups);
      const N = positiveInt('nodes', opts.nodes);
      const M = positiveInt('gpus', opts.gpus);
      let text: string;
      try {
        text = readFileSync(opts.weights, 'utf8');
      } catch (e) {
        throw new UsageError(`cannot read --weights file '${opts.weights}': ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
      let weight: unknown;
      try {
        weight = JSON.parse(text);
      } catch (e) {
        throw new UsageError(`--weights file '${opts.weights}' is not valid JSON: ${(e as Error).message}`);
      }
      let plan;
      try {
        plan = rebalanceExperts(weight as number[][], R, G, N, M);
      } catch (e) {
        if (e instanceof EplbArgumentError) throw new UsageError(e.message);
        throw e;
      }
      if (opts.json) {
        process.stdout.write(JSON.stringify(plan) + '\n');
        return;
      }
      const w = weight as number[][];
      const perGpu = R / M;
      const lines: string[] = [`policy: ${policyOf(G, N)}; ${w[0]!.length} experts, ${R} slots, ${M} GPUs on ${N} nodes (${perGpu} slots per GPU)`];
      w.forEach((row, l) => {
        const after = gpuLoads(row, plan.phy2log[l]!, plan.logcnt[l]!, M);
        const before = contiguousGpuLoads(row, M);
        lines.push('', `layer ${l}`);
        for (let g = 0; g < M; g++) {
          const slots = plan.phy2log[l]!.slice(g * perGpu, (g + 1) * perGpu);
          const node = Math.floor(g / (M / N));
          const desc = slots.map((e) => (plan.logcnt[l]![e]! > 1 ? `${e}(1/${plan.logcnt[l]![e]})` : `${e}`)).join(' ');
          lines.push(`  gpu ${String(g).padStart(3)}  node ${String(node).padStart(2)}  load ${after[g]!.toFixed(1).padStart(10)}  experts ${desc}`);
        }
        lines.push(`  balance (max/mean GPU load): before ${imbalance(before).toFixed(3)} (no replication, contiguous), after ${imbalance(after).toFixed(3)}`);
      });
      process.stdout.write(lines.join('\n') + '\n');
    });
}
