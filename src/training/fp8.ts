// FP8 mixed-precision products for training (DeepSeek-V3 technical report, arXiv 2412.19437 §3.3):
// the three GEMMs of a linear layer (Fprop y = x·Wᵀ, Dgrad dx = dy·W, Wgrad dW = dyᵀ·x) take FP8 e4m3
// inputs with fine-grained scales and accumulate in f32, through the DeepGEMM port
// (kernels/deepgemm fp8GemmNt, its "1D2D" recipe: the left operand in 1×128 tiles per row, the right
// operand in 128×128 blocks, partial sums promoted to f32 every 128 K).
// Every product is written through the Gemm primitives (gemm.ts); the quantization follows DeepSeek-V3:
//   Fprop  nt(x, W)        x per token × 128 channels (1×128),   W in 128×128 blocks    fp8GemmNt (1D2D)
//   Dgrad  nn(dy, W)       dy per token × 128 channels (1×128),  Wᵀ in 128×128 blocks   fp8GemmNt (1D2D)
//   Wgrad  tn(dy, x)       dyᵀ per channel × 128 tokens (1×128), xᵀ per channel × 128 tokens (1×128)
//                          fp8GemmNt1d1d (1D1D: both operands' tiles run along the reduction dim, tokens,
//                          as DeepGEMM's wgrad kernels)
// The routed experts' Fprop/Dgrad run as ONE m-grouped contiguous FP8 product per call
// (mGroupedFp8GemmNtContiguous, rows of each expert's segment against that expert's 128×128-block
// weight), bit-identical to one fp8GemmNt per expert (groupedNtPerExpert; fp8.test.ts).
// What stays in higher precision, as in DeepSeek-V3: the embedding, the output head, the MoE gating
// (router), normalisation and attention (QKᵀ, PV), the MTP module's eh_proj; the master weights and weight
// gradients stay f32, and the AdamW moments are stored in BF16 on FP8 runs (optim.ts `moments: 'bf16'`,
// DeepSeek-V3 §3.3.3).
import type { GroupSegments } from '../kernels/api.ts';
import {
  quantizeGrouped, quantizePerBlock, quantizePerToken, type DeepGemm1d1dOps, type DeepGemmOps,
} from '../kernels/deepgemm/index.ts';
import type { FloatArray } from '../tensor/autograd/index.ts';
import { Gemm, GemmError, transpose } from './gemm.ts';

export class Fp8Gemm extends Gemm {
  /** FP8 products run (tests check the FP8 path is taken). */
  fp8Calls = 0;
  /** Of those, grouped (one call for all experts) and 1D1D Wgrad products. */
  groupedCalls = 0;
  wgradCalls = 0;

  constructor(readonly deepGemm: DeepGemmOps & DeepGemm1d1dOps) {
    super(null);
  }

  override nt(a: FloatArray, M: number, b: FloatArray, N: number, K: number): FloatArray {
    if (a.length !== M * K || b.length !== N * K) throw new GemmError(`nt: a has ${a.length} (want ${M}x${K}), b ${b.length} (want ${N}x${K})`);
    if (!(a instanceof Float32Array && b instanceof Float32Array)) throw new GemmError('fp8 nt: operands must be float32');
    this.fp8Calls++;
    if (M === 0 || N === 0) return new Float32Array(M * N);
    if (K === 0) return new Float32Array(M * N);
    return this.deepGemm.fp8GemmNt(quantizePerToken(a, M, K), quantizePerBlock(b, N, K));
  }

  /**
   * Wgrad dW[N, K] = dy[M, N]ᵀ · x[M, K] with the 1D1D recipe: dyᵀ [N, M] and xᵀ [K, M] both quantized
   * per row in 1×128 tiles along M (tokens, the reduction dim), f32 promotion every 128 tokens.
   */
  override tn(dy: FloatArray, x: FloatArray, M: number, N: number, K: number): FloatArray {
    if (dy.length !== M * N || x.length !== M * K) throw new GemmError(`tn: dy has ${dy.length} (want ${M}x${N}), x ${x.length} (want ${M}x${K})`);
    if (!(dy instanceof Float32Array && x instanceof Float32Array)) throw new GemmError('fp8 tn: operands must be float32');
    this.fp8Calls++;
    this.wgradCalls++;
    if (M === 0 || N === 0 || K === 0) return new Float32Array(N * K);
    return this.deepGemm.fp8GemmNt1d1d(quantizePerToken(transpose(dy, M, N), N, M), quantizePerToken(transpose(x, M, K), K, M));
  }

  /**
   * Rows [start[g], start[g] + count[g]) of a[M, K] times expert g's b_gᵀ (b [G, N, K]), other rows 0: ONE
   * m-grouped contiguous FP8 product (a per token 1×128, each b_g in 128×128 blocks; mIndices maps each
   * row to its expert, -1 for rows in no segment).
   */
  override groupedNt(a: FloatArray, M: number, b: FloatArray, G: number, N: number, K: number, seg: GroupSegments): FloatArray {
    if (a.length !== M * K || b.length !== G * N * K) throw new GemmError(`groupedNt: a has ${a.length} (want ${M}x${K}), b ${b.length} (want ${G}x${N}x${K})`);
    if (!(a instanceof Float32Array && b instanceof Float32Array)) throw new GemmError('fp8 groupedNt: operands must be float32');
    this.fp8Calls++;
    this.groupedCalls++;
    if (M === 0 || N === 0 || K === 0) return new Float32Array(M * N);
    const mIndices = new Int32Array(M).fill(-1);
    for (let g = 0; g < G; g++) mIndices.fill(g, seg.start[g]!, seg.start[g]! + seg.count[g]!);
    return this.deepGemm.mGroupedFp8GemmNtContiguous(quantizePerToken(a, M, K), quantizeGrouped(b, G, N, K), mIndices);
  }

  /** Each expert's rows times its weight, one FP8 product per expert that received rows (the oracle of groupedNt). */
  groupedNtPerExpert(a: FloatArray, M: number, b: FloatArray, G: number, N: number, K: number, seg: GroupSegments): FloatArray {
    if (a.length !== M * K || b.length !== G * N * K) throw new GemmError(`groupedNt: a has ${a.length} (want ${M}x${K}), b ${b.length} (want ${G}x${N}x${K})`);
    const y = new Float32Array(M * N);
    for (let g = 0; g < G; g++) {
      const r0 = seg.start[g]!, n = seg.count[g]!;
      if (n === 0) continue;
      y.set(this.nt(a.subarray(r0 * K, (r0 + n) * K), n, b.subarray(g * N * K, (g + 1) * N * K), N, K), r0 * N);
    }
    return y;
  }
}
