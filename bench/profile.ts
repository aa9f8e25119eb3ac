// `npm run bench -- profile --model DIR [--quantize fp8] [--threads 2] [--prompt 512] [--decode 32] [--reps 3] [--batch B] [--json]`
// Where a forward's wall time goes, per kernel op: wraps the backend's ops (matmul by weight shape,
// groupedMatmul, rmsNorm, rope, siluMul, topk, softmax, gatherRows, scatterAddRows, copyStrided) and the FlashMLA kernel with timers, then runs
// the forward bench's protocol (bench/forward.ts: a P-token prefill on an empty cache, D greedy decode
// steps after ids[0]). Rows: milliseconds per prefill / per decode token of each op (medians over
// --reps), and "other" = forward wall time not inside any op (JS glue: embedding, gathers, routing,
// residual adds, cache writes). Timers cost ~0.1 us per call; nothing is changed otherwise.
// --batch B (default 1): each decode step is one forward of B sequences (one new token each, B separate
// caches' worth of blocks), as a server's running batch; ms are per step.
import { basename, resolve } from 'node:path';
import { loadBackend } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { LatentCache } from '../src/model/latent-cache.ts';
import { WasmFlashMla } from '../src/kernels/flashmla/wasm.ts';
import type { GroupedWeight, GroupSegments, Kernels, WeightMatrix } from '../src/kernels/api.ts';
import { benchIds, clampIds, pairedBaselines, pairedRatio, parseForwardArgs, prefillFlopsPerToken, weightTraffic } from './forward.ts';
import { GemmProbe } from './lib/gemm-peak.ts';
import { median, type BenchReport, type BenchRow } from './lib/report.ts';

type Acc = Map<string, number>;

/** Multiply-add FLOPs of a matmul (x rows m) or grouped matmul (rows in the segments) call: 2 · rows · N · K. */
function productFlops(op: 'matmul' | 'groupedMatmul', a: unknown[]): number {
  const w = a[2] as WeightMatrix | GroupedWeight;
  const rows = op === 'matmul' ? (a[1] as number) : (a[3] as GroupSegments).count.reduce((s, c) => s + c, 0);
  return 2 * rows * w.rows * w.cols;
}

/**
 * The accumulators of the profile now running: the FlashMLA prototype is wrapped once per process, so its
 * wrapper adds to these (a second profile in one process would otherwise add to the first's).
 */
let currentAcc: { cur: Acc } = { cur: new Map() };

/** Adds the milliseconds since t0 to `name` in the running profile's accumulator. */
function addTime(name: string, t0: number): void {
  const a = currentAcc.cur;
  a.set(name, (a.get(name) ?? 0) + performance.now() - t0);
}

function wrapKernels(k: Kernels, acc: { cur: Acc }, flops: { cur: Acc }): void {
  currentAcc = acc;
  const shape = (w: WeightMatrix | GroupedWeight): string => `${w.dtype} ${w.rows}x${w.cols}`;
  const o = k as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const op of ['matmul', 'groupedMatmul', 'rmsNorm', 'rope', 'siluMul', 'topk', 'softmax', 'gatherRows', 'scatterAddRows', 'copyStrided'] as const) {
    const f = o[op]!.bind(k);
    o[op] = (...a: unknown[]) => {
      const t0 = performance.now();
      try { return f(...a); } finally {
        const product = op === 'matmul' || op === 'groupedMatmul';
        const name = product ? `${op} ${shape(a[2] as WeightMatrix)}` : op;
        addTime(name, t0);
        if (product) flops.cur.set(name, (flops.cur.get(name) ?? 0) + productFlops(op, a));
      }
    };
  }
  const proto = WasmFlashMla.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  if (!(proto as { __profiled?: boolean }).__profiled) {
    const f = proto.flashMlaWithKvcache!;
    proto.flashMlaWithKvcache = function (this: unknown, ...a: unknown[]) {
      const t0 = performance.now();
      try { return f.apply(this, a); } finally { addTime('flashMla', t0); }
    };
    (proto as { __profiled?: boolean }).__profiled = true;
  }
}

export default async function profileBench(argv: string[]): Promise<BenchReport> {
  const bi = argv.indexOf('--batch');
  const batch = bi >= 0 ? Number(argv[bi + 1]) : 1;
  if (!(Number.isInteger(batch) && batch >= 1)) throw new Error('--batch must be a positive integer');
  const args = bi >= 0 ? [...argv.slice(0, bi), ...argv.slice(bi + 2)] : argv;
  const a = parseForwardArgs(args.some((x) => x.startsWith('--decode')) ? args : [...args, '--decode', '32']);
  if (!a.model) throw new Error('profile needs --model DIR');
  const threads = a.threads[a.threads.length - 1]!;
  const acc = { cur: new Map() as Acc }, flops = { cur: new Map() as Acc };
  const kernels = await loadBackend(a.backend, { threads });
  wrapKernels(kernels, acc, flops);
  // The probe's backend and buffers are made once, before the model: no garbage between the runs.
  let gemmProbe: GemmProbe | undefined;
  let model: DeepseekModel;
  try {
    gemmProbe = await GemmProbe.create(threads);
    model = await DeepseekModel.load(a.model, kernels, { mtp: false, ...(a.quantize ? { quantize: a.quantize } : {}) });
  } catch (e) {
    await Promise.allSettled([kernels.dispose(), gemmProbe?.close()]);
    throw e;
  }
  const probe = gemmProbe;
  const rows: BenchRow[] = [];
  const baseline: Record<string, number | string> = { threads, prompt: a.prompt, decode: a.decode };
  try {
    const ids = benchIds(Math.max(a.prompt, 64, 2));
    clampIds(ids, model.config.vocab_size);
    const blocks = LatentCache.blocksFor(Math.max(64, a.prompt, 1 + a.decode));
    const blockTable = Int32Array.from({ length: blocks }, (_, i) => i);
    const cache = model.createCache(blocks * batch);
    const tables = Array.from({ length: batch }, (_, b) => Int32Array.from({ length: blocks }, (_, i) => b * blocks + i));
    const fwd = (tokens: Int32Array, numCached: number) => model.forward({ tokens, seqs: [{ blockTable, numCached, numNew: tokens.length }] }, cache);
    fwd(ids.subarray(0, 64), 0);
    const pre: Acc[] = [], dec: Acc[] = [], preFlops: Acc[] = [];
    // GEMM-peak probes before the first prefill and after every one (as bench forward's paired ratios):
    // the rate each product reached is read against the peak the machine gave around that prefill.
    const peaks: number[] = [probe.measure().gflops];
    for (let r = 0; r < a.reps; r++) {
      acc.cur = new Map();
      flops.cur = new Map();
      const t0 = performance.now();
      fwd(ids.subarray(0, a.prompt), 0);
      acc.cur.set('total', performance.now() - t0);
      pre.push(acc.cur);
      preFlops.push(flops.cur);
      peaks.push(probe.measure().gflops);
      // The untimed 1-token prefill before the decode steps counts nowhere (it used to land in the
      // prefill's op times, outside its total, which made "other" come out too small, even negative).
      acc.cur = new Map();
      flops.cur = new Map();
      fwd(ids.subarray(0, 1), 0);
      acc.cur = new Map();
      let token = ids[1]!;
      const t1 = performance.now();
      for (let j = 0; j < a.decode; j++) {
        if (batch > 1) {
          // B sequences at position 1 + j (their caches hold whatever earlier steps left: cost is the same).
          model.forward({ tokens: new Int32Array(batch).fill(token), seqs: tables.map((bt) => ({ blockTable: bt, numCached: 1 + j, numNew: 1 })) }, cache);
          continue;
        }
        const logits = fwd(Int32Array.of(token), 1 + j);
        let best = 0;
        for (let v = 1; v < logits.length; v++) if (logits[v]! > logits[best]!) best = v;
        token = best;
      }
      acc.cur.set('total', performance.now() - t1);
      for (const [kk, v] of acc.cur) acc.cur.set(kk, v / a.decode);
      dec.push(acc.cur);
    }
    const name = basename(resolve(a.model)) + (a.quantize ? '+fp8' : '');
    // Each prefill's products (and the whole prefill, with bench forward's model FLOPs) as GFLOP/s over
    // the mean of the probes beside it; medians over the runs.
    const pairPeak = pairedBaselines(peaks);
    baseline.gemm_GFLOPs = median(pairPeak);
    baseline.gemm_paired_GFLOPs = pairPeak.map((v) => v.toFixed(2)).join(',');
    const modelFlops = prefillFlopsPerToken(weightTraffic(model.weights, model.config), model.config, a.prompt) * a.prompt;
    const rateRows: BenchRow[] = [];
    const rate = (label: string, perRun: (r: number) => [flops: number, ms: number]): void => {
      const gf = pre.map((_, r) => { const [f, ms] = perRun(r); return f / (ms / 1000) / 1e9; });
      rateRows.push({ case: `${name} prefill ${label}`, threads, metric: 'prefill rate', value: median(gf), unit: 'GFLOP/s', ratio: pairedRatio(gf, pairPeak, 1e9) });
    };
    rate('total (model FLOPs)', (r) => [modelFlops, pre[r]!.get('total')!]);
    const productKeys = [...new Set(preFlops.flatMap((m) => [...m.keys()]))];
    // Every prefill multiplies the same rows: the sum over products (2 × active matmul parameters per token,
    // lm_head for the last position only) is the same in each run.
    baseline.prefill_products_GFLOP = productKeys.reduce((sum, key) => sum + (preFlops[0]!.get(key) ?? 0), 0) / 1e9;
    baseline.prefill_model_GFLOP = modelFlops / 1e9;
    productKeys.sort((x, y) => median(pre.map((m) => m.get(y) ?? 0)) - median(pre.map((m) => m.get(x) ?? 0)));
    for (const key of productKeys) rate(key, (r) => [preFlops[r]!.get(key) ?? 0, pre[r]!.get(key) ?? Infinity]);
    for (const [metric, runs] of [['prefill', pre], ['decode', dec]] as const) {
      const keys = [...new Set(runs.flatMap((m) => [...m.keys()]))];
      const med = (key: string) => median(runs.map((m) => m.get(key) ?? 0));
      const total = med('total');
      // "other" per run (its wall time minus its ops), then the median: medians taken per op and
      // subtracted from the median total mix different runs, which on a noisy machine is off by
      // hundreds of milliseconds either way.
      const other = median(runs.map((m) => {
        let inOps = 0;
        for (const [key, ms] of m) if (key !== 'total') inOps += ms;
        return m.get('total')! - inOps;
      }));
      const out = keys.filter((x) => x !== 'total').map((key) => [key, med(key)] as const);
      out.push(['other (outside ops)', other], ['total', total]);
      out.sort((x, y) => y[1] - x[1]);
      for (const [key, ms] of out) rows.push({ case: `${name} ${metric} ${key}`, threads, metric, value: ms, unit: metric === 'prefill' ? 'ms/prefill' : 'ms/token', ratio: ms / total });
      if (metric === 'prefill') rows.push(...rateRows);
    }
  } finally {
    model.close();
    await Promise.allSettled([kernels.dispose(), probe.close()]);
  }
  return {
    bench: 'profile', baseline, rows,
    notes: [
      'ratio = share of the forward wall time (median of reps)',
      'prefill rate rows: GFLOP/s of each product in the prefill (2 · rows · N · K per call; the whole prefill with bench forward\'s model FLOPs), ratio = over the wasm GEMM peak (bench/lib/gemm-peak.ts GemmProbe, kept from before loading) probed before and after that prefill run (mean of the two), medians over the runs',
    ],
  };
}
