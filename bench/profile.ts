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
import type { GroupedWeight, Kernels, WeightMatrix } from '../src/kernels/api.ts';
import { benchIds, clampIds, parseForwardArgs } from './forward.ts';
import { median, type BenchReport, type BenchRow } from './lib/report.ts';

type Acc = Map<string, number>;

function wrapKernels(k: Kernels, acc: { cur: Acc }): void {
  const add = (name: string, t0: number): void => { const a = acc.cur; a.set(name, (a.get(name) ?? 0) + performance.now() - t0); };
  const shape = (w: WeightMatrix | GroupedWeight): string => `${w.dtype} ${w.rows}x${w.cols}`;
  const o = k as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const op of ['matmul', 'groupedMatmul', 'rmsNorm', 'rope', 'siluMul', 'topk', 'softmax', 'gatherRows', 'scatterAddRows', 'copyStrided'] as const) {
    const f = o[op]!.bind(k);
    o[op] = (...a: unknown[]) => {
      const t0 = performance.now();
      try { return f(...a); } finally {
        const name = op === 'matmul' || op === 'groupedMatmul' ? `${op} ${shape(a[2] as WeightMatrix)}` : op;
        add(name, t0);
      }
    };
  }
  const proto = WasmFlashMla.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  if (!(proto as { __profiled?: boolean }).__profiled) {
    const f = proto.flashMlaWithKvcache!;
    proto.flashMlaWithKvcache = function (this: unknown, ...a: unknown[]) {
      const t0 = performance.now();
      try { return f.apply(this, a); } finally { add('flashMla', t0); }
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
  const acc = { cur: new Map() as Acc };
  const kernels = await loadBackend(a.backend, { threads });
  wrapKernels(kernels, acc);
  const model = await DeepseekModel.load(a.model, kernels, { mtp: false, ...(a.quantize ? { quantize: a.quantize } : {}) });
  const rows: BenchRow[] = [];
  try {
    const ids = benchIds(Math.max(a.prompt, 64, 2));
    clampIds(ids, model.config.vocab_size);
    const blocks = LatentCache.blocksFor(Math.max(64, a.prompt, 1 + a.decode));
    const blockTable = Int32Array.from({ length: blocks }, (_, i) => i);
    const cache = model.createCache(blocks * batch);
    const tables = Array.from({ length: batch }, (_, b) => Int32Array.from({ length: blocks }, (_, i) => b * blocks + i));
    const fwd = (tokens: Int32Array, numCached: number) => model.forward({ tokens, seqs: [{ blockTable, numCached, numNew: tokens.length }] }, cache);
    fwd(ids.subarray(0, 64), 0);
    const pre: Acc[] = [], dec: Acc[] = [];
    for (let r = 0; r < a.reps; r++) {
      acc.cur = new Map();
      const t0 = performance.now();
      fwd(ids.subarray(0, a.prompt), 0);
      acc.cur.set('total', performance.now() - t0);
      pre.push(acc.cur);
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
    for (const [metric, runs] of [['prefill', pre], ['decode', dec]] as const) {
      const keys = [...new Set(runs.flatMap((m) => [...m.keys()]))];
      const med = (key: string) => median(runs.map((m) => m.get(key) ?? 0));
      const total = med('total');
      let inOps = 0;
      for (const key of keys) if (key !== 'total') inOps += med(key);
      const out = keys.filter((x) => x !== 'total').map((key) => [key, med(key)] as const);
      out.push(['other (outside ops)', total - inOps], ['total', total]);
      out.sort((x, y) => y[1] - x[1]);
      for (const [key, ms] of out) rows.push({ case: `${name} ${metric} ${key}`, threads, metric, value: ms, unit: metric === 'prefill' ? 'ms/prefill' : 'ms/token', ratio: ms / total });
    }
  } finally {
    model.close();
    await kernels.dispose();
  }
  return { bench: 'profile', baseline: { threads, prompt: a.prompt, decode: a.decode }, rows, notes: ['ratio = share of the forward wall time (median of reps)'] };
}
