// `seekd score`: logits of a token sequence (last position, or every position with --all-positions).
import type { Command } from 'commander';
import { LatentCache } from '../../model/latent-cache.ts';
import { checkVocab, forwardModelFor, modelOptions, openModel, parseAttn, parseIds, rowToJson, type ModelCliOptions } from '../model-args.ts';
import { UsageError } from '../errors.ts';
import { GpuDeepseekModel } from '../../model/gpu/forward.ts';

interface ScoreOptions extends ModelCliOptions { ids?: string; allPositions?: boolean; json?: boolean; stats?: boolean }

export function register(program: Command): void {
  modelOptions(program.command('score').description('print the next-token logits of a sequence of token ids'))
    .requiredOption('--ids <list>', 'comma-separated token ids, e.g. 0,5,17')
    .option('--all-positions', 'logits for every position, not only the last')
    .option('--json', 'print {"logits": [...]} (an array of rows with --all-positions)')
    .option('--stats', 'print "stats: {json}" to stderr: backend, wasm memories, load seconds, resident and peak RSS after loading')
    .action(async (opts: ScoreOptions) => {
      const ids = parseIds(opts.ids);
      const attn = parseAttn(opts.attn);
      if (opts.backend === 'webgpu' && attn !== 'absorb') throw new UsageError('--backend webgpu computes absorbed MLA only (--attn naive is a CPU check)');
      const t0 = performance.now();
      const { model, kernels } = await openModel(opts, {}, { maxModelLen: ids.length, maxBatchTokens: ids.length });
      // Peak RSS so far is the peak while loading (the forward has not run yet).
      const stats = opts.stats ? {
        backend: kernels.backend, threads: kernels.threads, ...kernels.memoryStats(), load_s: (performance.now() - t0) / 1000,
        rss_after_load: process.memoryUsage().rss, peak_rss: process.resourceUsage().maxRSS * 1024,
      } : null;
      let closeFwd = () => {};
      try {
        const V = model.config.vocab_size;
        checkVocab(ids, V);
        // --backend webgpu: the GPU-resident forward (the CPU model's own otherwise).
        const { fwd, close } = await forwardModelFor(model, kernels, attn);
        closeFwd = close;
        if (stats) {
          // webgpu: what the upload put on the GPU (weights in stored format: FP8 one byte per parameter).
          const report = fwd instanceof GpuDeepseekModel ? fwd.weightReport : null;
          const gpu = report ? {
            gpu_weight_bytes: report.reduce((a, r) => a + r.data + r.scales, 0),
            gpu_fp8_params: report.filter((r) => r.dtype === 'fp8').reduce((a, r) => a + r.params, 0),
            gpu_fp8_code_bytes: report.filter((r) => r.dtype === 'fp8').reduce((a, r) => a + r.data, 0),
          } : {};
          process.stderr.write(`stats: ${JSON.stringify({ ...stats, ...gpu })}\n`);
        }
        const numBlocks = LatentCache.blocksFor(ids.length);
        const cache = fwd.createCache(numBlocks);
        const blockTable = Int32Array.from({ length: numBlocks }, (_, i) => i);
        const logits = await fwd.forward({ tokens: Int32Array.from(ids), seqs: [{ blockTable, numCached: 0, numNew: ids.length }] }, cache, {
          attn, allPositions: !!opts.allPositions,
        });
        const rows = opts.allPositions ? ids.map((_, i) => rowToJson(logits.subarray(i * V, (i + 1) * V))) : null;
        if (opts.json) {
          process.stdout.write(JSON.stringify({ logits: rows ?? rowToJson(logits) }) + '\n');
        } else {
          const show = (r: Float32Array, i: number) => {
            let best = 0;
            for (let j = 1; j < r.length; j++) if (r[j]! > r[best]!) best = j;
            return `position ${i}: argmax ${best} (logit ${r[best]!.toFixed(4)})`;
          };
          const lines = opts.allPositions ? ids.map((_, i) => show(logits.subarray(i * V, (i + 1) * V), i)) : [show(logits, ids.length - 1)];
          process.stdout.write(lines.join('\n') + '\n');
        }
      } finally {
        closeFwd();
        model.close();
        await kernels.dispose();
      }
    });
}

export { UsageError };
