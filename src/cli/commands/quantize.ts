// `seekd quantize`: writes a DeepSeek-native FP8 checkpoint (e4m3 codes + 128x128 F32 block scales,
// as DeepSeek-V3 publishes) from a BF16 / F16 / F32 one, so that a model is quantized once instead of
// at every `--quantize fp8` load. See src/model/quantize-checkpoint.ts.
import type { Command } from 'commander';
import { UsageError } from '../errors.ts';
import { ProgressBar } from '../progress.ts';
import { writeFp8Checkpoint, type QuantizeCheckpointSummary } from '../../model/quantize-checkpoint.ts';

interface QuantizeCliOptions {
  model: string;
  out: string;
  force?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  program.command('quantize')
    .description('write the FP8 (e4m3, 128x128 block scales) version of a BF16/F16/F32 checkpoint, in DeepSeek-V3\'s layout')
    .requiredOption('--model <dir>', 'input model directory (HF layout: config.json + safetensors)')
    .requiredOption('--out <dir>', 'output directory (must not exist, or be empty, unless --force)')
    .option('--force', 'replace an existing output directory')
    .option('--json', 'print the summary as one JSON object')
    .action((opts: QuantizeCliOptions) => {
      if (opts.model.length === 0 || opts.out.length === 0) throw new UsageError('--model and --out must be non-empty paths');
      const bar = opts.json ? undefined : new ProgressBar('quantizing (MB of input)');
      const s: QuantizeCheckpointSummary = writeFp8Checkpoint(opts.model, opts.out, {
        force: opts.force ?? false,
        onProgress: bar ? (done, total) => bar.update(Math.round(done / 1e6), Math.round(total / 1e6)) : undefined,
      });
      if (opts.json) {
        process.stdout.write(JSON.stringify(s) + '\n');
        return;
      }
      process.stdout.write(`${s.dir}: ${s.quantized} of ${s.tensors} tensors quantized to FP8, `
        + `${(s.bytesIn / 1e6).toFixed(1)} MB -> ${(s.bytesOut / 1e6).toFixed(1)} MB in ${s.seconds.toFixed(2)} s\n`);
    });
}
