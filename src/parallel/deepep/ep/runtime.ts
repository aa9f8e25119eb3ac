// Expert-parallel inference: the model runs on the calling thread (rank 0, which also holds the first
// block of expert slots); R - 1 worker threads hold the other slots, each loading only its own experts
// from the checkpoint. The model's MoE goes through `executor` (model/moe.ts MoeExecutor): per layer,
// rank 0 tells the expert ranks what comes, maps the router's logical experts to physical slots (EPLB
// replicas when loads are given), and every rank runs the same DeepEP dispatch -> DeepGEMM grouped
// GEMMs -> combine sequence (step.ts). The model's forward pass is synchronous, so rank 0 uses the
// blocking shared-memory transport; a dead or silent expert rank surfaces as RankFailedError within
// `timeoutMs`.
// Reference: DeepSeek's inference system (open-infra-index day 6): EP for the routed experts, normal
// DeepEP kernels for prefill, low-latency ones for decode, two micro-batches to overlap communication.
import type { Kernels } from '../../../kernels/api.ts';
import { refDeepGemm, type DeepGemmOps } from '../../../kernels/deepgemm/index.ts';
import { WasmDeepGemm } from '../../../kernels/deepgemm/wasm.ts';
import { loadConfig, type DeepseekConfig } from '../../../model/config.ts';
import type { MoeExecutor, MoeExecutorFactory } from '../../../model/moe.ts';
import { Buffer } from '../buffer.ts';
import { launchThreadRanks, type RankGroup, type RankOutcome } from '../launch.ts';
import type { SyncThreadCommunicator } from '../shm.ts';
import { loadRankExperts, type LayerExperts } from './experts.ts';
import { placeExperts, rankSlots, toPhysical, type ExpertPlacement } from './placement.ts';
import { CMD_MOE, CMD_STOP, encodeCommand, MODE_LOW_LATENCY, MODE_NORMAL, type EpExpertBackend, type ExpertRankData } from './protocol.ts';
import { moeStepSync } from './step.ts';

export type EpMode = 'auto' | 'normal' | 'low-latency';

export interface ExpertParallelOptions {
  /** Ranks (threads) in all, rank 0 being the caller. */
  ranks: number;
  /** 'auto' (default): low-latency for batches of at most maxTokensPerRank tokens (decode), normal otherwise. */
  mode?: EpMode;
  /** 2 splits each low-latency step into two micro-batches whose communication and compute overlap. */
  microBatches?: 1 | 2;
  /** Capacity of the low-latency layout per source rank (DeepEP's num_max_dispatch_tokens_per_rank); default 128. */
  maxTokensPerRank?: number;
  /** Per-MoE-layer expert loads: replicate and place experts with EPLB. */
  expertLoads?: number[][];
  /** Extra physical slots with expertLoads (default: one per rank). */
  redundantExperts?: number;
  /** How long rank 0 waits for a silent expert rank (default 30 s). */
  timeoutMs?: number;
  /** How long the expert ranks may take to start and load their experts (default max(60 s, timeoutMs)). */
  startupTimeoutMs?: number;
  /**
   * DeepGEMM that runs the routed experts on every rank: 'wasm' (default; each rank its own 1-thread
   * runtime with its experts in wasm memory) or 'ref' (the plain TypeScript reference).
   */
  backend?: EpExpertBackend;
}

export interface EpStats {
  normalSteps: number;
  lowLatencySteps: number;
  microBatchedSteps: number;
}

export class ExpertParallel {
  readonly stats: EpStats = { normalSteps: 0, lowLatencySteps: 0, microBatchedSteps: 0 };
  #closed = false;

  private constructor(
    readonly config: DeepseekConfig,
    readonly placement: ExpertPlacement,
    readonly opts: Required<Pick<ExpertParallelOptions, 'ranks' | 'mode' | 'microBatches' | 'maxTokensPerRank' | 'timeoutMs'>>,
    /** Rank 0's DeepGEMM (its experts live in its memory for 'wasm'). */
    readonly gemm: DeepGemmOps,
    readonly comm: SyncThreadCommunicator,
    readonly group: RankGroup,
    readonly experts: Map<number, LayerExperts>,
  ) {}

  /** Starts the expert ranks and loads every rank's experts; resolves when all are ready. */
  static async start(modelDir: string, o: ExpertParallelOptions): Promise<ExpertParallel> {
    const config = loadConfig(modelDir);
    const R = o.ranks;
    if (!Number.isInteger(R) || R < 1) throw new RangeError(`ranks must be a positive integer, got ${R}`);
    const placement = placeExperts(config, R, o.expertLoads, o.redundantExperts);
    const opts = {
      ranks: R, mode: o.mode ?? 'auto', microBatches: o.microBatches ?? 1, maxTokensPerRank: o.maxTokensPerRank ?? 128,
      timeoutMs: o.timeoutMs ?? 30_000,
    } as const;
    const backend = o.backend ?? 'wasm';
    const data: ExpertRankData = {
      modelDir, backend, hidden: config.hidden_size, moeInter: config.moe_intermediate_size!, numTopk: config.num_experts_per_tok!,
      numPhysical: placement.numPhysical, maxTokensPerRank: opts.maxTokensPerRank,
      phy2log: [...placement.layers].map(([l, lp]) => [l, Array.from(lp.phy2log)]),
    };
    // Ring size: one low-latency message (f32 rows) per pair fits, so sends never wait on a busy receiver.
    const llBytes = opts.maxTokensPerRank * config.num_experts_per_tok! * (4 * config.hidden_size + 4) + 4096;
    const { group, comm } = launchThreadRanks(new URL('./worker.ts', import.meta.url), R, data, {
      callerIsRank0: true, syncRank0: true, timeoutMs: opts.timeoutMs, capacity: Math.min(64 << 20, Math.max(1 << 20, llBytes)),
    });
    const sync = comm as SyncThreadCommunicator;
    let wasm: WasmDeepGemm | null = null;
    try {
      const ready = new Set<number>();
      await new Promise<void>((resolve, reject) => {
        if (R === 1) return resolve();
        const startup = o.startupTimeoutMs ?? Math.max(60_000, opts.timeoutMs);
        const timer = setTimeout(() => reject(new Error(`expert ranks not ready after ${startup} ms`)), startup);
        group.on('signal', (r: number, v: unknown) => {
          if (v !== 'ready') return;
          ready.add(r);
          if (ready.size === R - 1) {
            clearTimeout(timer);
            resolve();
          }
        });
        group.on('outcome', (o: RankOutcome) => {
          clearTimeout(timer);
          reject(new Error(`expert rank ${o.rank} stopped while loading: ${o.ok ? 'exited' : `${o.error.name}: ${o.error.message}`}`));
        });
      });
      wasm = backend === 'wasm' ? await WasmDeepGemm.create(1) : null;
      const experts = loadRankExperts(modelDir, config.hidden_size, config.moe_intermediate_size!, rankSlots(placement, 0), wasm ?? undefined);
      return new ExpertParallel(config, placement, opts, wasm ?? refDeepGemm, sync, group, experts);
    } catch (e) {
      await wasm?.dispose();
      await sync.close();
      await group.close();
      throw e;
    }
  }

  /** The executor factory to pass as DeepseekModel.load(dir, kernels, { moe }). */
  get factory(): MoeExecutorFactory {
    return (ctx) => this.executor(ctx.kernels);
  }

  executor(kernels: Kernels): MoeExecutor {
    const buf = new Buffer(this.comm);
    const K = this.config.num_experts_per_tok!;
    const H = this.config.hidden_size;
    return {
      run: (layer, x, T, topkIdx, topkWeights) => {
        if (this.#closed) throw new Error('expert-parallel runtime is closed');
        const lp = this.placement.layers.get(layer);
        if (!lp) throw new Error(`layer ${layer} is not an MoE layer`);
        const mode = this.opts.mode === 'auto' ? (T <= this.opts.maxTokensPerRank ? 'low-latency' : 'normal') : this.opts.mode;
        if (mode === 'low-latency' && T > this.opts.maxTokensPerRank) {
          throw new RangeError(`${T} tokens exceed the low-latency capacity of ${this.opts.maxTokensPerRank} per rank`);
        }
        const mb = mode === 'low-latency' && this.opts.microBatches === 2 && T >= 2 ? 2 : 1;
        const tag = this.comm.nextTag();
        for (let r = 1; r < this.opts.ranks; r++) this.comm.isend(r, tag, [encodeCommand(CMD_MOE, layer, mode === 'normal' ? MODE_NORMAL : MODE_LOW_LATENCY, mb)], 'ep_command');
        if (mode === 'normal') this.stats.normalSteps++;
        else this.stats.lowLatencySteps++;
        if (mb === 2) this.stats.microBatchedSteps++;
        return moeStepSync({
          buf, gemm: this.gemm, kernels, experts: this.experts.get(layer), hidden: H, numTopk: K,
          numPhysical: this.placement.numPhysical, maxTokensPerRank: this.opts.maxTokensPerRank,
        }, mode, mb, { x: x.subarray(0, T * H), T, topk: toPhysical(lp, topkIdx, T, K), weights: topkWeights });
      },
    };
  }

  /** Stops the expert ranks (bounded by timeoutMs) and frees threads and shared buffers. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      const tag = this.comm.nextTag();
      for (let r = 1; r < this.opts.ranks; r++) this.comm.isend(r, tag, [encodeCommand(CMD_STOP)], 'ep_command');
      // Let the queued stop messages out (waitAll with no sources only pushes the sends).
      this.comm.waitAll([], tag, 'ep_stop');
      await Promise.race([this.group.outcomes, new Promise((r) => setTimeout(r, this.opts.timeoutMs).unref())]);
    } catch {
      // A rank already gone: nothing to stop there.
    } finally {
      await this.comm.close();
      await this.group.close();
      if (this.gemm instanceof WasmDeepGemm) await this.gemm.dispose();
    }
  }
}
