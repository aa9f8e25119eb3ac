// `npm run bench -- forward [--json] [--prompt 512] [--decode 128] [--reps 3] [--backend NAME]
//   [--threads 1,2] [--formats bf16,fp8]`
// Forward-pass throughput of the whole model on the "medium" DeepSeek-V3-shaped checkpoint (≈506M
// parameters, ≈131M active per token; built once into .cache/bench-models/, outside git), in BF16 and
// FP8: prefill tokens/s for one prompt, decode tokens/s (one token per forward, greedy, through the
// latent cache), and the weight bandwidth decode implies (bytes of the weights one token reads ×
// tokens/s) next to the memory-copy bandwidth measured by this process.
// For scale: llama.cpp decodes ≈90 tok/s (F16) and ≈140 (Q8_0) on one thread on this shape.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { backendNames, loadBackend } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { LatentCache } from '../src/model/latent-cache.ts';
import { parseConfig } from '../src/model/config.ts';
import { parameterCounts, tensorSpecs } from '../src/model/weight-map.ts';
import { Checkpoint } from '../src/weights/checkpoint.ts';
import { DTYPE_BYTES } from '../src/tensor/dtypes.ts';
import { copyBandwidthGBs } from './lib/bandwidth.ts';
import { ensureBenchModel, MEDIUM_CONFIG } from './lib/bench-model.ts';
import { median, type BenchReport, type BenchRow } from './lib/report.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function opt(args: string[], name: string, def: string): string {
  const i = args.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < args.length) return args[i + 1]!;
  const eq = args.find((a) => a.startsWith(`--${name}=`));
  return eq ? eq.slice(name.length + 3) : def;
}

function posInt(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${v}`);
  return n;
}

/** Bytes of weights one decode token reads: every non-expert matrix, k/E of the routed experts, one embedding row. */
function activeBytesPerToken(dir: string): number {
  const ck = Checkpoint.open(dir);
  try {
    const c = parseConfig(MEDIUM_CONFIG);
    let bytes = 0;
    for (const s of tensorSpecs(c, { mtp: false })) {
      const t = ck.info(s.name);
      let b = t.byteLength;
      if (ck.has(`${s.name}_scale_inv`)) b += ck.info(`${s.name}_scale_inv`).byteLength;
      if (s.kind === 'embed') b = c.hidden_size * DTYPE_BYTES[t.dtype];
      else if (s.target.includes('experts')) b *= c.num_experts_per_tok! / c.n_routed_experts!;
      bytes += b;
    }
    return bytes;
  } finally {
    ck.close();
  }
}

export default async function forwardBench(args: string[]): Promise<BenchReport> {
  const promptLen = posInt('prompt', opt(args, 'prompt', '512'));
  const decodeLen = posInt('decode', opt(args, 'decode', '128'));
  const reps = posInt('reps', opt(args, 'reps', '3'));
  const backend = opt(args, 'backend', backendNames().includes('wasm') ? 'wasm' : 'ref');
  const threadList = opt(args, 'threads', '1,2').split(',').map((t) => posInt('threads', t));
  const formats = opt(args, 'formats', 'bf16,fp8').split(',') as ('bf16' | 'fp8')[];
  const cacheDir = opt(args, 'cache', join(ROOT, '.cache', 'bench-models'));

  const copy: Record<number, number> = {};
  for (const t of threadList) copy[t] = await copyBandwidthGBs(t);

  const rows: BenchRow[] = [];
  const baseline: Record<string, number | string> = { backend };
  for (const t of threadList) baseline[`copy_GBs_${t}t`] = copy[t]!;
  const counts = parameterCounts(parseConfig(MEDIUM_CONFIG));
  baseline.params_total = counts.total;
  baseline.params_active_per_token = counts.activePerToken;

  // A fixed pseudo-random prompt.
  const prompt = Int32Array.from({ length: promptLen }, (_, i) => (i * 7919 + 13) % MEDIUM_CONFIG.vocab_size);
  for (const format of formats) {
    if (format !== 'bf16' && format !== 'fp8') throw new Error(`--formats: unknown format ${format}`);
    const dir = ensureBenchModel(cacheDir, 'medium', MEDIUM_CONFIG, format);
    const tokenBytes = activeBytesPerToken(dir);
    baseline[`active_bytes_per_token_${format}`] = tokenBytes;
    for (const threads of threadList) {
      const kernels = await loadBackend(backend, { threads });
      const model = await DeepseekModel.load(dir, kernels);
      try {
        const blocks = LatentCache.blocksFor(promptLen + decodeLen);
        const blockTable = Int32Array.from({ length: blocks }, (_, i) => i);
        const cache = model.createCache(blocks);
        // Warm-up (JIT, lazily built tables): a short prefill and two decode steps.
        model.forward({ tokens: prompt.subarray(0, 8), seqs: [{ blockTable, numCached: 0, numNew: 8 }] }, cache);
        for (let j = 0; j < 2; j++) model.forward({ tokens: Int32Array.of(j + 3), seqs: [{ blockTable, numCached: 8 + j, numNew: 1 }] }, cache);
        const pre: number[] = [], dec: number[] = [];
        for (let r = 0; r < reps; r++) {
          let t0 = performance.now();
          let logits = model.forward({ tokens: prompt, seqs: [{ blockTable, numCached: 0, numNew: promptLen }] }, cache);
          pre.push((performance.now() - t0) / 1000);
          t0 = performance.now();
          for (let j = 0; j < decodeLen; j++) {
            let best = 0;
            for (let v = 1; v < logits.length; v++) if (logits[v]! > logits[best]!) best = v;
            logits = model.forward({ tokens: Int32Array.of(best), seqs: [{ blockTable, numCached: promptLen + j, numNew: 1 }] }, cache);
          }
          dec.push((performance.now() - t0) / 1000);
        }
        const preTps = promptLen / median(pre);
        const decTps = decodeLen / median(dec);
        const bw = (decTps * tokenBytes) / 1e9;
        rows.push({ case: `medium-${format} prefill ${promptLen}`, threads, metric: 'prefill', value: preTps, unit: 'tok/s', ratio: null });
        rows.push({ case: `medium-${format} decode ${decodeLen}`, threads, metric: 'decode', value: decTps, unit: 'tok/s', ratio: null });
        rows.push({ case: `medium-${format} decode ${decodeLen}`, threads, metric: 'weight bandwidth / copy', value: bw, unit: 'GB/s', ratio: bw / copy[threads]! });
      } finally {
        model.close();
        await kernels.dispose();
      }
    }
  }
  return {
    bench: 'forward',
    baseline,
    rows,
    notes: [
      `medians of ${reps} runs; prompt ${promptLen} tokens, then ${decodeLen} greedy decode steps (one token per forward)`,
      'weight bandwidth = decode tok/s × bytes of weights read per token (non-expert matrices, k/E of routed experts, one embedding row); ratio = that / memory-copy bandwidth with the same thread count',
      'for scale: llama.cpp decodes ≈90 tok/s (F16) and ≈140 tok/s (Q8_0) on one thread on this shape',
    ],
  };
}
