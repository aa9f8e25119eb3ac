// `seekd train`: trains a DeepSeek-V3-architecture model from a config and a data directory
// (src/training/run.ts): AdamW with warm-up and cosine decay, gradient clipping, seeded; PP 1 on this
// thread or a DualPipeV / DualPipe / 1F1B pipeline over worker threads (same losses to the bit);
// a progress line on stderr, train-log.jsonl, loss.svg and a Hugging Face checkpoint in --out that
// `seekd serve --model DIR` loads; --resume continues a run bit for bit.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { UsageError } from '../errors.ts';
import { progressLine } from '../../training/report.ts';
import { DEFAULT_RUN, runTraining, type RunOptions } from '../../training/run.ts';

interface TrainCliOptions {
  config?: string; data?: string; out: string; steps?: string; until?: string; pp?: string; schedule?: string; chunks?: string;
  microBatch?: string; seqLen?: string; lr?: string; minLr?: string; warmup?: string; clip?: string; weightDecay?: string;
  biasSpeed?: string; mtpLambda?: string; balanceAlpha?: string; seed?: string; initStd?: string; saveEvery?: string;
  evalEvery?: string; evalWindows?: string; resume?: boolean; json?: boolean; progress?: boolean; fp8?: boolean;
}

const NUMERIC: Array<[keyof TrainCliOptions & keyof RunOptions, 'int' | 'num']> = [
  ['steps', 'int'], ['pp', 'int'], ['chunks', 'int'], ['microBatch', 'int'], ['seqLen', 'int'], ['lr', 'num'], ['minLr', 'num'],
  ['warmup', 'int'], ['clip', 'num'], ['weightDecay', 'num'], ['biasSpeed', 'num'], ['mtpLambda', 'num'], ['balanceAlpha', 'num'],
  ['seed', 'int'], ['initStd', 'num'], ['saveEvery', 'int'], ['evalEvery', 'int'], ['evalWindows', 'int'],
];

function num(name: string, v: string, kind: 'int' | 'num'): number {
  const x = Number(v);
  if (v.trim() === '' || !Number.isFinite(x) || (kind === 'int' && !Number.isInteger(x))) throw new UsageError(`--${name.replace(/[A-Z]/g, (m) => '-' + m.toLowerCase())} must be ${kind === 'int' ? 'an integer' : 'a number'}, got '${v}'`);
  return x;
}

/**
 * The run's options: defaults, then the config file's "train" section (when the file is
 * {"model": config.json, "train": {...}}; a plain config.json has none), then the flags.
 */
function buildOptions(o: TrainCliOptions): RunOptions {
  if (!o.config) throw new UsageError('--config FILE is required (a model config.json, or {"model": ..., "train": ...})');
  if (!o.data) throw new UsageError('--data DIR is required (tokenizer.json, tokenizer_config.json, train.jsonl [, val.jsonl])');
  let file: Record<string, unknown>;
  try {
    file = JSON.parse(readFileSync(o.config, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new UsageError(`--config '${o.config}': ${(e as Error).message}`);
  }
  const wrapped = typeof file.model === 'object' && file.model !== null;
  const configJson = (wrapped ? file.model : file) as Record<string, unknown>;
  const fromFile = (wrapped ? (file.train ?? {}) : {}) as Partial<RunOptions>;
  const r: RunOptions = { ...DEFAULT_RUN, steps: 100, ...fromFile, configJson, data: o.data } as RunOptions;
  for (const [k, kind] of NUMERIC) {
    const v = o[k];
    if (typeof v === 'string') (r as unknown as Record<string, number>)[k] = num(k, v, kind);
  }
  if (o.schedule !== undefined) r.schedule = o.schedule as RunOptions['schedule'];
  if (o.fp8) r.fp8 = true;
  return r;
}

export function register(program: Command): void {
  program.command('train').description('train a DeepSeek-V3-architecture model (PP 1 or DualPipeV / DualPipe / 1F1B over worker threads)')
    .requiredOption('--out <dir>', 'run directory: checkpoint (HF layout), trainer state, train-log.jsonl, loss.svg')
    .option('--config <file>', 'model config.json, or {"model": config, "train": options}')
    .option('--data <dir>', 'data directory: tokenizer.json, tokenizer_config.json, train.jsonl (or train.ids), val.jsonl')
    .option('--steps <n>', 'optimizer steps (the schedule length)')
    .option('--until <n>', 'stop after this step (and save); --resume continues')
    .option('--pp <n>', 'pipeline ranks (worker threads); 1 = this thread')
    .option('--schedule <kind>', 'pipeline schedule: dualpipev (2·PP stages), dualpipe (PP stages, mirrored), 1f1b')
    .option('--chunks <n>', 'micro-batches per step')
    .option('--micro-batch <n>', 'windows per micro-batch')
    .option('--seq-len <n>', 'positions per window (a window is seq-len + 1 tokens)')
    .option('--lr <x>', 'peak learning rate')
    .option('--min-lr <x>', 'learning rate at the end of the cosine')
    .option('--warmup <n>', 'linear warm-up steps')
    .option('--clip <x>', 'max global gradient norm (0: off)')
    .option('--weight-decay <x>', 'AdamW weight decay (matrices)')
    .option('--bias-speed <x>', 'router-bias update speed γ (auxiliary-loss-free balancing)')
    .option('--mtp-lambda <x>', 'MTP loss weight λ')
    .option('--balance-alpha <x>', 'sequence-wise balance-loss factor α')
    .option('--seed <n>', 'initialisation and data-order seed')
    .option('--init-std <x>', 'standard deviation of initial weights')
    .option('--save-every <n>', 'save the run state every N steps (0: at the end only)')
    .option('--eval-every <n>', 'held-out loss every N steps (0: at the end only)')
    .option('--eval-windows <n>', 'held-out windows per evaluation')
    .option('--fp8', 'FP8 mixed precision (DeepSeek-V3 §3.3): projections and experts through the DeepGEMM port')
    .option('--resume', 'continue the run saved in --out (its saved options; --data may name the moved data)')
    .option('--no-progress', 'no progress line on stderr')
    .option('--json', 'print a JSON summary on stdout at the end')
    .action(async (opts: TrainCliOptions) => {
      const until = opts.until !== undefined ? num('until', opts.until, 'int') : undefined;
      let given: RunOptions | null = null;
      if (!opts.resume) {
        if (existsSync(join(opts.out, 'trainer', 'state.json'))) throw new UsageError(`${opts.out} holds a run already: --resume it or choose another --out`);
        given = buildOptions(opts);
      }
      const err = process.stderr;
      const tty = err.isTTY === true;
      let t0 = 0, first = 0, total = 0, lastEval: number | null = null, every = 1;
      const summary = await runTraining(opts.out, given, { resume: opts.resume, until, data: opts.data }, {
        onStart: (i) => {
          t0 = performance.now(); first = i.startStep; total = i.steps;
          every = Math.max(1, Math.floor((total - first) / 50));
          if (opts.progress !== false) {
            err.write(`seekd train: ${i.params.toLocaleString('en-US')} parameters, ${i.trainTokens.toLocaleString('en-US')} training tokens, ${i.valTokens.toLocaleString('en-US')} held out; `
              + `${i.ranks === 1 ? 'PP 1' : `PP ${i.ranks} (${i.stages} stages)`}; wasm f32 GEMM peak ${i.peakGflops.toFixed(1)} GFLOP/s${i.startStep ? `; resuming after step ${i.startStep}` : ''}\n`);
          }
        },
        onEval: (e) => { lastEval = e.evalLoss; },
        onStep: (s) => {
          if (opts.progress === false) return;
          const elapsed = (performance.now() - t0) / 1000;
          const eta = (elapsed / (s.step - first)) * (total - s.step);
          const line = progressLine({ step: s.step, steps: total, loss: s.mainLoss, tokensPerSec: s.tokensPerSec, etaSec: eta, evalLoss: lastEval });
          if (tty) err.write(`\r${line}\x1b[K`);
          else if (s.step % every === 0 || s.step === total || s.step === until) err.write(line + '\n');
        },
      });
      if (tty && opts.progress !== false) err.write('\n');
      if (opts.json) process.stdout.write(JSON.stringify(summary) + '\n');
      else process.stdout.write(`step ${summary.steps}  loss ${summary.lastLoss.toFixed(4)}${summary.evalLoss !== null ? `  held-out ${summary.evalLoss.toFixed(4)}` : ''}  ${summary.meanTokensPerSec.toFixed(0)} tok/s  MFU ${(100 * summary.meanMfu).toFixed(1)}%${summary.bubble ? `  bubble ${summary.bubble.maxBubbleMs.toFixed(0)} ms of ${summary.bubble.makespanMs.toFixed(0)} (closed form ${summary.bubble.closedFormMs.toFixed(0)})` : ''}\n`);
    });
}
