// Vector math shared by the kernels (inlined into each module that imports it).

/**
 * e^x per lane, Cephes expf: x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact n·ln2_hi),
 * e^r by its degree-7 Taylor/minimax polynomial, times 2^n built in the exponent bits; about 1 ulp.
 * x is clamped to [−87.3, 88]: below, e^x ~ 1e-38 instead of a subnormal or 0 (irrelevant next to the
 * terms it is summed with: a softmax row's maximum term e^0 = 1, silu's 1 + e^−x); above, e^88 ~ 1.7e38
 * stays finite (silu's x / (1 + e^−x) is then x·6e-39 instead of −0).
 */
@inline export function exp4(x0: v128): v128 {
  const x = f32x4.min(f32x4.max(x0, f32x4.splat(-87.3)), f32x4.splat(88));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.44269504088896341)));
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.3981999507e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(8.3334519073e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(4.1665795894e-2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.6666665459e-1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(5.0000001201e-1));
  const y = f32x4.add(f32x4.add(f32x4.mul(f32x4.mul(p, r), r), r), f32x4.splat(1));
  const pow2n = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return f32x4.mul(y, pow2n);
}
