// AdamW with a warm-up + cosine learning-rate schedule and global-norm gradient clipping, as
// DeepSeek-V3 pre-training uses them (arXiv 2412.19437 §4.2: AdamW β1 = 0.9, β2 = 0.95,
// weight_decay = 0.1, gradient clipping norm 1.0, linear warm-up then cosine decay).
// Semantics follow torch.optim.AdamW (decoupled decay p ← p − lr·λ·p, bias-corrected moments,
// eps added to √v̂) and torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6), at most 1).
// Moments are kept in the parameters' element type; arithmetic runs in double, rounded on store, so a
// step is a pure function of (parameters, gradients, state): runs are repeatable bit for bit.
// `moments: 'bf16'` (FP8 runs; DeepSeek-V3 §3.3.3 "low-precision storage": AdamW's first and second
// moments tracked in BF16, master weights and gradients f32): each new moment is rounded to f32 then to
// BF16 with round-to-nearest-even (what an f32 computation stored to a bf16 buffer gives), and the update
// reads the rounded value. The arrays stay f32-typed holding BF16-exact values, so the memory saving is
// not realised here; the run state stores them as BF16 (state.ts), exactly, and a resume restores them.
import type { FloatArray, Tensor } from '../tensor/autograd/index.ts';
import { roundBf16 } from '../tensor/dtypes.ts';

export interface ScheduleOptions {
  /** Peak learning rate. */
  lr: number;
  /** Steps of linear warm-up from 0 to lr (step 1 gets lr/warmup). */
  warmupSteps: number;
  /** Total steps; after warm-up the rate follows a cosine from lr down to minLr at totalSteps. */
  totalSteps: number;
  /** Floor of the cosine (default lr / 10). */
  minLr?: number;
}

/** Learning rate of 1-based step `step`. */
export function learningRate(s: ScheduleOptions, step: number): number {
  const minLr = s.minLr ?? s.lr / 10;
  if (s.warmupSteps > 0 && step <= s.warmupSteps) return (s.lr * step) / s.warmupSteps;
  const span = s.totalSteps - s.warmupSteps;
  if (span <= 0) return s.lr;
  const progress = Math.min(1, Math.max(0, (step - s.warmupSteps) / span));
  return minLr + 0.5 * (s.lr - minLr) * (1 + Math.cos(Math.PI * progress));
}

/** The global L2 norm of the gradients (missing grads count as zero). */
export function globalGradNorm(params: readonly Tensor[]): number {
  let ss = 0;
  for (const p of params) if (p.grad) for (let i = 0; i < p.grad.length; i++) ss += p.grad[i]! * p.grad[i]!;
  return Math.sqrt(ss);
}

/** Scales the gradients in place so their global norm is at most maxNorm; returns the norm before. */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): number {
  const norm = globalGradNorm(params);
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const p of params) if (p.grad) for (let i = 0; i < p.grad.length; i++) p.grad[i] = p.grad[i]! * coef;
  return norm;
}

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Storage precision of the moments: 'bf16' rounds each stored moment to BF16 (default: the parameters' type). */
  moments?: 'bf16';
  /** Which tensors decay (default: matrices, i.e. two or more dimensions; not norms or vectors). */
  decays?: (t: Tensor) => boolean;
}

export interface AdamWState {
  step: number;
  m: FloatArray[];
  v: FloatArray[];
}

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly moments: 'bf16' | undefined;
  readonly #decays: boolean[];
  state: AdamWState;

  constructor(readonly params: readonly Tensor[], opts: AdamWOptions = {}) {
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.95;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.1;
    this.moments = opts.moments;
    const decays = opts.decays ?? ((t: Tensor) => t.shape.length >= 2);
    this.#decays = params.map(decays);
    this.state = { step: 0, m: params.map((p) => new (p.ctor)(p.size)), v: params.map((p) => new (p.ctor)(p.size)) };
  }

  /** One update with learning rate lr from the parameters' .grad (a missing grad counts as zero). */
  step(lr: number): void {
    const st = this.state;
    st.step++;
    const b1 = this.beta1, b2 = this.beta2;
    const c1 = 1 - b1 ** st.step, c2 = 1 - b2 ** st.step;
    const bf16 = this.moments === 'bf16';
    this.params.forEach((p, k) => {
      const m = st.m[k]!, v = st.v[k]!, d = p.data, g = p.grad;
      const decay = this.#decays[k] ? 1 - lr * this.weightDecay : 1;
      for (let i = 0; i < d.length; i++) {
        const gi = g ? g[i]! : 0;
        const mi = b1 * m[i]! + (1 - b1) * gi;
        const vi = b2 * v[i]! + (1 - b2) * gi * gi;
        m[i] = bf16 ? roundBf16(mi) : mi;
        v[i] = bf16 ? roundBf16(vi) : vi;
        d[i] = d[i]! * decay - (lr * (m[i]! / c1)) / (Math.sqrt(v[i]! / c2) + this.eps);
      }
    });
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad = null;
  }
}
