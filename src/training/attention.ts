// Causal multi-head attention of MLA in its naive (training) form, with its backward pass.
// Per head h of a sequence of n tokens (keys of head h = [k_nope(h) | k_pe], k_pe shared by all heads):
//   S = Q_h · K_hᵀ · scale  [n, n], masked to j ≤ i;  P = softmax_rows(S);  O_h = P · V_h  [n, v]
// backward:  dP = dO · Vᵀ;  dV = Pᵀ · dO;  dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale;  dQ = dS · K;  dK = dSᵀ · Q.
// Every product goes through Gemm.nt (the kernels' matmul in f32). The softmax runs in double and its
// probabilities are kept for the backward ([n, n] per head and sequence: training windows are short).
// Reference: DeepSeek-V2 §2.1 (arXiv 2405.04434) and DeepSeek-V3 §2.1.1 (arXiv 2412.19437); HF
// modeling_deepseek.py DeepseekV3Attention (q = [q_nope | q_pe], k = [k_nope | k_pe], eager softmax).
import { AutogradError, makeResult, type FloatArray, type Tensor } from '../tensor/autograd/index.ts';
import { transpose, type Gemm } from './gemm.ts';

export interface AttentionShape {
  heads: number;
  /** qk_nope_head_dim, qk_rope_head_dim, v_head_dim. */
  nope: number;
  rope: number;
  v: number;
  /** Softmax scale (config.softmaxScale: qk_head_dim^-0.5, YaRN mscale² applied). */
  scale: number;
}

/**
 * q [T, Hd·(nope + rope)] (RoPE applied), kv [T, Hd·(nope + v)] (kv_b_proj output: per head
 * [k_nope | v]), kpe [T, rope] (RoPE applied, shared by the heads), over sequences of `seqLens` tokens
 * laid end to end (each attends causally within itself from its position 0) → o [T, Hd·v].
 */
export function mlaAttention(g: Gemm, q: Tensor, kv: Tensor, kpe: Tensor, seqLens: readonly number[], s: AttentionShape): Tensor {
  const { heads: Hd, nope, rope, v: vD, scale } = s;
  const qk = nope + rope, kvw = nope + vD;
  const T = seqLens.reduce((a, b) => a + b, 0);
  if (q.size !== T * Hd * qk || kv.size !== T * Hd * kvw || kpe.size !== T * rope) {
    throw new AutogradError(`q/kv/kpe sizes ${q.size}/${kv.size}/${kpe.size} do not fit ${T} tokens of ${Hd} heads`, 'mlaAttention');
  }
  const ctor = q.ctor;
  const out = new ctor(T * Hd * vD);
  /** Per (sequence, head): the probabilities P [n, n] and the head's Q, K, V. */
  const saved: { t0: number; n: number; h: number; P: FloatArray; Q: FloatArray; K: FloatArray; V: FloatArray }[] = [];
  let t0 = 0;
  for (const n of seqLens) {
    for (let h = 0; h < Hd; h++) {
      const Q = new ctor(n * qk), K = new ctor(n * qk), V = new ctor(n * vD);
      for (let i = 0; i < n; i++) {
        const t = t0 + i;
        Q.set(q.data.subarray((t * Hd + h) * qk, (t * Hd + h + 1) * qk), i * qk);
        K.set(kv.data.subarray((t * Hd + h) * kvw, (t * Hd + h) * kvw + nope), i * qk);
        K.set(kpe.data.subarray(t * rope, (t + 1) * rope), i * qk + nope);
        V.set(kv.data.subarray((t * Hd + h) * kvw + nope, (t * Hd + h + 1) * kvw), i * vD);
      }
      const S = g.nt(Q, n, K, n, qk);
      const P = new ctor(n * n);
      for (let i = 0; i < n; i++) {
        let mx = -Infinity;
        for (let j = 0; j <= i; j++) mx = Math.max(mx, S[i * n + j]! * scale);
        let sum = 0;
        const e = new Float64Array(i + 1);
        for (let j = 0; j <= i; j++) { e[j] = Math.exp(S[i * n + j]! * scale - mx); sum += e[j]!; }
        for (let j = 0; j <= i; j++) P[i * n + j] = e[j]! / sum;
      }
      const O = g.nt(P, n, transpose(V, n, vD), vD, n); // [n, v]
      for (let i = 0; i < n; i++) out.set(O.subarray(i * vD, (i + 1) * vD), ((t0 + i) * Hd + h) * vD);
      saved.push({ t0, n, h, P, Q, K, V });
    }
    t0 += n;
  }
  return makeResult(out, [T, Hd * vD], {
    name: 'mlaAttention',
    inputs: [q, kv, kpe],
    backward(dout) {
      const dq = new ctor(q.size), dkv = new ctor(kv.size), dkpe = new ctor(kpe.size);
      for (const { t0, n, h, P, Q, K, V } of saved) {
        const dO = new ctor(n * vD);
        for (let i = 0; i < n; i++) dO.set(dout.subarray(((t0 + i) * Hd + h) * vD, ((t0 + i) * Hd + h + 1) * vD), i * vD);
        const dP = g.nt(dO, n, V, n, vD); // [n, n]
        const dV = g.nt(transpose(P, n, n), n, transpose(dO, n, vD), vD, n); // [n, v]
        const dS = new ctor(n * n);
        for (let i = 0; i < n; i++) {
          let dot = 0;
          for (let j = 0; j <= i; j++) dot += dP[i * n + j]! * P[i * n + j]!;
          for (let j = 0; j <= i; j++) dS[i * n + j] = P[i * n + j]! * (dP[i * n + j]! - dot) * scale;
        }
        const dQ = g.nt(dS, n, transpose(K, n, qk), qk, n); // [n, qk]
        const dK = g.nt(transpose(dS, n, n), n, transpose(Q, n, qk), qk, n); // [n, qk]
        for (let i = 0; i < n; i++) {
          const t = t0 + i;
          dq.set(dQ.subarray(i * qk, (i + 1) * qk), (t * Hd + h) * qk);
          const ko = (t * Hd + h) * kvw;
          for (let d = 0; d < nope; d++) dkv[ko + d] = dK[i * qk + d]!;
          for (let d = 0; d < vD; d++) dkv[ko + nope + d] = dV[i * vD + d]!;
          for (let d = 0; d < rope; d++) dkpe[t * rope + d]! += dK[i * qk + nope + d]!;
        }
      }
      return [dq, dkv, dkpe];
    },
  });
}
