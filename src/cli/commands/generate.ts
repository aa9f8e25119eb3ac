// `seekd generate`: prefill token ids and decode --max-tokens more, greedily or by seeded sampling.
import type { Command } from 'commander';
import { generate } from '../../model/generate.ts';
import { checkModelDir, checkVocab, modelOptions, nonNegativeInt, openModel, parseAttn, parseIds, rowToJson, type ModelCliOptions } from '../model-args.ts';
import { UsageError } from '../errors.ts';
import { epOptions, startEp, type EpCliOptions } from '../ep-args.ts';
import { ChromeTraceRecorder } from '../../parallel/trace/chrome-trace.ts';

interface GenerateCliOptions extends ModelCliOptions, EpCliOptions {
  ids?: string; maxTokens: string; temperature: string; seed?: string; json?: boolean; trace?: string;
}

export function register(program: Command): void {
  epOptions(modelOptions(program.command('generate').description('generate token ids from a prompt of token ids')))
    .requiredOption('--ids <list>', 'comma-separated prompt token ids, e.g. 0,5,17')
    .option('--max-tokens <n>', 'tokens to generate', '16')
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', '0')
    .option('--seed <s>', 'sampling seed', '0')
    .option('--json', 'print {"ids": [...], "logits": [[...] per generated token]}')
    .option('--trace <file>', 'write a Chrome trace (Perfetto, chrome://tracing) with per-layer attention / MoE spans')
    .action(async (opts: GenerateCliOptions) => {
      const ids = parseIds(opts.ids);
      const attn = parseAttn(opts.attn);
      const maxTokens = nonNegativeInt('max-tokens', opts.maxTokens);
      const temperature = Number(opts.temperature);
      if (opts.temperature.trim() === '' || !Number.isFinite(temperature) || temperature < 0) {
        throw new UsageError(`--temperature must be a number >= 0, got '${opts.temperature}'`);
      }
      const seed = nonNegativeInt('seed', opts.seed ?? '0');
      // The expert-parallel ranks read their experts as stored (parallel/deepep/ep/experts.ts).
      if (opts.ep !== undefined && opts.quantize !== undefined) throw new UsageError('--quantize cannot be combined with --ep yet (the expert ranks load experts as stored)');
      checkModelDir(opts.model);
      const ep = await startEp(opts);
      const size = { maxModelLen: ids.length + maxTokens, maxBatchTokens: ids.length };
      const { model, kernels } = await openModel(opts, ep ? { moe: ep.factory, routedExperts: false } : {}, size).catch(async (e: unknown) => {
        await ep?.close();
        throw e;
      });
      try {
        checkVocab(ids, model.config.vocab_size);
        const t0 = performance.now();
        const rec = opts.trace ? new ChromeTraceRecorder({ processName: 'seekd generate' }) : null;
        const run = () => generate(model, ids, { maxTokens, temperature, seed, attn, tracer: rec ?? undefined });
        const r = rec ? rec.span('generate', 'compute', run, { prompt: ids.length, maxTokens }) : run();
        if (rec) rec.writeFile(opts.trace!, { command: 'generate', backend: kernels.backend, threads: kernels.threads });
        const ms = performance.now() - t0;
        if (opts.json) {
          process.stdout.write(JSON.stringify({ ids: r.ids, logits: r.logits.map(rowToJson) }) + '\n');
        } else {
          process.stdout.write(`${r.ids.join(',')}\n`);
          process.stderr.write(`generated ${r.ids.length} tokens from ${ids.length} prompt tokens in ${(ms / 1000).toFixed(2)} s (${kernels.backend}, ${kernels.threads} thread${kernels.threads > 1 ? 's' : ''}, ${attn} MLA)\n`);
        }
      } finally {
        model.close();
        await kernels.dispose();
        await ep?.close();
      }
    });
}
