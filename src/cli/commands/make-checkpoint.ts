// `seekd make-checkpoint`: writes a synthetic checkpoint of a real model's shape (a preset's published
// config.json, or any config.json) — published tensor names, shapes, dtypes and shard layout, random
// (seeded) or sparse zero values — plus tokenizer files, so that the directory loads and serves like a
// downloaded one. See src/model/synthetic.ts.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { UsageError } from '../errors.ts';
import { nonNegativeInt, positiveInt } from '../model-args.ts';
import { ProgressBar } from '../progress.ts';
import { isPreset, presetConfig, presetShards, presetStorage, PRESETS } from '../../model/presets.ts';
import { planCheckpoint, writeSyntheticCheckpoint, type StorageDType, type SyntheticOptions, type SyntheticSummary } from '../../model/synthetic.ts';
import { buildTokenizerFiles } from '../../engine/builtin/tokenizer-files.ts';

interface MakeCheckpointCliOptions {
  preset?: string;
  config?: string;
  out: string;
  dtype?: string;
  fill: string;
  seed: string;
  layers?: string;
  shards?: string;
  mtp: boolean;
  tokenizerDir?: string;
  force?: boolean;
  json?: boolean;
}

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'];

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read --config ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--config ${path} is not JSON: ${(e as Error).message.replace(/\s+/g, ' ')}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new UsageError(`--config ${path} must hold a JSON object`);
  return json as Record<string, unknown>;
}

/** Tokenizer files to put next to the weights: copied from `dir`, or seekd's built-in BPE sized to the vocabulary. */
function tokenizerFiles(dir: string | undefined, vocabSize: number, maxLen: number): { files: Record<string, string | Uint8Array>; note?: string } {
  if (dir !== undefined) {
    if (!existsSync(join(dir, 'tokenizer.json'))) throw new UsageError(`--tokenizer-dir ${dir} has no tokenizer.json`);
    const files: Record<string, Uint8Array> = {};
    for (const f of TOKENIZER_FILES) if (existsSync(join(dir, f))) files[f] = readFileSync(join(dir, f));
    return { files };
  }
  try {
    const tk = buildTokenizerFiles(vocabSize, maxLen);
    return {
      files: { 'tokenizer.json': JSON.stringify(tk.tokenizerJson), 'tokenizer_config.json': JSON.stringify(tk.tokenizerConfig, null, 2) + '\n' },
      note: `tokenizer: seekd's built-in byte-level BPE padded to ${vocabSize} ids (not the model's own; pass --tokenizer-dir for that)`,
    };
  } catch (e) {
    if (e instanceof RangeError) return { files: {}, note: `no tokenizer written: vocabulary ${vocabSize} is too small for the built-in one (${e.message})` };
    throw e;
  }
}

export function register(program: Command): void {
  program.command('make-checkpoint')
    .description('write a synthetic checkpoint with a real model\'s tensor names, shapes, dtypes and shards (random or sparse zero values)')
    .option('--preset <name>', `published config: ${PRESETS.join(', ')}`)
    .option('--config <file>', 'any DeepSeek-V2/V3 config.json instead of a preset')
    .requiredOption('--out <dir>', 'output directory (created; must be empty unless --force)')
    .option('--dtype <dtype>', 'storage of the linear weights: bf16 or fp8 (default: the preset\'s / the config\'s quantization_config)')
    .option('--fill <mode>', 'random (seeded values) or zeros (sparse files, nothing written)', 'random')
    .option('--seed <n>', 'seed of the random values', '0')
    .option('--layers <n>', 'override num_hidden_layers (a real width with fewer layers)')
    .option('--shards <n>', 'number of shard files (default: the published count, scaled to the bytes written)')
    .option('--no-mtp', 'leave out the MTP layers (config.json gets num_nextn_predict_layers 0)')
    .option('--tokenizer-dir <dir>', 'copy tokenizer.json / tokenizer_config.json from this directory (default: seekd\'s built-in tokenizer)')
    .option('--force', 'write into a non-empty output directory')
    .option('--json', 'print the summary as JSON')
    .action((opts: MakeCheckpointCliOptions) => {
      if ((opts.preset === undefined) === (opts.config === undefined)) throw new UsageError('give exactly one of --preset NAME or --config FILE');
      if (opts.preset !== undefined && !isPreset(opts.preset)) throw new UsageError(`unknown preset '${opts.preset}' (known: ${PRESETS.join(', ')})`);
      if (opts.dtype !== undefined && opts.dtype !== 'bf16' && opts.dtype !== 'fp8') throw new UsageError(`--dtype must be bf16 or fp8, got '${opts.dtype}'`);
      if (opts.fill !== 'random' && opts.fill !== 'zeros') throw new UsageError(`--fill must be random or zeros, got '${opts.fill}'`);
      const config = opts.preset !== undefined ? presetConfig(opts.preset) : readConfigFile(opts.config!);
      const lib: SyntheticOptions = {
        dtype: (opts.dtype as StorageDType | undefined) ?? (opts.preset !== undefined ? presetStorage(opts.preset).dtype : undefined),
        fill: opts.fill,
        seed: nonNegativeInt('seed', opts.seed),
        mtp: opts.mtp,
        force: opts.force ?? false,
      };
      if (opts.layers !== undefined) lib.layers = positiveInt('layers', opts.layers);
      if (opts.shards !== undefined) {
        lib.shards = positiveInt('shards', opts.shards);
      } else if (opts.preset !== undefined) {
        // Keep the published shard size: the published count, scaled by the bytes actually written
        // (exactly the published count for the unmodified preset).
        const published = planCheckpoint(presetConfig(opts.preset), { dtype: presetStorage(opts.preset).dtype, shards: 1 }).dataBytes;
        const mine = planCheckpoint(config, { ...lib, shards: 1 });
        lib.shards = Math.min(mine.tensors.length, Math.max(1, Math.round((presetShards(opts.preset) * mine.dataBytes) / published)));
      }
      const plan = planCheckpoint(config, lib);
      const tk = tokenizerFiles(opts.tokenizerDir, plan.config.vocab_size, plan.config.max_position_embeddings);
      lib.files = tk.files;
      if (!opts.json) {
        const bar = new ProgressBar(`writing ${(plan.dataBytes / 1e9).toFixed(2)} GB (${opts.fill})`);
        lib.onProgress = (done, total) => bar.update(Math.round(done / 1e6), Math.round(total / 1e6));
      }
      const s: SyntheticSummary = writeSyntheticCheckpoint(opts.out, config, lib);
      if (opts.json) {
        process.stdout.write(JSON.stringify({ ...s, tokenizer: tk.note ?? (opts.tokenizerDir ? `copied from ${opts.tokenizerDir}` : null) }) + '\n');
        return;
      }
      if (tk.note) process.stderr.write(tk.note + '\n');
      process.stdout.write(`${s.dir}: ${s.tensors} tensors in ${s.shards} shard${s.shards === 1 ? '' : 's'} (${s.dtype}, ${s.fill}), `
        + `${(s.dataBytes / 1e9).toFixed(3)} GB of tensors in ${s.seconds.toFixed(2)} s`
        + `${s.fill === 'random' ? ` (${s.mbPerSec.toFixed(0)} MB/s)` : ' (sparse)'}\n`);
    });
}
