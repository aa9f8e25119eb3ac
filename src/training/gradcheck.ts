// Finite-difference check of backward passes in float64 (test utility). For a function f of some
// leaf tensors, compares d(Σ f(x) ⊙ probe)/dx from backward() with the central difference
// (F(x + h·e_i) − F(x − h·e_i)) / 2h at h = 1e-6, on every element or on a sample of them.
// Truncation error is O(h²) and cancellation O(ε·|F|/h), both far below the bound used by the tests,
// |analytic − numeric| ≤ atol + rtol·|numeric|.
import { backward, noGrad, type Tensor } from '../tensor/autograd/index.ts';
import { mulberry32 } from '../tensor/random.ts';

export interface GradcheckResult {
  /** Elements compared. */
  checked: number;
  /** max |analytic − numeric|. */
  maxAbs: number;
  /** max |analytic − numeric| / |numeric| over elements with |numeric| > 1e-4. */
  maxRel: number;
  /** First element outside atol + rtol·|numeric|, if any. */
  failure: string | null;
}

export interface GradcheckOptions {
  /** Compare at most this many elements per input (random sample; default: all). */
  sample?: number;
  atol?: number;
  rtol?: number;
  h?: number;
  seed?: number;
}

/** f must be deterministic in its inputs; every input must be a float64 leaf that requires grad. */
export function gradcheck(inputs: readonly Tensor[], f: () => Tensor, opts: GradcheckOptions = {}): GradcheckResult {
  const rnd = mulberry32(opts.seed ?? 1);
  const atol = opts.atol ?? 1e-7, rtol = opts.rtol ?? 1e-6, h = opts.h ?? 1e-6;
  for (const t of inputs) {
    if (!(t.data instanceof Float64Array)) throw new TypeError('gradcheck needs float64 inputs');
    t.grad = null;
  }
  const out = f();
  const probe = Float64Array.from({ length: out.size }, () => rnd() * 2 - 1);
  const F = () => noGrad(() => {
    const o = f().data;
    let s = 0;
    for (let i = 0; i < o.length; i++) s += o[i]! * probe[i]!;
    return s;
  });
  backward([out], [probe]);
  const res: GradcheckResult = { checked: 0, maxAbs: 0, maxRel: 0, failure: null };
  inputs.forEach((t, k) => {
    const n = t.size;
    const idx = opts.sample && opts.sample < n
      ? Array.from({ length: opts.sample }, () => Math.floor(rnd() * n))
      : Array.from({ length: n }, (_, i) => i);
    for (const i of idx) {
      const v = t.data[i]!;
      t.data[i] = v + h;
      const up = F();
      t.data[i] = v - h;
      const dn = F();
      t.data[i] = v;
      const num = (up - dn) / (2 * h);
      const ana = t.grad ? t.grad[i]! : 0;
      const err = Math.abs(ana - num);
      res.checked++;
      res.maxAbs = Math.max(res.maxAbs, err);
      if (Math.abs(num) > 1e-4) res.maxRel = Math.max(res.maxRel, err / Math.abs(num));
      if (!(err <= atol + rtol * Math.abs(num)) && res.failure === null) res.failure = `input ${k}[${i}]: analytic ${ana}, numeric ${num}`;
    }
  });
  return res;
}
