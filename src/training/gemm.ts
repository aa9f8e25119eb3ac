// The GEMMs of training, behind one primitive: y[M, N] = a[M, K] · b[N, K]ᵀ (the `matmul` of the
// kernels, which take weights as [N, K]). Every product of the forward and backward passes (linear
// layers, routed experts, attention's QKᵀ and PV and their gradients) is written as this product of
// suitably transposed operands, so it reaches the kernels in one form:
//   forward      y  = x · Wᵀ                nt(x, W)
//   input grad   dx = dy · W    = dy · (Wᵀ)ᵀ  nt(dy, Wᵀ)
//   weight grad  dW = dyᵀ · x   = dyᵀ · (xᵀ)ᵀ nt(dyᵀ, xᵀ)
// The element type of the operands picks the engine:
// - Float32Array (training): the backend's `matmul` / `groupedMatmul` (wasm SIMD; the routed experts
//   through the grouped product, DeepGEMM's m-grouped contiguous layout);
// - Float64Array (gradient checks): plain float64 loops, so finite differences in double precision see
//   the same backward code with exact-enough arithmetic.
// Reference: DeepSeek-V3 technical report, arXiv 2412.19437 (§3.3: the three GEMMs Fprop, Dgrad, Wgrad).
import type { GroupSegments, Kernels } from '../kernels/api.ts';
import type { FloatArray } from '../tensor/autograd/index.ts';

/** b[rows, cols] → bᵀ[cols, rows], same element type. */
export function transpose(b: FloatArray, rows: number, cols: number): FloatArray {
  const out = new (b instanceof Float32Array ? Float32Array : Float64Array)(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = b[o + c]!;
  }
  return out;
}

/** Plain-loop y[M, N] = a[M, K] · b[N, K]ᵀ with double accumulation (the float64 oracle). */
export function ntLoops(a: FloatArray, M: number, b: FloatArray, N: number, K: number): FloatArray {
  const y = new (a instanceof Float32Array ? Float32Array : Float64Array)(M * N);
  for (let m = 0; m < M; m++) {
    const ao = m * K;
    for (let n = 0; n < N; n++) {
      const bo = n * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += a[ao + k]! * b[bo + k]!;
      y[m * N + n] = s;
    }
  }
  return y;
}

export class GemmError extends Error {
  override name = 'GemmError';
}

/** The product engine of a training run (see the file comment). */
export class Gemm {
  /** GEMM calls that went to the kernels (tests check that the f32 path really uses them). */
  kernelCalls = 0;

  /** `kernels` null: float64 loops only (gradient checks); f32 operands then are an error. */
  constructor(readonly kernels: Kernels | null) {}

  /** y[M, N] = a[M, K] · b[N, K]ᵀ. */
  nt(a: FloatArray, M: number, b: FloatArray, N: number, K: number): FloatArray {
    if (a.length !== M * K || b.length !== N * K) throw new GemmError(`nt: a has ${a.length} (want ${M}x${K}), b ${b.length} (want ${N}x${K})`);
    if (a instanceof Float64Array && b instanceof Float64Array) return ntLoops(a, M, b, N, K);
    if (!(a instanceof Float32Array && b instanceof Float32Array)) throw new GemmError('nt: operands of different element types');
    if (!this.kernels) throw new GemmError('nt: float32 operands need kernels');
    this.kernelCalls++;
    if (M === 0 || N === 0) return new Float32Array(M * N);
    return this.kernels.matmul(a, M, { dtype: 'f32', rows: N, cols: K, data: b });
  }

  /**
   * Grouped product: rows [start[g], start[g] + count[g]) of a[M, K] times b_gᵀ, b [G, N, K]; rows in no
   * segment are 0. One `groupedMatmul` for all groups on the kernels.
   */
  groupedNt(a: FloatArray, M: number, b: FloatArray, G: number, N: number, K: number, seg: GroupSegments): FloatArray {
    if (a.length !== M * K || b.length !== G * N * K) throw new GemmError(`groupedNt: a has ${a.length} (want ${M}x${K}), b ${b.length} (want ${G}x${N}x${K})`);
    if (a instanceof Float32Array && b instanceof Float32Array && this.kernels) {
      this.kernelCalls++;
      if (M === 0) return new Float32Array(0);
      return this.kernels.groupedMatmul(a, M, { dtype: 'f32', groups: G, rows: N, cols: K, data: b }, seg);
    }
    const y = new (a instanceof Float32Array ? Float32Array : Float64Array)(M * N);
    for (let g = 0; g < G; g++) {
      const r0 = seg.start[g]!, n = seg.count[g]!;
      if (n === 0) continue;
      y.set(this.nt(a.subarray(r0 * K, (r0 + n) * K), n, b.subarray(g * N * K, (g + 1) * N * K), N, K), r0 * N);
    }
    return y;
  }

  /** dx[M, K] = dy[M, N] · W[N, K]. */
  nn(dy: FloatArray, M: number, w: FloatArray, N: number, K: number): FloatArray {
    return this.nt(dy, M, transpose(w, N, K), K, N);
  }

  /** dW[N, K] = dy[M, N]ᵀ · x[M, K]. */
  tn(dy: FloatArray, x: FloatArray, M: number, N: number, K: number): FloatArray {
    return this.nt(transpose(dy, M, N), N, transpose(x, M, K), K, M);
  }
}
