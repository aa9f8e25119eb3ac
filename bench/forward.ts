// `npm run bench -- forward [--model DIR] [--quantize fp8] [--threads 1,2] [--reps 5] [--backend wasm]
//   [--prompt 512] [--decode 128] [--formats bf16,fp8] [--json]`
// Whole-model forward throughput, prefill and decode tokens/s, on any DeepSeek-V2/V3 Hugging Face
// checkpoint (--model DIR; --quantize fp8 quantizes while loading, DeepseekModel.load's `quantize`), or
// without --model on the built-in "medium" DeepSeek-V3-shaped checkpoint (≈506M parameters, ≈131M active
// per token; built once into .cache/bench-models/, outside git) in BF16 and FP8 (--formats).
//
// Protocol: the one llama.cpp's peer bench runs (/work/shared/peers/bench-nlc.mjs), so that the two
// engines' numbers compare:
//   tokens  : ids[i] = 300 + (x_i mod 20000) with x_0 = 42, x_{i+1} = (x_i * 1103515245 + 12345) mod 2^31
//             (the first value used is x_1); no BOS; the same list for every run. Ids are clamped to
//             vocab_size - 1 only when the model's vocabulary is smaller than an id (the report says so).
//             Exact integer arithmetic: bench-nlc.mjs as of this writing multiplies in doubles, which round
//             past 2^53, so its ids from ids[1] on (2380, 18476, ...) are not the definition's (2564,
//             17053, ...); the cost of a forward does not depend on which ids, but the lists differ.
//   warm-up : one 64-token prefill (ids[0..64)) per loaded model (weights paged in, JIT tiers up).
//   prefill : ids[0..P) (P = --prompt, 512) in one forward on an empty cache; tok/s = P / wall time.
//   decode  : prefill ids[0] (not timed), then D (--decode, 128) greedy steps: the first step feeds ids[1]
//             (as the peer's `evaluate([tokens[1]])`), every later step the argmax of the previous step's
//             logits; each step computes the full vocabulary logits and takes their argmax;
//             tok/s = D / wall time of the loop.
//   report  : per thread count, the median over --reps runs (default 5) of each run's tok/s (the peer's
//             statistic: the mean of the two middle values for an even count).
// The model is loaded once per thread count (the backend's thread pool is fixed at load), without MTP
// modules (they never affect next-token logits).
//
// Ratios, paired: the speed of these shared machines drifts within seconds (a 1-thread GEMM peak read
// 22-35 GFLOP/s in probes a few seconds apart), so a baseline measured minutes away from a run can see
// another machine than the run did. Short probes of the baselines run before the first run and after
// every run (GEMM peak around the prefill runs, copy bandwidth around the decode runs; their buffers and
// workers are made before the model and kept, so a probe leaves no garbage for the next run); each run's
// figure is divided by the mean of the two probes beside it and the row's ratio is the median of those
// per-run ratios. The after-case baselines below (copy: 7 copies; GEMM: 3 rounds) are still measured right after each case and thread count
// (ratios over them: *_ratio_after; with --backend webgpu, which runs no probes, they are the rows' ratios):
//   decode  : weight bandwidth fraction = bytes of weights one decode token reads × tok/s / memory-copy
//             bandwidth (bench/lib/bandwidth.ts) with the same thread count. Bytes are taken from the
//             model AS LOADED (after --quantize: FP8 codes + their f32 block scales): every matrix and norm
//             vector, k/E of the routed experts' stacked weights, one embedding row, the whole lm_head.
//             The latent cache the attention reads is not weight traffic and is not counted.
//             Beside it, decode_read_fraction divides by the read-only bandwidth of the wasm kernels
//             (read_GBs): a decode step only reads, and on some machines one core reads at well under the
//             STREAM-counted copy figure, which is then what binds.
//   prefill : GEMM-peak fraction = model FLOPs per prompt token × tok/s / the best wasm f32/bf16 GEMM
//             GFLOP/s at a prefill shape (bench/lib/gemm-peak.ts) with the same thread count. Model FLOPs
//             of a P-token prompt = P × 2 × (active matmul parameters but lm_head: attention projections
//             incl. kv_b_proj, dense MLP, router, shared experts, k/E of the routed experts)
//             + 2 × lm_head parameters (logits of the last position only, as the engine computes them)
//             + attention: layers × 2 × heads × (qk_head_dim + v_head_dim) × P(P+1)/2 (causal score and
//             value products of the decompressed (naive) MLA form; the absorbed form the engine runs does
//             more attention FLOPs, which are not credited).
import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { backendNames, loadBackend } from '../src/kernels/index.ts';
import { DeepseekModel, type LoadOptions } from '../src/model/deepseek.ts';
import { LatentCache } from '../src/model/latent-cache.ts';
import { GpuDeepseekModel } from '../src/model/gpu/forward.ts';
import { qkHeadDim, type DeepseekConfig } from '../src/model/config.ts';
import type { ModelWeights } from '../src/model/weight-map.ts';
import type { GroupedWeight, WeightMatrix } from '../src/kernels/api.ts';
import { CopyProbe, wasmReadBandwidthStats } from './lib/bandwidth.ts';
import { GemmProbe } from './lib/gemm-peak.ts';
import { ensureBenchModel, MEDIUM_CONFIG } from './lib/bench-model.ts';
import { median, type BenchReport, type BenchRow } from './lib/report.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A bad command line, or a run this build cannot do as asked: one line on stderr, exit code 2 (bench/run.ts). */
export class BenchError extends Error {
  override name = 'BenchError';
  readonly exitCode = 2;
}

// ------------------------------------------------------------------ the protocol's tokens

/** x_{i+1} = (x_i · 1103515245 + 12345) mod 2^31, exactly: the product reaches 2^61, past a double's 53 bits. */
function lcgNext(x: number): number {
  // x · 1103515245 mod 2^31 from 16-bit halves of the multiplier (each partial product < 2^47, exact),
  // reduced as they go.
  const lo = 1103515245 & 0xffff, hi = Math.floor(1103515245 / 65536);
  const p = ((x * hi) % 2147483648) * 65536 + x * lo;
  return (p + 12345) % 2147483648;
}

/** The protocol's first `n` token ids (before any clamping to a small vocabulary). */
export function benchIds(n: number): Int32Array {
  const ids = new Int32Array(n);
  let x = 42;
  for (let i = 0; i < n; i++) {
    x = lcgNext(x);
    ids[i] = 300 + (x % 20000);
  }
  return ids;
}

/** Clamps ids into [0, vocabSize) in place; returns how many were changed. */
export function clampIds(ids: Int32Array, vocabSize: number): number {
  let n = 0;
  for (let i = 0; i < ids.length; i++) if (ids[i]! >= vocabSize) { ids[i] = vocabSize - 1; n++; }
  return n;
}

// ------------------------------------------------------------------ arguments

export interface ForwardArgs {
  model: string | null;
  quantize: 'fp8' | null;
  threads: number[];
  reps: number;
  backend: string;
  prompt: number;
  decode: number;
  /** Built-in model formats (without --model only). */
  formats: ('bf16' | 'fp8')[];
  cacheDir: string;
}

const FLAGS = ['model', 'quantize', 'threads', 'reps', 'backend', 'prompt', 'decode', 'formats', 'cache'] as const;
type Flag = typeof FLAGS[number];

function posInt(name: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < 1) throw new BenchError(`--${name} must be a positive integer, got '${v}'`);
  return n;
}

/** Parses the bench's options (`--json` is taken off by bench/run.ts); unknown or valueless options are errors. */
export function parseForwardArgs(args: string[]): ForwardArgs {
  const got = new Map<Flag, string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--')) throw new BenchError(`unexpected argument '${a}' (options: ${FLAGS.map((f) => `--${f}`).join(' ')})`);
    const eq = a.indexOf('=');
    const name = (eq >= 0 ? a.slice(2, eq) : a.slice(2)) as Flag;
    if (!FLAGS.includes(name)) throw new BenchError(`unknown option ${a.slice(0, eq >= 0 ? eq : undefined)} (options: ${FLAGS.map((f) => `--${f}`).join(' ')})`);
    let value: string | undefined;
    if (eq >= 0) value = a.slice(eq + 1);
    else if (i + 1 < args.length && !args[i + 1]!.startsWith('--')) value = args[++i];
    if (value === undefined || value === '') throw new BenchError(`--${name} needs a value`);
    if (got.has(name)) throw new BenchError(`--${name} given twice`);
    got.set(name, value);
  }
  const model = got.get('model') ?? null;
  if (model !== null && !(existsSync(model) && statSync(model).isDirectory())) throw new BenchError(`--model ${model}: not a directory`);
  if (model !== null && !existsSync(join(model, 'config.json'))) throw new BenchError(`--model ${model}: no config.json (a Hugging Face DeepSeek-V2/V3 directory is expected)`);
  const q = got.get('quantize') ?? null;
  if (q !== null && q !== 'fp8') throw new BenchError(`--quantize must be fp8, got '${q}'`);
  if (q !== null && model === null) throw new BenchError('--quantize needs --model (the built-in model runs in BF16 and FP8 already; see --formats)');
  if (model !== null && got.has('formats')) throw new BenchError('--formats is for the built-in model; with --model use --quantize fp8');
  const backend = got.get('backend') ?? (backendNames().includes('wasm') ? 'wasm' : 'ref');
  if (!backendNames().includes(backend)) throw new BenchError(`--backend must be one of ${backendNames().join(', ')}, got '${backend}'`);
  const formats = (got.get('formats') ?? 'bf16,fp8').split(',').map((f) => {
    if (f !== 'bf16' && f !== 'fp8') throw new BenchError(`--formats: unknown format '${f}' (bf16, fp8)`);
    return f;
  });
  return {
    model, quantize: q, backend, formats,
    threads: (got.get('threads') ?? '1,2').split(',').map((t) => posInt('threads', t)),
    reps: posInt('reps', got.get('reps') ?? '5'),
    prompt: posInt('prompt', got.get('prompt') ?? '512'),
    decode: posInt('decode', got.get('decode') ?? '128'),
    cacheDir: got.get('cache') ?? join(ROOT, '.cache', 'bench-models'),
  };
}

// ------------------------------------------------------------------ what one token costs

export interface WeightTraffic {
  /** Bytes of weights one decode token reads (see the header). */
  decodeBytes: number;
  /** Matmul parameters every token multiplies by, lm_head excluded (routed experts at k/E). */
  bodyMatmulParams: number;
  /** lm_head parameters (the embedding matrix when tied). */
  lmHeadParams: number;
  /** Whether any matrix is stored as FP8 codes. */
  hasFp8: boolean;
}

const isMatrix = (v: object): v is WeightMatrix | GroupedWeight => 'dtype' in v && 'data' in v && 'rows' in v;
const storedBytes = (w: WeightMatrix | GroupedWeight): number => w.data.byteLength + (w.dtype === 'fp8' ? w.scaleInv.byteLength : 0);

/** Weight traffic and matmul parameters per token, from the weights as loaded (MTP modules left out). */
export function weightTraffic(w: ModelWeights, c: DeepseekConfig): WeightTraffic {
  const kOverE = c.n_routed_experts ? (c.num_experts_per_tok ?? 0) / c.n_routed_experts : 0;
  const t: WeightTraffic = { decodeBytes: 0, bodyMatmulParams: 0, lmHeadParams: 0, hasFp8: false };
  const walk = (v: unknown): void => {
    if (v instanceof Float32Array) { t.decodeBytes += v.byteLength; return; }
    if (typeof v !== 'object' || v === null) return;
    if (Array.isArray(v)) { v.forEach(walk); return; }
    if (isMatrix(v)) {
      t.hasFp8 ||= v.dtype === 'fp8';
      // Stacked routed experts: each token reads k of the E groups.
      const groups = 'groups' in v ? (v as GroupedWeight).groups : 1;
      const share = 'groups' in v ? kOverE : 1;
      t.decodeBytes += storedBytes(v) * share;
      t.bodyMatmulParams += groups * v.rows * v.cols * share;
      return;
    }
    for (const x of Object.values(v)) walk(x);
  };
  walk(w.layers);
  walk(w.norm);
  // One embedding row (looked up, not multiplied), the whole lm_head (also when it is the tied embedding).
  t.decodeBytes += storedBytes(w.embed) / w.embed.rows;
  t.decodeBytes += storedBytes(w.lmHead);
  t.lmHeadParams = w.lmHead.rows * w.lmHead.cols;
  t.hasFp8 ||= w.lmHead.dtype === 'fp8';
  return t;
}

/** Causal attention FLOPs of a P-token prompt on an empty cache (decompressed MLA form, see the header). */
export function promptAttentionFlops(c: DeepseekConfig, p: number): number {
  return c.num_hidden_layers * 2 * c.num_attention_heads * (qkHeadDim(c) + c.v_head_dim) * (p * (p + 1)) / 2;
}

/** Model FLOPs per prompt token for a P-token prefill. */
export function prefillFlopsPerToken(t: WeightTraffic, c: DeepseekConfig, p: number): number {
  return 2 * t.bodyMatmulParams + (2 * t.lmHeadParams + promptAttentionFlops(c, p)) / p;
}

// ------------------------------------------------------------------ running it

function argmax(x: Float32Array): number {
  let best = 0;
  for (let v = 1; v < x.length; v++) if (x[v]! > x[best]!) best = v;
  return best;
}

/**
 * Baselines probed between the runs of a protocol (paired ratios, see the header): `prefill()` returns a
 * GEMM-peak figure in GFLOP/s, `decode()` a copy bandwidth in GB/s, each measured at the moment it is called.
 */
export interface PairedProbes {
  prefill(): Promise<number>;
  decode(): Promise<number>;
}

/**
 * Each run's baseline from reps + 1 probes: probe k is taken right before run k and serves as the "after"
 * of run k - 1, so run r's baseline is the mean of probes r and r + 1.
 */
export function pairedBaselines(probes: readonly number[]): number[] {
  return probes.slice(1).map((after, r) => (probes[r]! + after) / 2);
}

/** The row's ratio: the median over runs of figure_r · perUnit / (baseline_r · 1e9). */
export function pairedRatio(runs: readonly number[], baselines: readonly number[], perUnit: number): number {
  if (runs.length !== baselines.length) throw new Error(`pairedRatio: ${runs.length} runs, ${baselines.length} baselines`);
  return median(runs.map((v, i) => (perUnit * v) / (baselines[i]! * 1e9)));
}

/** Per-run tok/s, and with probes each run's baseline: the mean of the probes right before and after it. */
export interface ProtocolRuns {
  prefill: number[];
  decode: number[];
  prefillBase?: number[];
  decodeBase?: number[];
}

/** The protocol on one loaded model: per-run prefill and decode tokens/s (and paired baselines with `probes`). */
async function runProtocol(model: DeepseekModel, ids: Int32Array, prompt: number, decode: number, reps: number, probes?: PairedProbes): Promise<ProtocolRuns> {
  const blocks = LatentCache.blocksFor(Math.max(64, prompt, 1 + decode));
  const blockTable = Int32Array.from({ length: blocks }, (_, i) => i);
  const cache = model.createCache(blocks);
  // numCached = 0: the cache is empty for the forward whatever earlier runs left in its blocks.
  const prefill = (n: number): Float32Array => model.forward({ tokens: ids.subarray(0, n), seqs: [{ blockTable, numCached: 0, numNew: n }] }, cache);
  prefill(64);
  const pre: number[] = [], preProbe: number[] = [];
  if (probes) preProbe.push(await probes.prefill());
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    prefill(prompt);
    pre.push(prompt / ((performance.now() - t0) / 1000));
    if (probes) preProbe.push(await probes.prefill());
  }
  const dec: number[] = [], decProbe: number[] = [];
  if (probes) decProbe.push(await probes.decode());
  for (let r = 0; r < reps; r++) {
    prefill(1);
    let token = ids[1]!;
    const t0 = performance.now();
    for (let j = 0; j < decode; j++) {
      const logits = model.forward({ tokens: Int32Array.of(token), seqs: [{ blockTable, numCached: 1 + j, numNew: 1 }] }, cache);
      token = argmax(logits);
    }
    dec.push(decode / ((performance.now() - t0) / 1000));
    if (probes) decProbe.push(await probes.decode());
  }
  return probes
    ? { prefill: pre, decode: dec, prefillBase: pairedBaselines(preProbe), decodeBase: pairedBaselines(decProbe) }
    : { prefill: pre, decode: dec };
}

/**
 * The same protocol on the GPU-resident forward (--backend webgpu): each forward is awaited (one submit,
 * the logits read back), so a step's time includes its readback, as the engine sees it.
 */
async function runProtocolGpu(model: GpuDeepseekModel, ids: Int32Array, prompt: number, decode: number, reps: number): Promise<{ prefill: number[]; decode: number[] }> {
  const blocks = LatentCache.blocksFor(Math.max(64, prompt, 1 + decode));
  const blockTable = Int32Array.from({ length: blocks }, (_, i) => i);
  const cache = model.createCache(blocks);
  try {
    const prefill = (n: number) => model.forward({ tokens: ids.subarray(0, n), seqs: [{ blockTable, numCached: 0, numNew: n }] }, cache);
    await prefill(64);
    const pre: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      await prefill(prompt);
      pre.push(prompt / ((performance.now() - t0) / 1000));
    }
    const dec: number[] = [];
    for (let r = 0; r < reps; r++) {
      await prefill(1);
      let token = ids[1]!;
      const t0 = performance.now();
      for (let j = 0; j < decode; j++) {
        token = argmax(await model.forward({ tokens: Int32Array.of(token), seqs: [{ blockTable, numCached: 1 + j, numNew: 1 }] }, cache));
      }
      dec.push(decode / ((performance.now() - t0) / 1000));
    }
    return { prefill: pre, decode: dec };
  } finally {
    cache.destroy();
  }
}

interface CaseResult {
  name: string;
  threads: number;
  prefill: number;
  decode: number;
  /** Paired ratios: the median over runs of each run's figure over its own probed baseline (see the header). */
  pairedPrefillRatio?: number;
  pairedDecodeRatio?: number;
  /** Median of the runs' paired GEMM baselines (GFLOP/s). */
  probedGemm?: number;
  traffic: WeightTraffic;
  config: DeepseekConfig;
}

export default async function forwardBench(args: string[]): Promise<BenchReport> {
  const a = parseForwardArgs(args);
  const cases = a.model
    ? [{ name: basename(resolve(a.model)) + (a.quantize ? '+fp8' : ''), dir: a.model, quantize: a.quantize }]
    : a.formats.map((f) => {
      const dir = ensureBenchModel(a.cacheDir, 'medium', MEDIUM_CONFIG, f);
      return { name: basename(dir), dir, quantize: null };
    });

  const baseline: Record<string, number | string> = { backend: a.backend };
  const notes: string[] = [];
  const results: CaseResult[] = [];
  const copy = new Map<string, number>(), gemm = new Map<string, number>(), read = new Map<string, number>();
  for (const cs of cases) {
    // The FP8 check after loading catches a loader that takes `quantize` but does not (yet) quantize.
    const loadOpts: LoadOptions = { mtp: false, ...(cs.quantize ? { quantize: cs.quantize } : {}) };
    for (const threads of a.threads) {
      const key = cases.length > 1 ? `${cs.name} ${threads}t` : `${threads}t`;
      // The probes' backend, buffers and workers (copies of bandwidth.ts's 256 MiB) are made before the
      // model and kept to the end of the case: a probe between two runs only computes, and leaves no
      // garbage for the next run's collector; after the case they measure the after-case baselines.
      let gemmProbe: GemmProbe | undefined, copyProbe: CopyProbe | undefined, kernels: Awaited<ReturnType<typeof loadBackend>> | undefined;
      let model: DeepseekModel | undefined;
      let ran = false;
      try {
        gemmProbe = await GemmProbe.create(threads);
        copyProbe = await CopyProbe.create(threads);
        kernels = await loadBackend(a.backend, { threads });
        const t0 = performance.now();
        model = await DeepseekModel.load(cs.dir, kernels, loadOpts);
        baseline[`load_s ${cs.name} ${threads}t`] = (performance.now() - t0) / 1000;
        const c = model.config;
        const traffic = weightTraffic(model.weights, c);
        if (cs.quantize === 'fp8' && !traffic.hasFp8) {
          throw new BenchError(`--quantize fp8: ${cs.dir} loaded without any FP8 weight (this build's DeepseekModel.load does not apply LoadOptions.quantize)`);
        }
        const ids = benchIds(Math.max(a.prompt, 64, 2));
        const clamped = clampIds(ids, c.vocab_size);
        if (clamped > 0 && threads === a.threads[0]) {
          notes.push(`${cs.name}: vocabulary of ${c.vocab_size} < the protocol's ids (300..20299): ${clamped} of the first ${ids.length} ids clamped to ${c.vocab_size - 1}`);
        }
        let r: ProtocolRuns;
        if (a.backend === 'webgpu') {
          // The GPU-resident forward (weights uploaded now, not timed as load); ratios stay against the CPU baselines.
          const gpu = await GpuDeepseekModel.create(model);
          try {
            r = await runProtocolGpu(gpu, ids, a.prompt, a.decode, a.reps);
          } finally {
            gpu.close();
          }
        } else {
          // Short probes between the runs (3 GEMM products per format, 3 copies): the baseline each run is
          // divided by is measured seconds away from it, not minutes.
          const gemm = gemmProbe, copy = copyProbe;
          r = await runProtocol(model, ids, a.prompt, a.decode, a.reps, {
            prefill: async () => gemm.measure(3).gflops,
            decode: async () => (await copy.measure(3)).median,
          });
        }
        const flops = prefillFlopsPerToken(traffic, c, a.prompt);
        const res: CaseResult = { name: cs.name, threads, prefill: median(r.prefill), decode: median(r.decode), traffic, config: c };
        if (r.prefillBase && r.decodeBase) {
          res.pairedPrefillRatio = pairedRatio(r.prefill, r.prefillBase, flops);
          res.pairedDecodeRatio = pairedRatio(r.decode, r.decodeBase, traffic.decodeBytes);
          res.probedGemm = median(r.prefillBase);
          baseline[`prefill_runs_toks ${cs.name} ${threads}t`] = r.prefill.map((v) => v.toFixed(2)).join(',');
          baseline[`gemm_paired_GFLOPs ${key}`] = r.prefillBase.map((v) => v.toFixed(2)).join(',');
          baseline[`decode_runs_toks ${cs.name} ${threads}t`] = r.decode.map((v) => v.toFixed(2)).join(',');
          baseline[`copy_paired_GBs ${key}`] = r.decodeBase.map((v) => v.toFixed(2)).join(',');
        }
        results.push(res);
        // Best runs too (fastest rep): with the best baselines, the least disturbed estimate on a shared machine.
        baseline[`prefill_best_toks ${cs.name} ${threads}t`] = Math.max(...r.prefill);
        baseline[`decode_best_toks ${cs.name} ${threads}t`] = Math.max(...r.decode);
        // Process high-water mark (KiB), read before the read-bandwidth baseline allocates its buffer (the
        // probes' buffers are in it: see the note).
        baseline[`peak_rss_MiB ${cs.name} ${threads}t`] = process.resourceUsage().maxRSS / 1024;
        model.close();
        model = undefined;
        await kernels.dispose();
        kernels = undefined;
        // The baselines right after the case (on a shared machine the load drifts within minutes; one pair
        // measured at the end could see another load than the case did), with the model and its pool gone:
        // more copies than the probes, and the read bandwidth, which has no probe.
        const peak = gemmProbe.measure(3);
        const cp = await copyProbe.measure(7);
        const rd = await wasmReadBandwidthStats(threads);
        read.set(`${cs.name} ${threads}`, rd.median);
        baseline[`read_GBs ${key}`] = rd.median;
        baseline[`read_best_GBs ${key}`] = rd.best;
        copy.set(`${cs.name} ${threads}`, cp.median);
        gemm.set(`${cs.name} ${threads}`, peak.gflops);
        baseline[`copy_GBs ${key}`] = cp.median;
        baseline[`gemm_GFLOPs ${key}`] = peak.gflops;
        baseline[`copy_best_GBs ${key}`] = cp.best;
        baseline[`gemm_best_GFLOPs ${key}`] = peak.best;
        baseline[`gemm_kind ${key}`] = peak.kind;
        baseline.gemm_shape = `M=${peak.shape.m} N=${peak.shape.n} K=${peak.shape.k}`;
        ran = true;
      } finally {
        model?.close();
        // Each closed on its own: one that fails to close must not keep the others (workers) alive; a
        // failure to close is reported unless the case itself failed (its error is the one to see).
        const closing = await Promise.allSettled([kernels?.dispose(), gemmProbe?.close(), copyProbe?.close()]);
        const failed = closing.find((c): c is PromiseRejectedResult => c.status === 'rejected');
        if (failed && ran) throw failed.reason;
      }
    }
  }

  const rows: BenchRow[] = [];
  for (const r of results) {
    if (r.threads === a.threads[0]) {
      baseline[`weight_bytes_per_decode_token ${r.name}`] = r.traffic.decodeBytes;
      baseline[`model_flops_per_prefill_token ${r.name}`] = prefillFlopsPerToken(r.traffic, r.config, a.prompt);
    }
    const flops = prefillFlopsPerToken(r.traffic, r.config, a.prompt);
    const key = cases.length > 1 ? `${r.name} ${r.threads}t` : `${r.threads}t`;
    // Against the baselines measured after the case: the rows' ratios where no probes ran (WebGPU).
    const afterPrefill = (flops * r.prefill) / (gemm.get(`${r.name} ${r.threads}`)! * 1e9);
    const afterDecode = (r.traffic.decodeBytes * r.decode) / (copy.get(`${r.name} ${r.threads}`)! * 1e9);
    rows.push({ case: r.name, threads: r.threads, metric: 'prefill', value: r.prefill, unit: 'tok/s', ratio: r.pairedPrefillRatio ?? afterPrefill });
    rows.push({ case: r.name, threads: r.threads, metric: 'decode', value: r.decode, unit: 'tok/s', ratio: r.pairedDecodeRatio ?? afterDecode });
    baseline[`prefill_ratio_after ${r.name} ${r.threads}t`] = afterPrefill;
    baseline[`decode_ratio_after ${r.name} ${r.threads}t`] = afterDecode;
    baseline[`prefill_best_ratio ${r.name} ${r.threads}t`] = flops * (baseline[`prefill_best_toks ${r.name} ${r.threads}t`] as number) / ((baseline[`gemm_best_GFLOPs ${key}`] as number) * 1e9);
    // What binds decode: its weight bandwidth over the read-only rate of the kernels (bench/lib/bandwidth.ts).
    baseline[`decode_read_fraction ${r.name} ${r.threads}t`] = (r.traffic.decodeBytes * r.decode) / (read.get(`${r.name} ${r.threads}`)! * 1e9);
    baseline[`decode_best_ratio ${r.name} ${r.threads}t`] = r.traffic.decodeBytes * (baseline[`decode_best_toks ${r.name} ${r.threads}t`] as number) / ((baseline[`copy_best_GBs ${key}`] as number) * 1e9);
  }
  // Goal 2's thread scaling beside the scaling of the GEMM peak itself: where two vCPUs share one core's
  // pipes or memory path, the GEMM's own 2t/1t bounds what a prefill can reach.
  for (const r of results) {
    const one = results.find((o) => o.name === r.name && o.threads === 1);
    if (r.threads === 1 || !one) continue;
    const g1 = gemm.get(`${r.name} 1`)!, gt = gemm.get(`${r.name} ${r.threads}`)!;
    baseline[`prefill_scaling ${r.name} ${r.threads}t/1t`] = r.prefill / one.prefill;
    baseline[`gemm_scaling ${r.name} ${r.threads}t/1t`] = gt / g1;
    if (r.probedGemm && one.probedGemm) baseline[`gemm_probed_scaling ${r.name} ${r.threads}t/1t`] = r.probedGemm / one.probedGemm;
    baseline[`decode_scaling ${r.name} ${r.threads}t/1t`] = r.decode / one.decode;
    baseline[`read_scaling ${r.name} ${r.threads}t/1t`] = read.get(`${r.name} ${r.threads}`)! / read.get(`${r.name} 1`)!;
  }
  notes.unshift(
    `protocol as llama.cpp's peer bench (bench-nlc.mjs): LCG ids (x0 = 42), 64-token warm-up, prefill ${a.prompt} tokens on an empty cache, decode ${a.decode} greedy steps after ids[0]; medians of ${a.reps} runs' tok/s`,
    'decode ratio = weight bytes per decode token (as loaded: k/E of routed experts, one embedding row, lm_head) × tok/s / copy bandwidth at that thread count',
    `prefill ratio = model FLOPs per prompt token (2 × active matmul parameters, lm_head once per prompt, causal attention 2·heads·(qk+v) per layer and token pair for P = ${a.prompt}) × tok/s / best wasm f32/bf16 GEMM GFLOP/s at that thread count`,
    'read_GBs = read-only bandwidth of the wasm kernels (readBytes, four streams per thread, 256 MiB): the ceiling of a decode step, which only reads; decode_read_fraction = weight bytes per decode token × tok/s / read_GBs',
    'prefill_scaling / gemm_scaling / decode_scaling / read_scaling: N-thread over 1-thread figures of the prefill, the GEMM peak, the decode and the read bandwidth (goal 2 asks prefill_scaling >= 1.8; the GEMM peak\'s own scaling bounds it)',
    'paired ratios (the rows, wasm/ref backends): a short GEMM-peak probe (3 products per format) before the first prefill run and after every run, a copy probe (3 copies of 256 MiB, as the after-case copy) likewise around the decode runs, both made before the model and kept (no garbage between runs); each run is divided by the mean of the probes on either side of it, and the row\'s ratio is the median of those per-run ratios (gemm_paired_GFLOPs / copy_paired_GBs list the per-run baselines, *_runs_toks the runs). *_ratio_after: the same figures over the baselines measured after the case (7 copies, 3 GEMM rounds). The copy probe evicts the last-level cache between decode runs: a model whose weights fit in it would start each run cold',
    'baselines (copy_GBs, read_GBs, gemm_GFLOPs) are measured right after the case and thread count they divide (keys name the case when there are several); gemm_probed_scaling is the N-thread over 1-thread median of the runs\' paired GEMM baselines',
    '*_best_*: the fastest run of each (model reps, copy reps, GEMM products) and their ratios: the least disturbed estimate when other work shares the machine',
    'peak RSS = the process high-water mark after that run (it includes earlier runs of this process, earlier baselines, and the probes: 512 MiB of copy buffers and a ~20 MiB GEMM backend)',
  );
  return { bench: 'forward', baseline, rows, notes };
}
