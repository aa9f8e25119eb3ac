// Rank program of `npm run bench -- ep` (thread or process rank): times DeepEP normal-mode dispatch
// (FP8 payload) / combine (BF16) and low-latency dispatch (FP8 cast inside) / combine (BF16), and counts
// the bytes as DeepEP's tests do:
//   normal (tests/test_intranode.py): dispatch = received rows x (H + 4·H/128) for FP8,
//                                     combine = the same rows x 2H (BF16);
//   low latency (tests/test_low_latency.py): dispatch = selections x (H + 4·H/128 + 16),
//                                     combine = selections x (2H + 16), selections = this rank's
//                                     (token, expert) pairs with an expert.
import { Buffer } from '../../src/parallel/deepep/buffer.ts';
import { castToFp8 } from '../../src/parallel/deepep/fp8.ts';
import { runRank } from '../../src/parallel/deepep/rank.ts';
import { randomTopk, rng } from '../../src/parallel/deepep/testing/data.ts';
import { f32ToBf16 } from '../../src/tensor/dtypes.ts';

export interface EpBenchParams {
  mode: 'normal' | 'low-latency';
  T: number;
  H: number;
  K: number;
  E: number;
  reps: number;
}

export interface EpBenchResult {
  dispatchSeconds: number[];
  combineSeconds: number[];
  dispatchBytes: number;
  combineBytes: number;
}

const now = (): number => Number(process.hrtime.bigint()) / 1e9;

await runRank<EpBenchParams, EpBenchResult>(async ({ comm, data: p, rank }) => {
  const buf = new Buffer(comm);
  const rand = rng(1000 + rank);
  // Cheap deterministic activations (values do not affect the timing).
  const x = new Float32Array(p.T * p.H);
  for (let i = 0; i < x.length; i++) x[i] = ((i * 2654435761) % 2001) / 1000 - 1;
  const { idx, weights } = randomTopk(p.T, p.K, p.E, 0, rand);
  const dispatchSeconds: number[] = [];
  const combineSeconds: number[] = [];
  if (p.mode === 'normal') {
    const fp8 = { dtype: 'fp8' as const, hidden: p.H, ...castToFp8(x, p.T, p.H) };
    const layout = buf.getDispatchLayout(idx, p.E, p.K);
    let rows = 0;
    let back: Uint16Array | null = null;
    for (let r = 0; r <= p.reps; r++) {
      await comm.barrier();
      const t0 = now();
      const d = await buf.dispatch(fp8, idx, weights, layout);
      const t1 = now();
      rows = d.recvX.data.length / p.H;
      back ??= new Uint16Array(rows * p.H).fill(f32ToBf16(0.5));
      await comm.barrier();
      const t2 = now();
      await buf.combine({ dtype: 'bf16', hidden: p.H, data: back }, d.handle);
      const t3 = now();
      if (r > 0) { // rep 0 warms up
        dispatchSeconds.push(t1 - t0);
        combineSeconds.push(t3 - t2);
      }
    }
    return { dispatchSeconds, combineSeconds, dispatchBytes: rows * (p.H + 4 * Math.ceil(p.H / 128)), combineBytes: rows * 2 * p.H };
  }
  const xb = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) xb[i] = f32ToBf16(x[i]!);
  const perRank = p.E / comm.size;
  // Expert outputs in the masked layout [E/R, T·R, H] (BF16); only received rows are ever touched.
  const y = new Uint16Array(perRank * p.T * comm.size * p.H);
  let selections = 0;
  for (const e of idx) if (e >= 0) selections++;
  for (let r = 0; r <= p.reps; r++) {
    await comm.barrier();
    const t0 = now();
    const d = await buf.lowLatencyDispatch({ dtype: 'bf16', hidden: p.H, data: xb }, idx, p.T, p.E, { useFp8: true });
    const t1 = now();
    await comm.barrier();
    const t2 = now();
    await buf.lowLatencyCombine({ dtype: 'bf16', hidden: p.H, data: y }, idx, weights, d.handle);
    const t3 = now();
    if (r > 0) {
      dispatchSeconds.push(t1 - t0);
      combineSeconds.push(t3 - t2);
    }
  }
  return {
    dispatchSeconds, combineSeconds,
    dispatchBytes: selections * (p.H + 4 * Math.ceil(p.H / 128) + 16), combineBytes: selections * (2 * p.H + 16),
  };
});
