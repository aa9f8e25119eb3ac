// `seekd generate`: prefill token ids and decode --max-tokens more, greedily or by seeded sampling,
// optionally with MTP speculative decoding (--speculative mtp [--num-speculative-tokens K]).
import type { Command } from 'commander';
import { generate } from '../../model/generate.ts';
import { checkModelDir, checkVocab, forwardModelFor, modelOptions, nonNegativeInt, openModel, parseAttn, parseIds, rowToJson, type ModelCliOptions } from '../model-args.ts';
import { generateAsync } from '../../model/forward-model.ts';
import { GpuDeepseekModel } from '../../model/gpu/forward.ts';
import { generateSpeculativeGpu } from '../../model/gpu/speculative.ts';
import { UsageError } from '../errors.ts';
import { epOptions, startEp, type EpCliOptions } from '../ep-args.ts';
import { ChromeTraceRecorder } from '../../parallel/trace/chrome-trace.ts';

interface GenerateCliOptions extends ModelCliOptions, EpCliOptions {
  ids?: string; maxTokens: string; temperature: string; seed?: string; json?: boolean; trace?: string;
  speculative?: string; numSpeculativeTokens?: string;
}

export function register(program: Command): void {
  epOptions(modelOptions(program.command('generate').description('generate token ids from a prompt of token ids')))
    .requiredOption('--ids <list>', 'comma-separated prompt token ids, e.g. 0,5,17')
    .option('--max-tokens <n>', 'tokens to generate', '16')
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', '0')
    .option('--seed <s>', 'sampling seed', '0')
    .option('--speculative <method>', "speculative decoding: 'mtp' (the checkpoint's MTP module drafts, the model verifies)")
    .option('--num-speculative-tokens <k>', 'tokens drafted per step with --speculative (default 1)')
    .option('--json', 'print {"ids": [...], "logits": [[...] per generated token]} (and "spec": {"drafted", "accepted"} with --speculative)')
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
      if (opts.speculative !== undefined && opts.speculative !== 'mtp') throw new UsageError(`--speculative must be mtp, got '${opts.speculative}'`);
      if (opts.numSpeculativeTokens !== undefined && opts.speculative === undefined) throw new UsageError('--num-speculative-tokens needs --speculative mtp');
      const numSpec = opts.speculative ? nonNegativeInt('num-speculative-tokens', opts.numSpeculativeTokens ?? '1') : 0;
      if (opts.speculative && numSpec < 1) throw new UsageError('--num-speculative-tokens must be >= 1');
      // The expert-parallel ranks hold the decoder layers' experts, not the MTP module's.
      if (opts.speculative && opts.ep !== undefined) throw new UsageError('--speculative cannot be combined with --ep yet (the expert ranks do not hold the MTP module\'s experts)');
      const speculative = opts.speculative ? { method: 'mtp' as const, numSpeculativeTokens: numSpec } : undefined;
      // The expert-parallel ranks read their experts as stored (parallel/deepep/ep/experts.ts).
      if (opts.ep !== undefined && opts.quantize !== undefined) throw new UsageError('--quantize cannot be combined with --ep yet (the expert ranks load experts as stored)');
      if (opts.backend === 'webgpu') {
        // The GPU-resident forward runs its experts itself and records no per-layer spans yet.
        if (opts.ep !== undefined) throw new UsageError('--ep cannot be combined with --backend webgpu (the GPU forward runs the routed experts itself)');
        if (opts.trace !== undefined) throw new UsageError('--trace cannot be combined with --backend webgpu yet (no per-layer spans on the GPU)');
        if (attn !== 'absorb') throw new UsageError('--backend webgpu computes absorbed MLA only (--attn naive is a CPU check)');
      }
      checkModelDir(opts.model);
      const ep = await startEp(opts);
      // Verification writes up to K positions past the last token, 1 + K at a time.
      const size = { maxModelLen: ids.length + maxTokens + numSpec, maxBatchTokens: Math.max(ids.length, 1 + numSpec) };
      const { model, kernels } = await openModel(opts, ep ? { moe: ep.factory, routedExperts: false } : opts.backend === 'webgpu' ? { mtp: !!speculative } : {}, size).catch(async (e: unknown) => {
        await ep?.close();
        throw e;
      });
      let closeFwd = () => {};
      try {
        checkVocab(ids, model.config.vocab_size);
        if (speculative && model.mtpModules === 0) throw new UsageError(`--speculative mtp: ${opts.model} has no MTP module (num_nextn_predict_layers is 0)`);
        const gpu = kernels.backend === 'webgpu' ? await forwardModelFor(model, kernels, attn) : null;
        if (gpu) closeFwd = gpu.close;
        const t0 = performance.now();
        const rec = opts.trace ? new ChromeTraceRecorder({ processName: 'seekd generate' }) : null;
        const run = () => generate(model, ids, { maxTokens, temperature, seed, attn, tracer: rec ?? undefined, speculative });
        const r = gpu && speculative && gpu.fwd instanceof GpuDeepseekModel ? await generateSpeculativeGpu(gpu.fwd, ids, { maxTokens, temperature, seed }, speculative)
          : gpu ? await generateAsync(gpu.fwd, ids, { maxTokens, temperature, seed, attn })
          : rec ? rec.span('generate', 'compute', run, { prompt: ids.length, maxTokens }) : run();
        if (rec) rec.writeFile(opts.trace!, { command: 'generate', backend: kernels.backend, threads: kernels.threads });
        const ms = performance.now() - t0;
        if (opts.json) {
          const spec = r.spec ? { spec: { drafted: r.spec.drafted, accepted: r.spec.accepted } } : {};
          process.stdout.write(JSON.stringify({ ids: r.ids, logits: r.logits.map(rowToJson), ...spec }) + '\n');
        } else {
          process.stdout.write(`${r.ids.join(',')}\n`);
          process.stderr.write(`generated ${r.ids.length} tokens from ${ids.length} prompt tokens in ${(ms / 1000).toFixed(2)} s (${kernels.backend}, ${kernels.threads} thread${kernels.threads > 1 ? 's' : ''}, ${attn} MLA)\n`);
          if (r.spec) process.stderr.write(`speculative mtp: ${r.spec.accepted}/${r.spec.drafted} drafts accepted (${r.spec.drafted ? (100 * r.spec.accepted / r.spec.drafted).toFixed(1) : '0.0'}%), ${r.spec.steps} verify steps\n`);
        }
      } finally {
        closeFwd();
        model.close();
        await kernels.dispose();
        await ep?.close();
      }
    });
}
