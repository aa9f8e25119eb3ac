// The routed experts one expert-parallel rank holds, read straight from the checkpoint (only this rank's
// slots), stacked per layer as DeepGEMM grouped weights [G, n, k], and computed with DeepGEMM's grouped
// GEMMs on the layouts DeepEP's two modes deliver:
//   - normal mode (prefill): rows with local top-k ids -> contiguous layout (segments padded to 128 rows,
//     -1 rows skipped) -> m_grouped_*_gemm_nt_contiguous; each row's outputs weighted and summed over k
//     here, as DeepEP's normal combine is unweighted;
//   - low-latency mode (decode): the masked layout [G, mMax, H] + counts -> m_grouped_*_gemm_nt_masked;
//     the weights are applied by the weighted low-latency combine at the source.
// FP8 checkpoints use the weight-only FP8 kernels (f32 activations, weights dequantized per 128x128 block),
// BF16 checkpoints the BF16 kernels, so results match the model's own expert path to f32 rounding.
// Reference: https://github.com/deepseek-ai/DeepEP (buffer.py) and https://github.com/deepseek-ai/DeepGEMM.
import type { Kernels } from '../../../kernels/api.ts';
import {
  BLOCK, ceilDiv as cdiv, M_ALIGNMENT_CONTIGUOUS, type DeepGemmOps, type GroupedBf16Weights, type GroupedFp8Weights,
} from '../../../kernels/deepgemm/index.ts';
import { Checkpoint } from '../../../weights/checkpoint.ts';

type Grouped = { kind: 'fp8'; w: GroupedFp8Weights } | { kind: 'bf16'; w: GroupedBf16Weights };

/**
 * Where stacked expert weights are allocated: a DeepGEMM backend's own memory (WasmDeepGemm keeps them in
 * wasm memory, so its kernels read them in place); without one, plain typed arrays (the ref).
 */
export interface GroupedWeightAlloc {
  allocGroupedFp8(groups: number, n: number, k: number): GroupedFp8Weights;
  allocGroupedBf16(groups: number, n: number, k: number): GroupedBf16Weights;
}

const plainAlloc: GroupedWeightAlloc = {
  allocGroupedFp8: (groups, n, k) => ({
    groups, n, k, data: new Uint8Array(groups * n * k), scales: new Float32Array(groups * cdiv(n, BLOCK) * cdiv(k, BLOCK)),
  }),
  allocGroupedBf16: (groups, n, k) => ({ groups, n, k, data: new Uint16Array(groups * n * k) }),
};

export interface LayerExperts {
  /** Logical expert id of each local slot g. */
  readonly logical: readonly number[];
  readonly gate: Grouped;
  readonly up: Grouped;
  readonly down: Grouped;
}

export class ExpertLoadError extends Error {
  override name = 'ExpertLoadError';
  constructor(readonly tensor: string, detail: string) {
    super(`${tensor}: ${detail}`);
  }
}

/** Reads and stacks `model.layers.{layer}.mlp.experts.{e}.{proj}_proj.weight` for the given experts. */
function loadGrouped(ck: Checkpoint, layer: number, experts: readonly number[], proj: 'gate' | 'up' | 'down', n: number, k: number, alloc: GroupedWeightAlloc): Grouped {
  const G = experts.length;
  const name = (e: number): string => `model.layers.${layer}.mlp.experts.${e}.${proj}_proj.weight`;
  const first = ck.expect(name(experts[0]!), ['BF16', 'F8_E4M3'], [n, k]);
  if (first.dtype === 'BF16') {
    const w = alloc.allocGroupedBf16(G, n, k);
    experts.forEach((e, g) => {
      ck.expect(name(e), ['BF16'], [n, k]);
      ck.readInto(name(e), w.data.subarray(g * n * k, (g + 1) * n * k));
    });
    return { kind: 'bf16', w };
  }
  const sn = cdiv(n, BLOCK) * cdiv(k, BLOCK);
  const w = alloc.allocGroupedFp8(G, n, k);
  experts.forEach((e, g) => {
    ck.expect(name(e), ['F8_E4M3'], [n, k]);
    const sname = `${name(e)}_scale_inv`;
    if (!ck.has(sname)) throw new ExpertLoadError(name(e), `FP8 weight without ${sname}`);
    ck.expect(sname, ['F32'], [cdiv(n, BLOCK), cdiv(k, BLOCK)]);
    ck.readInto(name(e), w.data.subarray(g * n * k, (g + 1) * n * k));
    ck.readInto(sname, w.scales.subarray(g * sn, (g + 1) * sn));
  });
  return { kind: 'fp8', w };
}

/**
 * Loads this rank's experts: slots[layer] = logical expert of each local slot (only MoE layers listed),
 * into `alloc`'s memory (default: plain typed arrays).
 */
export function loadRankExperts(modelDir: string, hidden: number, inter: number, slots: ReadonlyMap<number, readonly number[]>,
  alloc: GroupedWeightAlloc = plainAlloc): Map<number, LayerExperts> {
  const ck = Checkpoint.open(modelDir);
  try {
    const out = new Map<number, LayerExperts>();
    for (const [layer, logical] of slots) {
      if (logical.length === 0) continue;
      out.set(layer, {
        logical,
        gate: loadGrouped(ck, layer, logical, 'gate', inter, hidden, alloc),
        up: loadGrouped(ck, layer, logical, 'up', inter, hidden, alloc),
        down: loadGrouped(ck, layer, logical, 'down', hidden, inter, alloc),
      });
    }
    return out;
  } finally {
    ck.close();
  }
}

function contiguous(gemm: DeepGemmOps, x: Float32Array, m: number, b: Grouped, mIndices: Int32Array): Float32Array {
  return b.kind === 'fp8' ? gemm.mGroupedFp8WeightGemmNtContiguous(x, m, b.w, mIndices) : gemm.mGroupedBf16GemmNtContiguous(x, m, b.w, mIndices);
}

function masked(gemm: DeepGemmOps, x: Float32Array, b: Grouped, counts: Int32Array, mMax: number): Float32Array {
  return b.kind === 'fp8' ? gemm.mGroupedFp8WeightGemmNtMasked(x, b.w, counts, mMax) : gemm.mGroupedBf16GemmNtMasked(x, b.w, counts, mMax);
}

/**
 * Normal mode: x [N, H] received rows, topk [N, K] local slot ids (-1 = elsewhere), weights [N, K].
 * Returns y [N, H] = Σ_k w[n,k]·expert_{topk[n,k]}(x[n]) over this rank's slots, summed in k order.
 */
export function runContiguous(gemm: DeepGemmOps, kernels: Kernels, le: LayerExperts | undefined, x: Float32Array, N: number, H: number, topk: Int32Array, weights: Float32Array, K: number): Float32Array {
  const y = new Float32Array(N * H);
  if (N === 0 || !le) return y;
  const G = le.logical.length;
  // Contiguous layout: slot-major segments, each padded to a multiple of 128 rows (-1 = padding).
  const counts = new Int32Array(G);
  for (let i = 0; i < N * K; i++) if (topk[i]! >= 0) counts[topk[i]!]!++;
  const start = new Int32Array(G + 1);
  for (let g = 0; g < G; g++) start[g + 1] = start[g]! + cdiv(counts[g]!, M_ALIGNMENT_CONTIGUOUS) * M_ALIGNMENT_CONTIGUOUS;
  const M = start[G]!;
  const mIndices = new Int32Array(M).fill(-1);
  const rowOfPair = new Int32Array(N * K).fill(-1);
  const fill = start.slice(0, G);
  const a = new Float32Array(M * H);
  for (let i = 0; i < N * K; i++) {
    const g = topk[i]!;
    if (g < 0) continue;
    const r = fill[g]!++;
    mIndices[r] = g;
    rowOfPair[i] = r;
    const n = (i / K) | 0;
    a.set(x.subarray(n * H, (n + 1) * H), r * H);
  }
  const inter = le.gate.w.n;
  const gate = contiguous(gemm, a, M, le.gate, mIndices);
  const up = contiguous(gemm, a, M, le.up, mIndices);
  const h = kernels.siluMul(gate, up, gate);
  const d = contiguous(gemm, h.subarray(0, M * inter), M, le.down, mIndices);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const r = rowOfPair[n * K + k]!;
      if (r < 0) continue;
      const w = weights[n * K + k]!;
      for (let c = 0; c < H; c++) y[n * H + c] = y[n * H + c]! + w * d[r * H + c]!;
    }
  }
  return y;
}

/** Low-latency mode: x [G, mMax, H] masked by counts[G]; returns expert outputs in the same layout. */
export function runMasked(gemm: DeepGemmOps, kernels: Kernels, le: LayerExperts | undefined, x: Float32Array, counts: Int32Array, mMax: number, H: number): Float32Array {
  const G = counts.length;
  if (!le) return new Float32Array(G * mMax * H);
  const gate = masked(gemm, x, le.gate, counts, mMax);
  const up = masked(gemm, x, le.up, counts, mMax);
  const h = kernels.siluMul(gate, up, gate);
  return masked(gemm, h, le.down, counts, mMax);
}
