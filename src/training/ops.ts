// Differentiable ops of the DeepSeek-V3 training forward that the generic autograd
// (src/tensor/autograd: add, rmsNorm, crossEntropy, ...) does not have, with hand-written backward
// passes. Row-major tensors, last dimension contiguous; shapes in comments use T tokens, H hidden,
// V vocabulary, E routed experts, k experts per token, R = T·k routed rows, Hd heads.
// Every op keeps the element type of its inputs: Float32Array for training (products through the
// kernels, see gemm.ts), Float64Array for the finite-difference checks.
// Reference: DeepSeek-V3 technical report, arXiv 2412.19437 (§2.1 MLA and DeepSeekMoE, §2.2 MTP).
import { AutogradError, makeResult, type FloatArray, type Tensor, type WeightGradStore } from '../tensor/autograd/index.ts';
import type { GroupSegments } from '../kernels/api.ts';
import type { Gemm } from './gemm.ts';

function cols(t: Tensor, op: string): number {
  if (t.shape.length < 1) throw new AutogradError('needs at least one dimension', op);
  return t.shape[t.shape.length - 1]!;
}

function alloc(like: Tensor, n: number): FloatArray {
  return new (like.ctor)(n);
}

// ---------------------------------------------------------------------------------- embedding / rows

/** Rows of the embedding table W [V, H] for `ids` → [T, H]; dW is a scatter-add over the ids. */
export function embedding(weight: Tensor, ids: Int32Array): Tensor {
  const [V, H] = weight.shape as [number, number];
  const y = alloc(weight, ids.length * H);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t]!;
    if (!(id >= 0 && id < V)) throw new AutogradError(`token id ${id} outside [0, ${V})`, 'embedding');
    y.set(weight.data.subarray(id * H, (id + 1) * H), t * H);
  }
  return makeResult(y, [ids.length, H], {
    name: 'embedding',
    inputs: [weight],
    backward(dy) {
      const dw = alloc(weight, V * H);
      for (let t = 0; t < ids.length; t++) {
        const o = ids[t]! * H;
        for (let i = 0; i < H; i++) dw[o + i]! += dy[t * H + i]!;
      }
      return [dw];
    },
  });
}

/** y[r] = x[rows[r]] for x [T, C] → [rows.length, C]; backward scatter-adds (rows may repeat). */
export function takeRows(x: Tensor, rows: Int32Array): Tensor {
  const C = cols(x, 'takeRows');
  const T = x.size / C;
  const y = alloc(x, rows.length * C);
  for (let r = 0; r < rows.length; r++) {
    const s = rows[r]!;
    if (!(s >= 0 && s < T)) throw new AutogradError(`row ${s} outside [0, ${T})`, 'takeRows');
    y.set(x.data.subarray(s * C, (s + 1) * C), r * C);
  }
  return makeResult(y, [rows.length, C], {
    name: 'takeRows',
    inputs: [x],
    backward(dy) {
      const dx = alloc(x, x.size);
      for (let r = 0; r < rows.length; r++) {
        const o = rows[r]! * C;
        for (let i = 0; i < C; i++) dx[o + i]! += dy[r * C + i]!;
      }
      return [dx];
    },
  });
}

/** Columns [off, off + n) of x [T, C] → [T, n]. */
export function sliceCols(x: Tensor, off: number, n: number): Tensor {
  const C = cols(x, 'sliceCols');
  if (off < 0 || n < 0 || off + n > C) throw new AutogradError(`columns [${off}, ${off + n}) outside [0, ${C})`, 'sliceCols');
  const T = x.size / C;
  const y = alloc(x, T * n);
  for (let t = 0; t < T; t++) y.set(x.data.subarray(t * C + off, t * C + off + n), t * n);
  return makeResult(y, [T, n], {
    name: 'sliceCols',
    inputs: [x],
    backward(dy) {
      const dx = alloc(x, x.size);
      for (let t = 0; t < T; t++) dx.set(dy.subarray(t * n, (t + 1) * n), t * C + off);
      return [dx];
    },
  });
}

/** [a | b] along the last dimension: a [T, A], b [T, B] → [T, A + B]. */
export function concatCols(a: Tensor, b: Tensor): Tensor {
  const A = cols(a, 'concatCols'), B = cols(b, 'concatCols');
  const T = a.size / A;
  if (b.size / B !== T) throw new AutogradError(`${T} rows and ${b.size / B} rows`, 'concatCols');
  const C = A + B;
  const y = alloc(a, T * C);
  for (let t = 0; t < T; t++) {
    y.set(a.data.subarray(t * A, (t + 1) * A), t * C);
    y.set(b.data.subarray(t * B, (t + 1) * B), t * C + A);
  }
  return makeResult(y, [T, C], {
    name: 'concatCols',
    inputs: [a, b],
    backward(dy) {
      const da = alloc(a, a.size), db = alloc(b, b.size);
      for (let t = 0; t < T; t++) {
        da.set(dy.subarray(t * C, t * C + A), t * A);
        db.set(dy.subarray(t * C + A, (t + 1) * C), t * B);
      }
      return [da, db];
    },
  });
}

/** c · x (a constant factor, e.g. the MTP loss weight λ). */
export function scale(x: Tensor, c: number): Tensor {
  const y = alloc(x, x.size);
  for (let i = 0; i < y.length; i++) y[i] = x.data[i]! * c;
  return makeResult(y, x.shape, {
    name: 'scale',
    inputs: [x],
    backward(dy) {
      const dx = alloc(x, x.size);
      for (let i = 0; i < dx.length; i++) dx[i] = dy[i]! * c;
      return [dx];
    },
  });
}

/** Σ of one-element tensors (the loss terms) → one element. */
export function sumScalars(xs: readonly Tensor[]): Tensor {
  if (xs.length === 0) throw new AutogradError('nothing to sum', 'sumScalars');
  const y = alloc(xs[0]!, 1);
  let s = 0;
  for (const x of xs) {
    if (x.size !== 1) throw new AutogradError(`a term of ${x.size} elements`, 'sumScalars');
    s += x.data[0]!;
  }
  y[0] = s;
  return makeResult(y, [], { name: 'sumScalars', inputs: xs, backward: (dy) => xs.map((x) => alloc(x, 1).fill(dy[0]!)) });
}

// ---------------------------------------------------------------------------------- linear layers

export interface LinearOptions {
  /** When given and enabled, dW is deferred into the store (DualPipe's zero-bubble W step). */
  store?: WeightGradStore | null;
}

/**
 * The weight gradient of a linear op: computed now and returned (backward() accumulates it), or, while
 * the store is enabled, deferred: the store's W step computes it later and adds it into weight.grad.
 */
function weightGrad(weight: Tensor, opts: LinearOptions, compute: () => FloatArray): FloatArray | null {
  if (!weight.requiresGrad) return null;
  if (!opts.store?.enabled) return compute();
  opts.store.put(() => {
    const d = compute();
    if (weight.grad) for (let i = 0; i < d.length; i++) weight.grad[i]! += d[i]!;
    else weight.grad = d;
  });
  return null;
}

/** y [T, N] = x [T, K] · Wᵀ, W [N, K] (HF layout; no bias in this family). */
export function linear(g: Gemm, x: Tensor, weight: Tensor, opts: LinearOptions = {}): Tensor {
  if (weight.shape.length !== 2) throw new AutogradError('weight must be [out, in]', 'linear');
  const [N, K] = weight.shape as [number, number];
  if (cols(x, 'linear') !== K) throw new AutogradError(`input has ${cols(x, 'linear')} features, weight ${K}`, 'linear');
  const T = x.size / K;
  const y = g.nt(x.data, T, weight.data, N, K);
  return makeResult(y, [...x.shape.slice(0, -1), N], {
    name: 'linear',
    inputs: [x, weight],
    backward(dy) {
      const dw = weightGrad(weight, opts, () => g.tn(dy, x.data, T, N, K));
      return [x.requiresGrad ? g.nn(dy, T, weight.data, N, K) : null, dw];
    },
  });
}

/**
 * The routed experts' products: rows of segment e of x [R, K] times W_eᵀ, W [E, N, K] → [R, N]
 * (DeepGEMM's m-grouped contiguous layout). dx is the grouped product with the transposed experts;
 * dW_e = dy_eᵀ · x_e per expert that received rows.
 */
export function groupedLinear(g: Gemm, x: Tensor, weight: Tensor, seg: GroupSegments, opts: LinearOptions = {}): Tensor {
  if (weight.shape.length !== 3) throw new AutogradError('weight must be [groups, out, in]', 'groupedLinear');
  const [E, N, K] = weight.shape as [number, number, number];
  if (cols(x, 'groupedLinear') !== K) throw new AutogradError(`input has ${cols(x, 'groupedLinear')} features, weight ${K}`, 'groupedLinear');
  const R = x.size / K;
  const y = g.groupedNt(x.data, R, weight.data, E, N, K, seg);
  return makeResult(y, [R, N], {
    name: 'groupedLinear',
    inputs: [x, weight],
    backward(dy) {
      let dx: FloatArray | null = null;
      if (x.requiresGrad) {
        const wt = alloc(weight, weight.size); // [E, K, N]
        for (let e = 0; e < E; e++) {
          const o = e * N * K;
          for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wt[o + k * N + n] = weight.data[o + n * K + k]!;
        }
        dx = g.groupedNt(dy, R, wt, E, K, N, seg);
      }
      const dw = weightGrad(weight, opts, () => {
        const d = alloc(weight, weight.size);
        for (let e = 0; e < E; e++) {
          const r0 = seg.start[e]!, n = seg.count[e]!;
          if (n === 0) continue;
          d.set(g.tn(dy.subarray(r0 * N, (r0 + n) * N), x.data.subarray(r0 * K, (r0 + n) * K), n, N, K), e * N * K);
        }
        return d;
      });
      return [dx, dw];
    },
  });
}

// ---------------------------------------------------------------------------------- activations

/** SwiGLU's silu(gate) ⊙ up in one op (one rounding, like the kernels' siluMul). */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  if (gate.size !== up.size) throw new AutogradError(`${gate.size} and ${up.size} elements`, 'swiglu');
  const y = alloc(gate, gate.size);
  for (let i = 0; i < y.length; i++) {
    const a = gate.data[i]!;
    y[i] = (a / (1 + Math.exp(-a))) * up.data[i]!;
  }
  return makeResult(y, gate.shape, {
    name: 'swiglu',
    inputs: [gate, up],
    backward(dy) {
      const dg = alloc(gate, gate.size), du = alloc(up, up.size);
      for (let i = 0; i < dy.length; i++) {
        const a = gate.data[i]!;
        const s = 1 / (1 + Math.exp(-a));
        du[i] = dy[i]! * a * s;
        dg[i] = dy[i]! * up.data[i]! * s * (1 + a * (1 - s));
      }
      return [dg, du];
    },
  });
}

/** Elementwise sigmoid (DeepSeek-V3's router scores s = σ(u·e)). */
export function sigmoid(x: Tensor): Tensor {
  const y = alloc(x, x.size);
  for (let i = 0; i < y.length; i++) y[i] = 1 / (1 + Math.exp(-x.data[i]!));
  return makeResult(y, x.shape, {
    name: 'sigmoid',
    inputs: [x],
    backward(dy) {
      const dx = alloc(x, x.size);
      for (let i = 0; i < dx.length; i++) dx[i] = dy[i]! * y[i]! * (1 - y[i]!);
      return [dx];
    },
  });
}

// ---------------------------------------------------------------------------------- RoPE

/**
 * Rotary embedding on interleaved pairs of columns [offset, offset + dim) of each of the `rep` vectors
 * of stride `stride` per row of x [T, rep·stride] (queries: rep = heads; k_pe: rep = 1), by the angles
 * whose cos/sin are [T·rep, dim/2] (RopeTable.rows). Returns a new tensor; other columns pass through.
 * The backward rotates the gradient by the opposite angle (the rotation's transpose).
 */
export function rope(x: Tensor, rep: number, stride: number, offset: number, dim: number, cos: ArrayLike<number>, sin: ArrayLike<number>): Tensor {
  const C = cols(x, 'rope');
  if (C !== rep * stride || offset + dim > stride || dim % 2) throw new AutogradError(`bad layout: ${C} columns, ${rep}x${stride}, rope [${offset}, ${offset + dim})`, 'rope');
  const rows = (x.size / C) * rep;
  const half = dim / 2;
  if (cos.length !== rows * half || sin.length !== rows * half) throw new AutogradError(`cos/sin need ${rows}x${half} values`, 'rope');
  const rotate = (src: FloatArray, dst: FloatArray, sign: number) => {
    for (let r = 0; r < rows; r++) {
      const b = r * stride + offset;
      for (let i = 0; i < half; i++) {
        const a = src[b + 2 * i]!, c = src[b + 2 * i + 1]!;
        const co = cos[r * half + i]!, s = sign * sin[r * half + i]!;
        dst[b + 2 * i] = a * co - c * s;
        dst[b + 2 * i + 1] = a * s + c * co;
      }
    }
  };
  const y = alloc(x, x.size);
  y.set(x.data);
  rotate(x.data, y, 1);
  return makeResult(y, x.shape, {
    name: 'rope',
    inputs: [x],
    backward(dy) {
      const dx = alloc(x, x.size);
      dx.set(dy);
      rotate(dy, dx, -1);
      return [dx];
    },
  });
}
