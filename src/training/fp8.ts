// FP8 mixed-precision products for training (DeepSeek-V3 technical report, arXiv 2412.19437 §3.3):
// the three GEMMs of a linear layer (Fprop y = x·Wᵀ, Dgrad dx = dy·W, Wgrad dW = dyᵀ·x) take FP8 e4m3
// inputs with fine-grained scales and accumulate in f32, through the DeepGEMM port
// (kernels/deepgemm fp8GemmNt, its "1D2D" recipe: the left operand in 1×128 tiles per row, the right
// operand in 128×128 blocks, partial sums promoted to f32 every 128 K).
// Every product is written as nt (gemm.ts), so one quantization rule covers the three:
//   Fprop  nt(x, W)        x per token × 128 channels,     W in 128×128 blocks      (§3.3.2: as DeepSeek-V3)
//   Dgrad  nt(dy, Wᵀ)      dy per token × 128 channels,    Wᵀ in 128×128 blocks     (as DeepSeek-V3)
//   Wgrad  nt(dyᵀ, xᵀ)     dyᵀ per channel × 128 tokens,   xᵀ in 128×128 blocks     (DeepSeek-V3 quantizes this
//                          one's activation in 1×128 tiles too, a 1D1D kernel the port does not have)
// What stays in higher precision, as in DeepSeek-V3: the embedding, the output head, the MoE gating
// (router), normalisation and attention (QKᵀ, PV), the MTP module's eh_proj; the master weights, weight
// gradients and optimizer states stay f32 (DeepSeek-V3 keeps the moments in BF16).
import type { GroupSegments } from '../kernels/api.ts';
import { quantizePerBlock, quantizePerToken, type DeepGemmOps } from '../kernels/deepgemm/index.ts';
import type { FloatArray } from '../tensor/autograd/index.ts';
import { Gemm, GemmError } from './gemm.ts';

export class Fp8Gemm extends Gemm {
  /** FP8 products run (tests check the FP8 path is taken). */
  fp8Calls = 0;

  constructor(readonly deepGemm: DeepGemmOps) {
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

  /** Each expert's rows times its weight, one FP8 product per expert that received rows. */
  override groupedNt(a: FloatArray, M: number, b: FloatArray, G: number, N: number, K: number, seg: GroupSegments): FloatArray {
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
