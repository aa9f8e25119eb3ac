// Expert-parallel options for the model commands: --ep R runs the routed experts on R thread ranks
// through the DeepEP port (src/parallel/deepep/ep), optionally placed by EPLB from --expert-loads.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from './errors.ts';
import { positiveInt } from './model-args.ts';
import { ExpertParallel, type EpMode, type ExpertParallelOptions } from '../parallel/deepep/ep/runtime.ts';
import { PlacementError } from '../parallel/deepep/ep/placement.ts';
import { EplbArgumentError } from '../parallel/eplb/eplb.ts';

export interface EpCliOptions {
  model: string;
  /** The model's --backend: the routed experts follow it (wasm -> wasm DeepGEMM, otherwise the reference). */
  backend?: string;
  ep?: string;
  epMode?: string;
  microBatches?: string;
  expertLoads?: string;
  redundantExperts?: string;
}

export function epOptions(cmd: Command): Command {
  return cmd
    .option('--ep <ranks>', 'expert parallelism: run the routed experts on this many thread ranks (DeepEP port)')
    .option('--ep-mode <mode>', 'with --ep: auto (low-latency for small batches, normal otherwise), normal or low-latency', 'auto')
    .option('--micro-batches <n>', 'with --ep: 2 overlaps the communication of one micro-batch with the other\'s compute (low-latency mode)', '1')
    .option('--expert-loads <file>', 'with --ep: JSON [[load per expert] per MoE layer]; places replicated experts with EPLB')
    .option('--redundant-experts <n>', 'with --expert-loads: extra expert slots in all (default: one per rank)');
}

/** The validated --ep options (null without --ep): usage errors before anything starts. */
export function parseEp(o: Omit<EpCliOptions, 'model'>): ExpertParallelOptions | null {
  if (o.ep === undefined) {
    if (o.expertLoads !== undefined) throw new UsageError('--expert-loads needs --ep');
    return null;
  }
  const ranks = positiveInt('ep', o.ep);
  const mode = (o.epMode ?? 'auto') as EpMode;
  if (!['auto', 'normal', 'low-latency'].includes(mode)) throw new UsageError(`--ep-mode must be auto, normal or low-latency, got '${o.epMode}'`);
  const mb = o.microBatches ?? '1';
  if (mb !== '1' && mb !== '2') throw new UsageError(`--micro-batches must be 1 or 2, got '${mb}'`);
  let expertLoads: number[][] | undefined;
  if (o.expertLoads !== undefined) {
    try {
      expertLoads = JSON.parse(readFileSync(o.expertLoads, 'utf8')) as number[][];
    } catch (e) {
      throw new UsageError(`cannot read --expert-loads '${o.expertLoads}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  const redundantExperts = o.redundantExperts === undefined ? undefined : Number(o.redundantExperts);
  if (redundantExperts !== undefined && !(Number.isInteger(redundantExperts) && redundantExperts >= 0)) {
    throw new UsageError(`--redundant-experts must be a non-negative integer, got '${o.redundantExperts}'`);
  }
  const backend = o.backend === 'wasm' ? 'wasm' : 'ref';
  return { ranks, mode, microBatches: mb === '2' ? 2 : 1, expertLoads, redundantExperts, backend };
}

/** Starts the expert ranks from parsed options (placement errors are usage errors). */
export async function startEpRanks(modelDir: string, opts: ExpertParallelOptions): Promise<ExpertParallel> {
  try {
    return await ExpertParallel.start(modelDir, opts);
  } catch (e) {
    if (e instanceof PlacementError || e instanceof EplbArgumentError) throw new UsageError(e.message);
    throw e;
  }
}

/** Starts the expert ranks when --ep is given (null otherwise). */
export async function startEp(o: EpCliOptions): Promise<ExpertParallel | null> {
  const opts = parseEp(o);
  return opts ? startEpRanks(o.model, opts) : null;
}
