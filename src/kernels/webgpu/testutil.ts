// Helpers for the WebGPU tests: seeded random data and float64 reference arithmetic.
import { mulberry32 } from '../../tensor/random.ts';

/** mulberry32: small seeded PRNG so failures reproduce. */
export const rng = mulberry32;

/** Standard normal samples (Box-Muller). */
export function randn(n: number, r: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12);
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r()) * scale;
  }
  return out;
}

/** max |a - b| / (atol + rtol·|b|) — ≤ 1 means allclose(a, b, rtol, atol). */
export function worstRatio(a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, atol: number): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const r = Math.abs(a[i]! - b[i]!) / (atol + rtol * Math.abs(b[i]!));
    if (!(r <= worst)) worst = Number.isNaN(r) ? Infinity : r;
  }
  return worst;
}
