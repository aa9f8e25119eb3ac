// Element-wise and row-wise ops of KernelOps on SIMD128 (see src/kernels/api.ts for the semantics).
// Pointers are byte offsets into the shared memory; arrays are f32 unless stated.
import { exp4 } from './vmath';

@inline function hsum(v: v128): f32 {
  const u = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(u, 0) + f32x4.extract_lane(u, 1);
}

/** y[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) · w, rows [r0, r1). Sum of squares in f64 per 4 lanes. */
export function rmsNorm(x: usize, w: usize, y: usize, cols: i32, eps: f32, r0: i32, r1: i32): void {
  const full = cols & ~3;
  for (let r = r0; r < r1; r++) {
    const xr = x + <usize>r * <usize>cols * 4, yr = y + <usize>r * <usize>cols * 4;
    let lo = f64x2.splat(0), hi = f64x2.splat(0);
    for (let c = 0; c < full; c += 4) {
      const v = v128.load(xr + <usize>c * 4);
      const a = f64x2.promote_low_f32x4(v), b = f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 0, 1));
      lo = f64x2.add(lo, f64x2.mul(a, a));
      hi = f64x2.add(hi, f64x2.mul(b, b));
    }
    const s2 = f64x2.add(lo, hi);
    let ss = f64x2.extract_lane(s2, 0) + f64x2.extract_lane(s2, 1);
    for (let c = full; c < cols; c++) {
      const v = <f64>load<f32>(xr + <usize>c * 4);
      ss += v * v;
    }
    const inv = <f32>(1.0 / Math.sqrt(ss / <f64>cols + <f64>eps));
    const iv = f32x4.splat(inv);
    for (let c = 0; c < full; c += 4) {
      const o = <usize>c * 4;
      v128.store(yr + o, f32x4.mul(f32x4.mul(v128.load(xr + o), iv), v128.load(w + o)));
    }
    for (let c = full; c < cols; c++) {
      const o = <usize>c * 4;
      store<f32>(yr + o, load<f32>(xr + o) * inv * load<f32>(w + o));
    }
  }
}

/** Interleaved-pair rotation in place; x rows of `stride` floats, pairs at offset..offset+dim; cos/sin [rows, dim/2]. */
export function rope(x: usize, rows: i32, stride: i32, offset: i32, dim: i32, cs: usize, sn: usize): void {
  const half = dim >> 1;
  const fullPairs = half & ~1;
  const sign = f32x4(-1, 1, -1, 1);
  for (let r = 0; r < rows; r++) {
    const xr = x + (<usize>r * <usize>stride + <usize>offset) * 4;
    const cr = cs + <usize>r * <usize>half * 4, sr = sn + <usize>r * <usize>half * 4;
    for (let i = 0; i < fullPairs; i += 2) {
      const v = v128.load(xr + <usize>i * 8);
      const c2 = v128.load64_zero(cr + <usize>i * 4), s2 = v128.load64_zero(sr + <usize>i * 4);
      const c = i32x4.shuffle(c2, c2, 0, 0, 1, 1), s = f32x4.mul(i32x4.shuffle(s2, s2, 0, 0, 1, 1), sign);
      const sw = i32x4.shuffle(v, v, 1, 0, 3, 2);
      // (x0·c - x1·s, x1·c + x0·s)
      v128.store(xr + <usize>i * 8, f32x4.add(f32x4.mul(v, c), f32x4.mul(sw, s)));
    }
    for (let i = fullPairs; i < half; i++) {
      const p = xr + <usize>i * 8;
      const x0 = load<f32>(p), x1 = load<f32>(p, 4);
      const c = load<f32>(cr + <usize>i * 4), s = load<f32>(sr + <usize>i * 4);
      store<f32>(p, x0 * c - x1 * s);
      store<f32>(p, x1 * c + x0 * s, 4);
    }
  }
}

/** Row-wise softmax in place, rows [r0, r1): max-subtracted, f32 exp, f64 sum. */
export function softmax(x: usize, cols: i32, r0: i32, r1: i32): void {
  for (let r = r0; r < r1; r++) {
    const xr = x + <usize>r * <usize>cols * 4;
    let m: f32 = -Infinity;
    for (let c = 0; c < cols; c++) m = max(m, load<f32>(xr + <usize>c * 4));
    let s: f64 = 0;
    for (let c = 0; c < cols; c++) {
      const e = Mathf.exp(load<f32>(xr + <usize>c * 4) - m);
      store<f32>(xr + <usize>c * 4, e);
      s += e;
    }
    const inv = <f32>(1.0 / s);
    for (let c = 0; c < cols; c++) store<f32>(xr + <usize>c * 4, load<f32>(xr + <usize>c * 4) * inv);
  }
}

/** silu(a)·b per lane: a / (1 + e^−a) · b, e^x by exp4 (about 1 ulp). */
@inline function silu4(a: v128, b: v128): v128 {
  return f32x4.mul(f32x4.div(a, f32x4.add(f32x4.splat(1), exp4(f32x4.neg(a)))), b);
}

/**
 * out[i] = silu(g[i])·u[i] for i in [i0, i1), 4 at a time; the last (i1 − i0) % 4 through the same
 * vector formula one lane at a time, so every element has the same bits whichever split of the range
 * the pool threads get.
 */
export function siluMul(g: usize, u: usize, out: usize, i0: i32, i1: i32): void {
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i * 4;
    v128.store(out + o, silu4(v128.load(g + o), v128.load(u + o)));
  }
  for (; i < i1; i++) {
    const o = <usize>i * 4;
    store<f32>(out + o, f32x4.extract_lane(silu4(f32x4.splat(load<f32>(g + o)), f32x4.splat(load<f32>(u + o))), 0));
  }
}

/** Per row of x[rows, cols]: the k largest values descending (ties: lower index first). idx i32 [rows, k], val f32. */
export function topk(x: usize, rows: i32, cols: i32, k: i32, idx: usize, val: usize): void {
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize>r * <usize>cols * 4;
    const ir = idx + <usize>r * <usize>k * 4, vr = val + <usize>r * <usize>k * 4;
    let n = 0;
    for (let c = 0; c < cols; c++) {
      const v = load<f32>(xr + <usize>c * 4);
      if (v != v) continue; // NaN never selected
      if (n == k && !(v > load<f32>(vr + <usize>(k - 1) * 4))) continue;
      // Insert after every kept value >= v (equal values keep index order).
      let p = n < k ? n : k - 1;
      while (p > 0 && load<f32>(vr + <usize>(p - 1) * 4) < v) {
        store<f32>(vr + <usize>p * 4, load<f32>(vr + <usize>(p - 1) * 4));
        store<i32>(ir + <usize>p * 4, load<i32>(ir + <usize>(p - 1) * 4));
        p--;
      }
      store<f32>(vr + <usize>p * 4, v);
      store<i32>(ir + <usize>p * 4, c);
      if (n < k) n++;
    }
    for (let p = n; p < k; p++) {
      store<f32>(vr + <usize>p * 4, NaN);
      store<i32>(ir + <usize>p * 4, -1);
    }
  }
}

/** dst[i] = src[i] for byte offsets i in [i0, i1): the memory-copy baseline of the benchmarks, run on the pool. */
export function copyBytes(src: usize, dst: usize, i0: i32, i1: i32): void {
  memory.copy(dst + <usize>i0, src + <usize>i0, <usize>(i1 - i0));
}

/**
 * Streaming read of bytes [i0, i1) of src (a checksum of its i32 lanes, so nothing is optimized away): the
 * read-bandwidth baseline of the benchmarks, run on the pool. Four interleaved streams (the range's
 * quarters, each a multiple of 64 bytes long), as the GEMVs read four weight rows per pass: one stream per core reads
 * measurably slower from DRAM than four. A tail of (i1 - i0) % 256 bytes is read on its own.
 */
export function readBytes(src: usize, i0: i32, i1: i32): i32 {
  const n = <usize>(i1 - i0) & ~(<usize>255);
  const q = n >> 2;
  let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
  const p0 = src + <usize>i0;
  for (let p = p0, e = p0 + q; p < e; p += 32) {
    a0 = i32x4.add(a0, v128.load(p)); a1 = i32x4.add(a1, v128.load(p + q));
    a2 = i32x4.add(a2, v128.load(p + 2 * q)); a3 = i32x4.add(a3, v128.load(p + 3 * q));
    a0 = i32x4.add(a0, v128.load(p, 16)); a1 = i32x4.add(a1, v128.load(p + q, 16));
    a2 = i32x4.add(a2, v128.load(p + 2 * q, 16)); a3 = i32x4.add(a3, v128.load(p + 3 * q, 16));
  }
  const s = i32x4.add(i32x4.add(a0, a1), i32x4.add(a2, a3));
  let r = i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1) + i32x4.extract_lane(s, 2) + i32x4.extract_lane(s, 3);
  for (let p = p0 + n, e = src + <usize>i1; p < e; p++) r += <i32>load<u8>(p);
  return r;
}

/** out[r, :] = x[index[r], :] for rows r in [r0, r1) of the gather; rows of `cols` f32, index i32. */
export function gatherRows(x: usize, cols: i32, index: usize, out: usize, r0: i32, r1: i32): void {
  const row = <usize>cols * 4;
  for (let r = r0; r < r1; r++) {
    memory.copy(out + <usize>r * row, x + <usize>load<i32>(index + <usize>r * 4) * row, row);
  }
}

/**
 * out[index[r], c] += weight[r] · y[r, c] for r = 0 .. rows − 1 in order and columns c in [c0, c1):
 * in f64 (the product of two f32 is exact there), the sum rounded to f64 and then to f32, as JS
 * arithmetic on Float32Arrays does, so every split of the columns gives the reference's bits.
 */
export function scatterAddRows(y: usize, cols: i32, index: usize, weight: usize, out: usize, rows: i32, c0: i32, c1: i32): void {
  const row = <usize>cols * 4;
  const full = c0 + ((c1 - c0) & ~3);
  for (let r = 0; r < rows; r++) {
    const yr = y + <usize>r * row, orow = out + <usize>load<i32>(index + <usize>r * 4) * row;
    const w = <f64>load<f32>(weight + <usize>r * 4);
    const wv = f64x2.splat(w);
    for (let c = c0; c < full; c += 4) {
      const o = <usize>c * 4;
      const v = v128.load(yr + o), a = v128.load(orow + o);
      const lo = f64x2.add(f64x2.promote_low_f32x4(a), f64x2.mul(f64x2.promote_low_f32x4(v), wv));
      const hi = f64x2.add(f64x2.promote_low_f32x4(i32x4.shuffle(a, a, 2, 3, 0, 1)),
        f64x2.mul(f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 0, 1)), wv));
      v128.store(orow + o, i32x4.shuffle(f32x4.demote_f64x2_zero(lo), f32x4.demote_f64x2_zero(hi), 0, 1, 4, 5));
    }
    for (let c = full; c < c1; c++) {
      const o = <usize>c * 4;
      store<f32>(orow + o, <f32>(<f64>load<f32>(orow + o) + w * <f64>load<f32>(yr + o)));
    }
  }
}

/**
 * Strided block copy, rows r in [r0, r1) of the n0 x n1 grid (i = r / n1, j = r % n1): `len` f32 from
 * src + (i·s0 + j·s1)·4 to dst + (i·d0 + j·d1)·4 (src and dst point at their offsets; spans disjoint).
 */
export function copyStrided(src: usize, s0: i32, s1: i32, dst: usize, d0: i32, d1: i32, n1: i32, len: i32, r0: i32, r1: i32): void {
  const bytes = <usize>len * 4;
  for (let r = r0; r < r1; r++) {
    const i = r / n1, j = r % n1;
    memory.copy(dst + (<usize>i * <usize>d0 + <usize>j * <usize>d1) * 4, src + (<usize>i * <usize>s0 + <usize>j * <usize>s1) * 4, bytes);
  }
}
