// `npm run bench -- spec-verify --model DIR [--threads N] [--batch 1,16] [--k 1,2,3,4] [--context 128] [--reps 5]`:
// what MTP verification costs: the main model's forward of 1 + K new positions per sequence (logits of
// every position, as generateSpeculative verifies) against the plain decode forward of 1, at the same
// context, for each batch size (sequences with their own block tables). `ratio` = time(1 + K) / time(1):
// speculation wins when the tokens a verify step emits (1 + accepted) exceed it, plus the MTP's drafting
// (timed too when the checkpoint has an MTP module: one draft step of 1 position per sequence).
import { loadBackend } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { LatentCache } from '../src/model/latent-cache.ts';
import { mulberry32 } from '../src/tensor/random.ts';
import { median, timeRuns, type BenchReport, type BenchRow } from './lib/report.ts';

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
}
const ints = (s: string) => s.split(',').map((x) => Number.parseInt(x, 10));

export default async function specVerify(args: string[]): Promise<BenchReport> {
  const dir = arg(args, 'model', '.cache/bench-models/medium-bf16');
  const threads = Number.parseInt(arg(args, 'threads', '1'), 10);
  const batches = ints(arg(args, 'batch', '1,16'));
  const ks = ints(arg(args, 'k', '1,2,3,4'));
  const ctx = Number.parseInt(arg(args, 'context', '128'), 10);
  const reps = Number.parseInt(arg(args, 'reps', '5'), 10);
  const kernels = await loadBackend(arg(args, 'backend', 'wasm'), { threads });
  const t0 = performance.now();
  const model = await DeepseekModel.load(dir, kernels);
  const loadS = (performance.now() - t0) / 1000;
  const V = model.config.vocab_size;
  const rows: BenchRow[] = [];
  try {
    const maxB = Math.max(...batches), maxK = Math.max(...ks);
    const per = LatentCache.blocksFor(ctx + 1 + maxK);
    const cache = model.createCache(per * maxB);
    const mtp = model.mtpModules > 0 ? model.createMtpCache(per * maxB) : null;
    const H = model.config.hidden_size;
    const tables = Array.from({ length: maxB }, (_, s) => Int32Array.from({ length: per }, (_, i) => s * per + i));
    const r = mulberry32(1);
    const tok = () => Math.floor(r() * V);
    // Fill every sequence's context once (prefill, one sequence at a time).
    for (let s = 0; s < maxB; s++) {
      let hidden!: Float32Array;
      const seqs = [{ blockTable: tables[s]!, numCached: 0, numNew: ctx }];
      model.forward({ tokens: Int32Array.from({ length: ctx }, tok), seqs }, cache, { onHidden: (h) => { hidden = h.slice(0, ctx * H); } });
      if (mtp) model.mtpForward({ tokens: Int32Array.from({ length: ctx }, tok), seqs }, hidden, mtp);
    }
    for (const B of batches) {
      const step = (n: number) => () => {
        model.forward({
          tokens: Int32Array.from({ length: B * n }, tok),
          seqs: Array.from({ length: B }, (_, s) => ({ blockTable: tables[s]!, numCached: ctx, numNew: n })),
        }, cache, { allPositions: n > 1 });
      };
      // The fastest of the reps as well as the median: on a shared machine the minimum is the least disturbed.
      const push = (c: string, ts: number[], base: { med: number; min: number } | null) => {
        const med = median(ts), min = Math.min(...ts);
        rows.push({ case: c, threads, metric: 'forward (median)', value: med * 1000, unit: 'ms', ratio: base ? med / base.med : 1 });
        rows.push({ case: c, threads, metric: 'forward (min)', value: min * 1000, unit: 'ms', ratio: base ? min / base.min : 1 });
        return { med, min };
      };
      const base = push(`batch ${B}, 1 token/seq`, timeRuns(step(1), reps), null);
      if (mtp) {
        // One draft step of the MTP module (1 position per sequence, reading its own cache).
        const h = Float32Array.from({ length: B * H }, () => r() - 0.5);
        push(`batch ${B}, MTP draft 1 token/seq`, timeRuns(() => {
          model.mtpForward({ tokens: Int32Array.from({ length: B }, tok), seqs: Array.from({ length: B }, (_, s) => ({ blockTable: tables[s]!, numCached: ctx, numNew: 1 })) }, h, mtp);
        }, reps), base);
      }
      for (const K of ks) {
        push(`batch ${B}, verify 1+${K} tokens/seq`, timeRuns(step(1 + K), reps), base);
      }
    }
  } finally {
    model.close();
    await kernels.dispose();
  }
  return {
    bench: 'spec-verify',
    baseline: { model: dir, backend: kernels.backend, threads, context: ctx, reps, load_s: Number(loadS.toFixed(1)) },
    rows,
    notes: ['ratio = time of the 1 + K forward (or the MTP draft step) over the 1-token forward at the same batch and context'],
  };
}
