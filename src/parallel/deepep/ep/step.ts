// One MoE layer on one expert-parallel rank, the same sequence of DeepEP calls on every rank (SPMD):
//   normal mode:      dispatch -> grouped GEMMs (contiguous) -> weighted per row -> combine (sum);
//   low-latency mode: per micro-batch dispatch with a receive hook; for each micro-batch in turn: wait,
//                     grouped GEMMs (masked), start the weighted combine; then wait for the combines.
// With two micro-batches, while a rank computes micro-batch 0 the data of micro-batch 1 is already
// being written into its buffers, and micro-batch 0's results travel back while it computes
// micro-batch 1 (DeepSeek's two-micro-batch overlap in decode).
// Rank 0 (the model's thread) runs this through the blocking API; expert-only ranks (no tokens of their
// own) through the async one. `io` abstracts that difference.
import type { Kernels } from '../../../kernels/api.ts';
import type { DeepGemmOps } from '../../../kernels/deepgemm/index.ts';
import type { Buffer } from '../buffer.ts';
import type { Tokens } from '../tokens.ts';
import { runContiguous, runMasked, type LayerExperts } from './experts.ts';

export interface StepInput {
  /** [T, H] f32 tokens of this rank (T = 0 on expert-only ranks). */
  x: Float32Array;
  T: number;
  /** [T, K] physical slot ids, [T, K] weights. */
  topk: Int32Array;
  weights: Float32Array;
}

export interface StepContext {
  buf: Buffer;
  gemm: DeepGemmOps;
  kernels: Kernels;
  experts: LayerExperts | undefined;
  hidden: number;
  numTopk: number;
  numPhysical: number;
  maxTokensPerRank: number;
}

const f32 = (hidden: number, data: Float32Array): Tokens => ({ dtype: 'f32', hidden, data });

/** Blocking variant (rank 0): returns [T, H]. */
export function moeStepSync(c: StepContext, mode: 'normal' | 'low-latency', microBatches: number, inp: StepInput): Float32Array {
  const { buf, hidden: H, numTopk: K } = c;
  if (mode === 'normal') {
    const layout = buf.getDispatchLayout(inp.topk, c.numPhysical, K);
    const d = buf.dispatchSync(f32(H, inp.x), inp.topk, inp.weights, layout);
    const N = d.recvX.data.length / H;
    const y = runContiguous(c.gemm, c.kernels, c.experts, d.recvX.data as Float32Array, N, H, d.recvTopkIdx, d.recvTopkWeights, K);
    return buf.combineSync(f32(H, y), d.handle).data as Float32Array;
  }
  const chunks = split(inp.T, microBatches);
  const mMax = c.maxTokensPerRank * buf.numRanks;
  const ds = chunks.map(([a, b]) =>
    buf.lowLatencyDispatchSync(f32(H, inp.x.subarray(a * H, b * H)), inp.topk.subarray(a * K, b * K), c.maxTokensPerRank, c.numPhysical, { useFp8: false, returnRecvHook: true }));
  const cs = ds.map((d, i) => {
    d.hook();
    const y = runMasked(c.gemm, c.kernels, c.experts, d.recvX.data as Float32Array, d.recvCount, mMax, H);
    const [a, b] = chunks[i]!;
    return buf.lowLatencyCombineSync(f32(H, y), inp.topk.subarray(a * K, b * K), inp.weights.subarray(a * K, b * K), d.handle, { returnRecvHook: true });
  });
  const out = new Float32Array(inp.T * H);
  cs.forEach((cr, i) => {
    cr.hook();
    out.set(cr.out, chunks[i]![0] * H);
  });
  return out;
}

/** Async variant (expert-only ranks, T = 0). */
export async function moeStepAsync(c: StepContext, mode: 'normal' | 'low-latency', microBatches: number, inp: StepInput): Promise<Float32Array> {
  const { buf, hidden: H, numTopk: K } = c;
  if (mode === 'normal') {
    const layout = buf.getDispatchLayout(inp.topk, c.numPhysical, K);
    const d = await buf.dispatch(f32(H, inp.x), inp.topk, inp.weights, layout);
    const N = d.recvX.data.length / H;
    const y = runContiguous(c.gemm, c.kernels, c.experts, d.recvX.data as Float32Array, N, H, d.recvTopkIdx, d.recvTopkWeights, d.handle.numTopk || K);
    return (await buf.combine(f32(H, y), d.handle)).data as Float32Array;
  }
  const chunks = split(inp.T, microBatches);
  const mMax = c.maxTokensPerRank * buf.numRanks;
  const ds = [];
  for (const [a, b] of chunks) {
    ds.push(await buf.lowLatencyDispatch(f32(H, inp.x.subarray(a * H, b * H)), inp.topk.subarray(a * K, b * K), c.maxTokensPerRank, c.numPhysical, { useFp8: false, returnRecvHook: true }));
  }
  const cs = [];
  for (const [i, d] of ds.entries()) {
    await d.hook();
    const y = runMasked(c.gemm, c.kernels, c.experts, d.recvX.data as Float32Array, d.recvCount, mMax, H);
    const [a, b] = chunks[i]!;
    cs.push(await buf.lowLatencyCombine(f32(H, y), inp.topk.subarray(a * K, b * K), inp.weights.subarray(a * K, b * K), d.handle, { returnRecvHook: true }));
  }
  const out = new Float32Array(inp.T * H);
  for (const [i, cr] of cs.entries()) {
    await cr.hook();
    out.set(cr.out, chunks[i]![0] * H);
  }
  return out;
}

/** Token ranges of the micro-batches: [0, ⌈T/2⌉), [⌈T/2⌉, T) for two (each rank splits the same way). */
function split(T: number, microBatches: number): [number, number][] {
  if (microBatches <= 1) return [[0, T]];
  const h = Math.ceil(T / 2);
  return [[0, h], [h, T]];
}
