// Matrix products y[M, N] = x[M, K] · W[N, K]ᵀ on WebAssembly SIMD128 (f32x4).
// Every function computes output columns [n0, n1) only, so a thread pool splits N across threads.
// Pointers are byte offsets into the shared memory; shapes are row-major.
//
// Two code paths:
//  * GEMV (M = 1, memory-bound): one pass over each weight row, K vectorized, codes decoded in registers
//    (see decode.ts). The bf16 GEMV runs FOUR rows per pass, a quarter of the row range apart, the FP8
//    GEMVs TWO, half the range (weight-only: half the 128-row scale group) apart, sharing the x loads:
//    several memory streams per core (the FP8 loop streams at ~90% of its in-cache rate, ~70% with one
//    row; four rows spill its registers) and fewer x loads. The FP8 GEMVs use the
//    shift-based decode, whose lanes come transposed per 16 codes, so they stage x once per call (per
//    128-row scale group for the weight-only kind, with the block scales folded in) in per-thread
//    scratch; the inner loop is 4 x loads + 2 × (1 load + 9 integer ops + 4 multiply-adds) per 16
//    weights of each row, no per-block epilogue. f32: one row per pass, 4 accumulators.
//  * GEMM (M > 1, compute-bound): for blocks of 256 rows x 64 columns x 128 K, the 64 weight rows are
//    decoded and transposed into a packed panel [8 panels][128 k][8 columns] of f32 (32 KiB, L1/L2
//    resident: a cache-blocked decode, never a copy of the matrix; four such panels, 512 K, are packed
//    per pass so that each weight row is read as one stream: packPanels), then a 4x8 register-blocked
//    micro-kernel (8 f32x4 accumulators, broadcast x, two panel loads per k) sums each output element
//    sequentially over k and adds the 128-K partial into y.
// Kinds: 0 f32 weights, 1 bf16 weights, 2 FP8 weights with 128x128 scales (weight-only: the panel holds
// fround(q·s)), 3 FP8 x FP8 (x holds the exact decoded FP8 activations, the panel exact FP8 weight
// values, and each 128-K partial is promoted as DeepGEMM does: y += fround(sA[i,kb]·sB[j/128,kb]) · partial).
import { bf16, fp8Code, fp8Raw, fp8W0, fp8W1, hiHalvesHi, hiHalvesLo, TWO119, TWO120 } from './decode';

/**
 * a·b + c per lane: one fused multiply-add in the relaxed-SIMD build (kernels-relaxed.wasm, compiled from
 * these sources with --enable relaxed-simd), a multiply then an add (two roundings) in the plain build.
 */
@inline function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(c, f32x4.mul(a, b));
}

const KC: i32 = 128;
const NC: i32 = 64;
const MC: i32 = 256;
/** K values packed per pass over a column block (KP / KC panel sets): see gemm(). */
const KP: i32 = 512;
/** Bytes of per-thread scratch gemm() needs: the packed panels plus 32 bytes for partial stores. */
export const PANEL_BYTES: i32 = NC * KP * 4 + 64;

export function panelBytes(): i32 {
  return PANEL_BYTES;
}

@inline function hsum(v: v128): f32 {
  const u = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(u, 0) + f32x4.extract_lane(u, 1);
}

// ------------------------------------------------------------------------------------------- GEMV

/** y[n] = Σ_k x[k]·W[n,k] for f32 weights, n in [n0, n1). */
export function gemvF32(x: usize, w: usize, y: usize, K: i32, n0: i32, n1: i32): void {
  const full = K & ~15;
  for (let n = n0; n < n1; n++) {
    const row = w + <usize>n * <usize>K * 4;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    for (let k = 0; k < full; k += 16) {
      const xp = x + <usize>k * 4, wp = row + <usize>k * 4;
      a0 = madd(v128.load(xp), v128.load(wp), a0);
      a1 = madd(v128.load(xp, 16), v128.load(wp, 16), a1);
      a2 = madd(v128.load(xp, 32), v128.load(wp, 32), a2);
      a3 = madd(v128.load(xp, 48), v128.load(wp, 48), a3);
    }
    let s = hsum(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)));
    for (let k = full; k < K; k++) s += load<f32>(x + <usize>k * 4) * load<f32>(row + <usize>k * 4);
    store<f32>(y + <usize>n * 4, s);
  }
}

/**
 * Row pairing of the two-row GEMVs over rows [lo, hi), h = (hi - lo) >> 1: pass i < h takes rows lo + i
 * and lo + h + i (half the range apart: two memory streams); with an odd count pass h takes row hi - 1
 * alone (as its own partner). (hi - lo + 1) >> 1 passes in all.
 */
@inline function pairRowA(lo: i32, hi: i32, h: i32, i: i32): i32 {
  return i < h ? lo + i : hi - 1;
}
@inline function pairRowB(lo: i32, hi: i32, h: i32, i: i32): i32 {
  return i < h ? lo + h + i : hi - 1;
}

/**
 * One bf16 row's 16-weight step (weights h0, h1; x0..x3 = x[k..k+16) by fours): P takes k ≡ 0..3, 8..11
 * (mod 16), i.e. x0 and x2; Q takes k ≡ 4..7, 12..15, i.e. x1 and x3.
 */
@inline function bf16StepP(x0: v128, x2: v128, h0: v128, h1: v128, p: v128): v128 {
  return madd(x2, hiHalvesLo(h1), madd(x0, hiHalvesLo(h0), p));
}
@inline function bf16StepQ(x1: v128, x3: v128, h0: v128, h1: v128, q: v128): v128 {
  return madd(x3, hiHalvesHi(h1), madd(x1, hiHalvesHi(h0), q));
}

/** Row i's sum from its accumulators and the tail (k >= full) in k order. */
@inline function bf16Finish(x: usize, row: usize, full: i32, K: i32, p: v128, q: v128): f32 {
  let s = hsum(f32x4.add(p, q));
  for (let k = full; k < K; k++) s += load<f32>(x + <usize>k * 4) * bf16(<u32>load<u16>(row + <usize>k * 2));
  return s;
}

/**
 * y[n] = Σ_k x[k]·W[n,k] for bf16 weights over [n0, n1). Rows go FOUR per pass, a quarter of the range
 * apart (rows n0 + i + j·q, j = 0..3, q = (n1 - n0) >> 2), sharing every x load: four DRAM streams per
 * core read measurably faster than two (scratch microbench on a Zen 3 VM: a plain 128 MiB read runs
 * 1.2x faster with 4 interleaved streams than 2, 1.4x with 8 than 1), and the x loads are paid once per 4
 * rows. The last (n1 - n0) % 4 rows take one more pass, the last of them repeated to fill it. Each row
 * keeps 2 accumulators: P takes k ≡ 0..3 and 8..11 (mod 16), Q k ≡ 4..7 and 12..15, in k order;
 * y = hsum(P + Q) + the tail in order. A row's sum does not depend on its partners, so any split of
 * [n0, n1) gives the same bits.
 */
export function gemvBf16(x: usize, w: usize, y: usize, K: i32, n0: i32, n1: i32): void {
  const q = (n1 - n0) >> 2;
  for (let i = 0; i < q; i++) {
    const r = n0 + i;
    bf16Rows4(x, w, y, K, r, r + q, r + 2 * q, r + 3 * q);
  }
  const m = n0 + 4 * q, last = n1 - 1;
  if (m < n1) bf16Rows4(x, w, y, K, m, min(m + 1, last), min(m + 2, last), last);
}

/** gemvBf16's pass over rows ra..rd (a row may be given twice: it is then computed and stored twice, alike). */
function bf16Rows4(x: usize, w: usize, y: usize, K: i32, ra: i32, rb: i32, rc: i32, rd: i32): void {
  const full = K & ~15;
  const rowBytes = <usize>K * 2;
  const rowA = w + <usize>ra * rowBytes, rowB = w + <usize>rb * rowBytes, rowC = w + <usize>rc * rowBytes, rowD = w + <usize>rd * rowBytes;
  let pa = f32x4.splat(0), qa = f32x4.splat(0), pb = f32x4.splat(0), qb = f32x4.splat(0);
  let pc = f32x4.splat(0), qc = f32x4.splat(0), pd = f32x4.splat(0), qd = f32x4.splat(0);
  let xp = x, a = rowA, b = rowB, c = rowC, d = rowD;
  const end = rowA + <usize>full * 2;
  while (a < end) {
    const x0 = v128.load(xp), x1 = v128.load(xp, 16), x2 = v128.load(xp, 32), x3 = v128.load(xp, 48);
    let h0 = v128.load(a), h1 = v128.load(a, 16);
    pa = bf16StepP(x0, x2, h0, h1, pa); qa = bf16StepQ(x1, x3, h0, h1, qa);
    h0 = v128.load(b); h1 = v128.load(b, 16);
    pb = bf16StepP(x0, x2, h0, h1, pb); qb = bf16StepQ(x1, x3, h0, h1, qb);
    h0 = v128.load(c); h1 = v128.load(c, 16);
    pc = bf16StepP(x0, x2, h0, h1, pc); qc = bf16StepQ(x1, x3, h0, h1, qc);
    h0 = v128.load(d); h1 = v128.load(d, 16);
    pd = bf16StepP(x0, x2, h0, h1, pd); qd = bf16StepQ(x1, x3, h0, h1, qd);
    a += 32; b += 32; c += 32; d += 32; xp += 64;
  }
  store<f32>(y + <usize>ra * 4, bf16Finish(x, rowA, full, K, pa, qa));
  store<f32>(y + <usize>rb * 4, bf16Finish(x, rowB, full, K, pb, qb));
  store<f32>(y + <usize>rc * 4, bf16Finish(x, rowC, full, K, pc, qc));
  store<f32>(y + <usize>rd * 4, bf16Finish(x, rowD, full, K, pd, qd));
}

/** K values per pass of the FP8 GEMVs, which stage x in the per-thread scratch (XCH f32 fit PANEL_BYTES). */
const XCH: i32 = 8192;

/**
 * dst = src[0, len) · c with each full 16-group transposed as a 4x4 block, dst[16g + 4a + i] =
 * src[16g + 4i + a]: the lane order of fp8Code (decode.ts); a tail of len % 16 values keeps its order.
 */
@inline function permute16(src: usize, dst: usize, len: i32, c: f32): void {
  const full = len & ~15;
  const cv = f32x4.splat(c);
  for (let t = 0; t < full; t += 16) {
    const s = src + <usize>t * 4, d = dst + <usize>t * 4;
    const r0 = v128.load(s), r1 = v128.load(s, 16), r2 = v128.load(s, 32), r3 = v128.load(s, 48);
    const t0 = i32x4.shuffle(r0, r1, 0, 4, 1, 5), t1 = i32x4.shuffle(r2, r3, 0, 4, 1, 5);
    const t2 = i32x4.shuffle(r0, r1, 2, 6, 3, 7), t3 = i32x4.shuffle(r2, r3, 2, 6, 3, 7);
    v128.store(d, f32x4.mul(i32x4.shuffle(t0, t1, 0, 1, 4, 5), cv));
    v128.store(d, f32x4.mul(i32x4.shuffle(t0, t1, 2, 3, 6, 7), cv), 16);
    v128.store(d, f32x4.mul(i32x4.shuffle(t2, t3, 0, 1, 4, 5), cv), 32);
    v128.store(d, f32x4.mul(i32x4.shuffle(t2, t3, 2, 3, 6, 7), cv), 48);
  }
  for (let t = full; t < len; t++) store<f32>(dst + <usize>t * 4, load<f32>(src + <usize>t * 4) * c);
}

/**
 * Two weight rows at once, sharing every x load: for rows A and B (codes at a and a + d) and x permuted by
 * permute16, returns lanes 0 and 2 = (Σ_t x[t]·raw(A[t]), Σ_t x[t]·raw(B[t])) over 16·n16 codes.
 * Why two rows: two memory streams per core (the callers pick rows half a scale group apart) keep the
 * loop near its in-cache rate while streaming from DRAM (~90%, ~70% with one row), and the shared x
 * loads leave room for the decode. Each row keeps 2 accumulators (with more, V8's register allocator
 * spills them): P takes lanes a = 0 then 2 of each 16 codes, Q lanes a = 1 then 3 (fp8Code), so SIMD
 * lane i of P sums t ≡ 4i, 4i+2 (mod 16) in k order, Q t ≡ 4i+1, 4i+3. Reduction: v = P + Q, then
 * (v0 + v2) + (v1 + v3): the ref's 'lanes16' order (src/kernels/deepgemm/ref.ts); callers add any tail
 * (len % 16) last, in order.
 */
@inline function fp8Pair16(x: usize, a: usize, d: usize, n16: i32): v128 {
  let pa = f32x4.splat(0), qa = f32x4.splat(0), pb = f32x4.splat(0), qb = f32x4.splat(0);
  const end = a + (<usize>n16 << 4);
  while (a < end) {
    const x0 = v128.load(x), x1 = v128.load(x, 16), x2 = v128.load(x, 32), x3 = v128.load(x, 48);
    let b = v128.load(a);
    pa = madd(x0, fp8Code(b, 0), pa); qa = madd(x1, fp8Code(b, 1), qa);
    pa = madd(x2, fp8Code(b, 2), pa); qa = madd(x3, fp8Code(b, 3), qa);
    b = v128.load(a + d);
    pb = madd(x0, fp8Code(b, 0), pb); qb = madd(x1, fp8Code(b, 1), qb);
    pb = madd(x2, fp8Code(b, 2), pb); qb = madd(x3, fp8Code(b, 3), qb);
    a += 16; x += 64;
  }
  // Both rows' (v0 + v2) + (v1 + v3) at once: t = [A0+A2, A1+A3, B0+B2, B1+B3], then pairwise.
  const va = f32x4.add(pa, qa), vb = f32x4.add(pb, qb);
  const t = f32x4.add(i32x4.shuffle(va, vb, 0, 1, 4, 5), i32x4.shuffle(va, vb, 2, 3, 6, 7));
  return f32x4.add(t, i32x4.shuffle(t, t, 1, 0, 3, 2));
}

/** fp8Pair16 over len codes with the tail: returns lanes 0 and 2 as fp8Pair16. wb may equal wa (a lone row). */
@inline function fp8Dot2(xp: usize, wa: usize, wb: usize, len: i32): v128 {
  const full = len & ~15;
  const r = fp8Pair16(xp, wa, wb - wa, full >> 4);
  if (full == len) return r;
  let sa = f32x4.extract_lane(r, 0), sb = f32x4.extract_lane(r, 2);
  for (let t = full; t < len; t++) {
    const xv = load<f32>(xp + <usize>t * 4);
    sa += xv * fp8Raw(<u32>load<u8>(wa + <usize>t));
    sb += xv * fp8Raw(<u32>load<u8>(wb + <usize>t));
  }
  return f32x4.replace_lane(f32x4.splat(sa), 2, sb);
}

/**
 * Weight-only FP8 GEMV. xs[K] = x·2^(120-E_kb) per 128-block (prepFp8Gemv; |xs| < 2^120), bmul[kb] = 2^E_kb,
 * scratch XCH f32 per thread. y[n] = Σ_kb s[n/128,kb]·2^E_kb · Σ_{k in kb} xs[k]·raw(W[n,k]).
 * The block factors f_kb = s·2^E_kb are folded into x once per 128-row scale group (xg = xs·f_kb/G, G the
 * power of two at or below max_kb f_kb, so |xg| < 2^121 and every product stays below 2^10), then each
 * row is ONE streaming dot product over K with no per-block epilogue: y[n] = G · Σ_k xg[k]·raw(W[n,k]).
 * Rows go in pairs (pairRowA/B) within the group's part [n, ge) (fp8Dot2).
 */
export function gemvFp8(xs: usize, bmul: usize, w: usize, sc: usize, y: usize, K: i32, n0: i32, n1: i32, scratch: usize): void {
  const KB = (K + 127) >> 7;
  let n = n0;
  while (n < n1) {
    const g = n >> 7, ge = min(n1, (g + 1) << 7);
    const srow = sc + <usize>g * <usize>KB * 4;
    let fmax: f32 = 0;
    for (let kb = 0; kb < KB; kb++) fmax = max(fmax, abs(load<f32>(srow + <usize>kb * 4) * load<f32>(bmul + <usize>kb * 4)));
    // G = 2^floor(log2 fmax), at least 2^-126 (a normal number, so 1/G is exact).
    const G = max(reinterpret<f32>(reinterpret<u32>(fmax) & 0x7f800000), reinterpret<f32>(<u32>0x00800000));
    const inv: f32 = 1 / G;
    const h = (ge - n) >> 1;
    for (let k0 = 0; k0 < K; k0 += XCH) {
      const kl = min(XCH, K - k0);
      for (let c0 = 0; c0 < kl; c0 += 128) {
        const kb = (k0 + c0) >> 7;
        const f = (load<f32>(srow + <usize>kb * 4) * load<f32>(bmul + <usize>kb * 4)) * inv;
        permute16(xs + <usize>(k0 + c0) * 4, scratch + <usize>c0 * 4, min(128, kl - c0), f);
      }
      for (let i = 0; i < ge - n - h; i++) {
        const ra = pairRowA(n, ge, h, i), rb = pairRowB(n, ge, h, i);
        const r = fp8Dot2(scratch, w + <usize>ra * <usize>K + <usize>k0, w + <usize>rb * <usize>K + <usize>k0, kl);
        const ya = y + <usize>ra * 4, yb = y + <usize>rb * 4;
        const pa = f32x4.extract_lane(r, 0) * G, pb = f32x4.extract_lane(r, 2) * G;
        store<f32>(ya, k0 == 0 ? pa : load<f32>(ya) + pa);
        if (rb != ra) store<f32>(yb, k0 == 0 ? pb : load<f32>(yb) + pb);
      }
    }
    n = ge;
  }
}

/** Prepares x[K] for gemvFp8: per 128-block exponent E (max|x| < 2^E, E >= -7), xs = x·2^(120-E), bmul = 2^E. */
export function prepFp8Gemv(x: usize, xs: usize, bmul: usize, K: i32): void {
  const KB = (K + 127) >> 7;
  for (let kb = 0; kb < KB; kb++) {
    const c0 = kb << 7, c1 = min(K, c0 + 128);
    let m: f32 = 0;
    for (let k = c0; k < c1; k++) m = max(m, abs(load<f32>(x + <usize>k * 4)));
    // E = floor(log2(m)) + 1 from the f32 exponent field; clamp so that 2^(120-E) <= 2^127.
    let e: i32 = m > 0 ? <i32>((reinterpret<u32>(m) >> 23) & 0xff) - 126 : -7;
    if (e < -7) e = -7;
    const up = reinterpret<f32>(<u32>(120 - e + 127) << 23);
    store<f32>(bmul + <usize>kb * 4, reinterpret<f32>(<u32>(e + 127) << 23));
    for (let k = c0; k < c1; k++) store<f32>(xs + <usize>k * 4, load<f32>(x + <usize>k * 4) * up);
  }
}

/**
 * FP8 x FP8 GEMV (DeepGEMM promotion, 'lanes16' order). xa[K] = decoded A row · 2^118 (decodeFp8),
 * sa[KB] its scales, scratch XCH f32 per thread (x permuted for fp8Pair16); each product xa·raw(w)
 * is exactly a·w/4 (so a fused multiply-add rounds exactly like a multiply then an add), and
 * y = Σ_kb fround(sA·sB)·4 · partial/4. Rows go in pairs (pairRowA/B) over [n0, n1) (fp8Pair16).
 */
export function gemvFp8Fp8(xa: usize, sa: usize, w: usize, sc: usize, y: usize, K: i32, n0: i32, n1: i32, scratch: usize): void {
  const KB = (K + 127) >> 7;
  const h = (n1 - n0) >> 1;
  for (let k0 = 0; k0 < K; k0 += XCH) {
    const kl = min(XCH, K - k0);
    permute16(xa + <usize>k0 * 4, scratch, kl, 1);
    for (let i = 0; i < n1 - n0 - h; i++) {
      const ra = pairRowA(n0, n1, h, i), rb = pairRowB(n0, n1, h, i);
      const rowA = w + <usize>ra * <usize>K + <usize>k0, rowB = w + <usize>rb * <usize>K + <usize>k0;
      const sA = sc + <usize>(ra >> 7) * <usize>KB * 4, sB = sc + <usize>(rb >> 7) * <usize>KB * 4;
      const ya = y + <usize>ra * 4, yb = y + <usize>rb * 4;
      let accA: f32 = k0 == 0 ? 0 : load<f32>(ya), accB: f32 = k0 == 0 ? 0 : load<f32>(yb);
      // 128-K blocks, the pointers just advancing; a full block has no tail (fp8Pair16), the last may.
      const d = rowB - rowA, end = rowA + <usize>kl;
      let a = rowA, x = scratch, kb = k0 >> 7;
      while (a < end) {
        const len = min(128, <i32>(end - a));
        const r = len == 128 ? fp8Pair16(x, a, d, 8) : fp8Dot2(x, a, a + d, len);
        const s: f32 = load<f32>(sa + <usize>kb * 4);
        accA += f32x4.extract_lane(r, 0) * ((s * load<f32>(sA + <usize>kb * 4)) * 4);
        accB += f32x4.extract_lane(r, 2) * ((s * load<f32>(sB + <usize>kb * 4)) * 4);
        a += 128; x += 512; kb++;
      }
      store<f32>(ya, accA);
      if (rb != ra) store<f32>(yb, accB);
    }
  }
}

/** dst[i] = decode(src[i]) · mul (mul is a power of two: 2^120 gives exact values, 2^238 = value·2^118 via two factors). */
export function decodeFp8(src: usize, dst: usize, count: i32, twoFactors: i32): void {
  const f1 = f32x4.splat(TWO120);
  const f2a = f32x4.splat(TWO119);
  const full = count & ~15;
  for (let i = 0; i < full; i += 16) {
    const b = v128.load(src + <usize>i);
    const w0 = fp8W0(b), w1 = fp8W1(b);
    const d = dst + <usize>i * 4;
    if (twoFactors) {
      v128.store(d, f32x4.mul(f32x4.mul(hiHalvesLo(w0), f2a), f2a));
      v128.store(d, f32x4.mul(f32x4.mul(hiHalvesHi(w0), f2a), f2a), 16);
      v128.store(d, f32x4.mul(f32x4.mul(hiHalvesLo(w1), f2a), f2a), 32);
      v128.store(d, f32x4.mul(f32x4.mul(hiHalvesHi(w1), f2a), f2a), 48);
    } else {
      v128.store(d, f32x4.mul(hiHalvesLo(w0), f1));
      v128.store(d, f32x4.mul(hiHalvesHi(w0), f1), 16);
      v128.store(d, f32x4.mul(hiHalvesLo(w1), f1), 32);
      v128.store(d, f32x4.mul(hiHalvesHi(w1), f1), 48);
    }
  }
  for (let i = full; i < count; i++) {
    const r = fp8Raw(<u32>load<u8>(src + <usize>i));
    store<f32>(dst + <usize>i * 4, twoFactors ? r * TWO119 * TWO119 : r * TWO120);
  }
}

// ------------------------------------------------------------------------------------------- GEMM

/** 4x4 transpose of rows r0..r3 (each 4 k values) stored as 4 panel rows of stride 32 bytes. */
@inline function storeT(p: usize, r0: v128, r1: v128, r2: v128, r3: v128): void {
  const t0 = i32x4.shuffle(r0, r1, 0, 4, 1, 5), t1 = i32x4.shuffle(r2, r3, 0, 4, 1, 5);
  const t2 = i32x4.shuffle(r0, r1, 2, 6, 3, 7), t3 = i32x4.shuffle(r2, r3, 2, 6, 3, 7);
  v128.store(p, i32x4.shuffle(t0, t1, 0, 1, 4, 5));
  v128.store(p, i32x4.shuffle(t0, t1, 2, 3, 6, 7), 32);
  v128.store(p, i32x4.shuffle(t2, t3, 0, 1, 4, 5), 64);
  v128.store(p, i32x4.shuffle(t2, t3, 2, 3, 6, 7), 96);
}

/** Weight row pointer for column j (or 0 past the end: packed as zeros). */
@inline function rowPtr(kind: i32, w: usize, K: i32, j: i32, n1: i32): usize {
  if (j >= n1) return 0;
  const es: usize = kind == 0 ? 4 : kind == 1 ? 2 : 1;
  return w + <usize>j * <usize>K * es;
}

/**
 * pack4's factor for column j's values: FP8 raw codes times 2^120·s (weight-only, s the column's block
 * scale) or 2^120 (FP8 x FP8), 0 past n1; 1 for f32 and bf16.
 */
@inline function codeFactor(kind: i32, sc: usize, KB: i32, j: i32, kb: i32, n1: i32): f32 {
  if (kind < 2) return 1;
  if (j >= n1) return 0;
  if (kind == 2) return load<f32>(sc + (<usize>(j >> 7) * <usize>KB + <usize>kb) * 4) * TWO120;
  return TWO120;
}

@inline function scalarAt(kind: i32, r: usize, k: i32): f32 {
  if (r == 0) return 0;
  if (kind == 0) return load<f32>(r + <usize>k * 4);
  if (kind == 1) return bf16(<u32>load<u16>(r + <usize>k * 2));
  return fp8Raw(<u32>load<u8>(r + <usize>k));
}

/**
 * Packs 4 weight rows (q0..q3, 0 = zeros) into panel columns at byte offset p (0 or 16), k in [k0, k0+kl).
 * FP8 kinds: row r's raw codes (value·2^-120) are multiplied by f_r = 2^120·s_r before the transpose, one
 * rounding of the exact q·s (f_r = 2^120 for FP8 x FP8: exact values); f_r = 1 for f32 and bf16.
 */
@inline function pack4(kind: i32, q0: usize, q1: usize, q2: usize, q3: usize, k0: i32, kl: i32, p: usize,
  f0: f32, f1: f32, f2: f32, f3: f32): i32 {
  const z = f32x4.splat(0);
  let t = 0;
  if (kind == 0) {
    for (; t + 4 <= kl; t += 4) {
      const o = <usize>(k0 + t) * 4;
      storeT(p + <usize>t * 32, q0 ? v128.load(q0 + o) : z, q1 ? v128.load(q1 + o) : z, q2 ? v128.load(q2 + o) : z, q3 ? v128.load(q3 + o) : z);
    }
  } else if (kind == 1) {
    for (; t + 8 <= kl; t += 8) {
      const o = <usize>(k0 + t) * 2;
      const h0 = q0 ? v128.load(q0 + o) : z, h1 = q1 ? v128.load(q1 + o) : z, h2 = q2 ? v128.load(q2 + o) : z, h3 = q3 ? v128.load(q3 + o) : z;
      storeT(p + <usize>t * 32, hiHalvesLo(h0), hiHalvesLo(h1), hiHalvesLo(h2), hiHalvesLo(h3));
      storeT(p + <usize>(t + 4) * 32, hiHalvesHi(h0), hiHalvesHi(h1), hiHalvesHi(h2), hiHalvesHi(h3));
    }
  } else {
    const m0 = f32x4.splat(f0), m1 = f32x4.splat(f1), m2 = f32x4.splat(f2), m3 = f32x4.splat(f3);
    for (; t + 16 <= kl; t += 16) {
      const o = <usize>(k0 + t);
      const b0 = q0 ? v128.load(q0 + o) : z, b1 = q1 ? v128.load(q1 + o) : z, b2 = q2 ? v128.load(q2 + o) : z, b3 = q3 ? v128.load(q3 + o) : z;
      const u0 = fp8W0(b0), u1 = fp8W0(b1), u2 = fp8W0(b2), u3 = fp8W0(b3);
      storeT(p + <usize>t * 32, f32x4.mul(hiHalvesLo(u0), m0), f32x4.mul(hiHalvesLo(u1), m1), f32x4.mul(hiHalvesLo(u2), m2), f32x4.mul(hiHalvesLo(u3), m3));
      storeT(p + <usize>(t + 4) * 32, f32x4.mul(hiHalvesHi(u0), m0), f32x4.mul(hiHalvesHi(u1), m1), f32x4.mul(hiHalvesHi(u2), m2), f32x4.mul(hiHalvesHi(u3), m3));
      const v0 = fp8W1(b0), v1 = fp8W1(b1), v2 = fp8W1(b2), v3 = fp8W1(b3);
      storeT(p + <usize>(t + 8) * 32, f32x4.mul(hiHalvesLo(v0), m0), f32x4.mul(hiHalvesLo(v1), m1), f32x4.mul(hiHalvesLo(v2), m2), f32x4.mul(hiHalvesLo(v3), m3));
      storeT(p + <usize>(t + 12) * 32, f32x4.mul(hiHalvesHi(v0), m0), f32x4.mul(hiHalvesHi(v1), m1), f32x4.mul(hiHalvesHi(v2), m2), f32x4.mul(hiHalvesHi(v3), m3));
    }
  }
  // Tail (kl % 4, 8 or 16 values): the factors are 1 for f32 and bf16, so one expression serves all kinds.
  for (; t < kl; t++) {
    const q = p + <usize>t * 32, k = k0 + t;
    store<f32>(q, scalarAt(kind, q0, k) * f0);
    store<f32>(q, scalarAt(kind, q1, k) * f1, 4);
    store<f32>(q, scalarAt(kind, q2, k) * f2, 8);
    store<f32>(q, scalarAt(kind, q3, k) * f3, 12);
  }
  return 0;
}

/**
 * Packs columns j0..j0+7 of W for k in [kp, kpe) (kp a multiple of KC): the panel of 128-K block k0 goes
 * to base + (k0 - kp)·NC·4 bytes, as panel[k][8] f32 (FP8: exact code values q, times the column's block
 * scale for the weight-only kind). Columns at or past n1 are zeros. Four rows at a time are read over the
 * whole range, i.e. four sequential streams of up to KP values: a weight matrix read once (a layer's
 * experts) arrives from DRAM at the prefetchers' pace, where one 128-K block per visit (256 B of a bf16
 * row, 128 B of FP8) paid a miss per row and visit (64 experts x 48 rows x [384, 1024]: 1.16x).
 */
function packPanels(kind: i32, w: usize, sc: usize, K: i32, KB: i32, j0: i32, n1: i32, kp: i32, kpe: i32, base: usize): void {
  // FP8: raw · 2^120 is the exact code value; the weight-only kind also multiplies by its column's scale
  // (f = 2^120·s is exact, so raw·f rounds the exact q·s once, as fround(q·s)).
  for (let h = 0; h < 8; h += 4) {
    const j = j0 + h;
    const q0 = rowPtr(kind, w, K, j, n1), q1 = rowPtr(kind, w, K, j + 1, n1), q2 = rowPtr(kind, w, K, j + 2, n1), q3 = rowPtr(kind, w, K, j + 3, n1);
    for (let k0 = kp; k0 < kpe; k0 += KC) {
      const kb = k0 >> 7;
      pack4(kind, q0, q1, q2, q3, k0, min(KC, kpe - k0), base + <usize>((k0 - kp) * NC * 4) + <usize>(h * 4),
        codeFactor(kind, sc, KB, j, kb, n1), codeFactor(kind, sc, KB, j + 1, kb, n1), codeFactor(kind, sc, KB, j + 2, kb, n1), codeFactor(kind, sc, KB, j + 3, kb, n1));
    }
  }
}

/** Adds (c0, c1)·scale to y[j0..j0+ncols) (scale 1: plain add). */
@inline function addOut(yp: usize, c0: v128, c1: v128, scale: f32, promote: bool, ncols: i32, tmp: usize): void {
  let v0 = c0, v1 = c1;
  if (promote) {
    const s = f32x4.splat(scale);
    v0 = f32x4.mul(v0, s);
    v1 = f32x4.mul(v1, s);
  }
  if (ncols == 8) {
    v128.store(yp, f32x4.add(v128.load(yp), v0));
    v128.store(yp, f32x4.add(v128.load(yp, 16), v1), 16);
  } else {
    v128.store(tmp, v0);
    v128.store(tmp, v1, 16);
    for (let c = 0; c < ncols; c++) {
      const q = yp + <usize>c * 4;
      store<f32>(q, load<f32>(q) + load<f32>(tmp + <usize>c * 4));
    }
  }
}

/**
 * 4 rows x 8 columns over kl k: x rows at a (stride lda bytes), panel p; adds into y (stride ldy bytes).
 * The loop walks bumped pointers (panel row, four x rows), so V8 emits one add per pointer and no
 * address arithmetic per load (the indexed form cost ~12 integer instructions per 8 multiply-adds).
 * Unrolling k is slower: TurboFan hoists every load of the unrolled body and spills the accumulators.
 */
function kernel4x8(a: usize, lda: usize, p: usize, kl: i32, yp: usize, ldy: usize, promote: bool, sa: usize, lds: usize, sb: f32, ncols: i32, tmp: usize): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  let a0 = a, a1 = a + lda, a2 = a1 + lda, a3 = a2 + lda;
  let pk = p;
  const pe = p + (<usize>kl << 5);
  while (pk < pe) {
    const b0 = v128.load(pk), b1 = v128.load(pk, 16);
    const x0 = v128.load32_splat(a0);
    c00 = madd(x0, b0, c00);
    c01 = madd(x0, b1, c01);
    const x1 = v128.load32_splat(a1);
    c10 = madd(x1, b0, c10);
    c11 = madd(x1, b1, c11);
    const x2 = v128.load32_splat(a2);
    c20 = madd(x2, b0, c20);
    c21 = madd(x2, b1, c21);
    const x3 = v128.load32_splat(a3);
    c30 = madd(x3, b0, c30);
    c31 = madd(x3, b1, c31);
    pk += 32; a0 += 4; a1 += 4; a2 += 4; a3 += 4;
  }
  addOut(yp, c00, c01, promote ? load<f32>(sa) * sb : 1, promote, ncols, tmp);
  addOut(yp + ldy, c10, c11, promote ? load<f32>(sa + lds) * sb : 1, promote, ncols, tmp);
  addOut(yp + 2 * ldy, c20, c21, promote ? load<f32>(sa + 2 * lds) * sb : 1, promote, ncols, tmp);
  addOut(yp + 3 * ldy, c30, c31, promote ? load<f32>(sa + 3 * lds) * sb : 1, promote, ncols, tmp);
}
function kernel1x8(a: usize, p: usize, kl: i32, yp: usize, promote: bool, sa: usize, sb: f32, ncols: i32, tmp: usize): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0);
  let pk = p, ak = a;
  const pe = p + (<usize>kl << 5);
  while (pk < pe) {
    const x0 = v128.load32_splat(ak);
    c0 = madd(x0, v128.load(pk), c0);
    c1 = madd(x0, v128.load(pk, 16), c1);
    pk += 32; ak += 4;
  }
  addOut(yp, c0, c1, promote ? load<f32>(sa) * sb : 1, promote, ncols, tmp);
}

/**
 * y[i, j] for i in [0, M), j in [n0, n1): see the top of the file. y's columns [n0, n1) are
 * overwritten. x is f32 [M, K] (kind 3: exact decoded FP8 values), w the weight in its format, sc its
 * 128x128 scales (kinds 2, 3), sa the activation scales [M, KB] (kind 3), panel per-thread scratch of
 * PANEL_BYTES. n0 must be a multiple of 8 (panels never straddle a 128-column scale block).
 */
export function gemm(kind: i32, x: usize, M: i32, K: i32, w: usize, sc: usize, sa: usize, y: usize, N: i32, n0: i32, n1: i32, panel: usize): void {
  const KB = (K + 127) >> 7;
  const promote = kind == 3;
  const lda = <usize>K * 4, ldy = <usize>N * 4, lds = <usize>KB * 4;
  const tmp = panel + <usize>(NC * KP * 4);
  for (let i = 0; i < M; i++) memory.fill(y + <usize>i * ldy + <usize>n0 * 4, 0, <usize>(n1 - n0) * 4);
  for (let ic = 0; ic < M; ic += MC) {
    const ie = min(M, ic + MC);
    for (let jc = n0; jc < n1; jc += NC) {
      const je = min(n1, jc + NC);
      for (let kp = 0; kp < K; kp += KP) {
        const kpe = min(K, kp + KP);
        for (let j = jc; j < je; j += 8) packPanels(kind, w, sc, K, KB, j, n1, kp, kpe, panel + <usize>((j - jc) * KC * 4));
        for (let k0 = kp; k0 < kpe; k0 += KC) {
          const kl = min(KC, K - k0);
          const kb = k0 >> 7;
          const pset = panel + <usize>((k0 - kp) * NC * 4);
          let i = ic;
          for (; i + 4 <= ie; i += 4) {
            for (let j = jc; j < je; j += 8) {
              const sb: f32 = promote ? load<f32>(sc + (<usize>(j >> 7) * <usize>KB + <usize>kb) * 4) : 1;
              kernel4x8(x + <usize>i * lda + <usize>k0 * 4, lda, pset + <usize>((j - jc) * KC * 4), kl,
                y + <usize>i * ldy + <usize>j * 4, ldy, promote, sa + <usize>i * lds + <usize>kb * 4, lds, sb, min(8, n1 - j), tmp);
            }
          }
          for (; i < ie; i++) {
            for (let j = jc; j < je; j += 8) {
              const sb: f32 = promote ? load<f32>(sc + (<usize>(j >> 7) * <usize>KB + <usize>kb) * 4) : 1;
              kernel1x8(x + <usize>i * lda + <usize>k0 * 4, pset + <usize>((j - jc) * KC * 4), kl,
                y + <usize>i * ldy + <usize>j * 4, promote, sa + <usize>i * lds + <usize>kb * 4, sb, min(8, n1 - j), tmp);
            }
          }
        }
      }
    }
  }
}

/**
 * gemm() over column chunks handed out at run time: each participant takes chunk c = counter++ (an i32
 * at `counter`, zeroed by the caller), i.e. columns [c·chunk, min(N, (c+1)·chunk)), until none is left.
 * A core that runs slower (another process on it, a late wake-up) takes fewer chunks instead of making
 * the others wait. chunk is a multiple of 8; every column's bits are the same as with a static split.
 */
export function gemmChunks(kind: i32, x: usize, M: i32, K: i32, w: usize, sc: usize, sa: usize, y: usize, N: i32, chunk: i32, counter: usize, panel: usize): void {
  while (true) {
    const n0 = atomic.add<i32>(counter, 1) * chunk;
    if (n0 >= N) break;
    gemm(kind, x, M, K, w, sc, sa, y, N, n0, min(N, n0 + chunk), panel);
  }
}

/**
 * The GEMVs (M = 1) over row chunks taken at run time, as gemmChunks: kind 0 gemvF32(x), 1 gemvBf16(x),
 * 2 gemvFp8(xs, bmul: x prepared by prepFp8Gemv), 3 gemvFp8Fp8(x, sa); scratch is the participant's.
 */
export function gemvChunks(kind: i32, x: usize, xs: usize, bmul: usize, sa: usize, w: usize, sc: usize, y: usize, K: i32, N: i32,
  chunk: i32, counter: usize, scratch: usize): void {
  while (true) {
    const n0 = atomic.add<i32>(counter, 1) * chunk;
    if (n0 >= N) break;
    const n1 = min(N, n0 + chunk);
    if (kind == 0) gemvF32(x, w, y, K, n0, n1);
    else if (kind == 1) gemvBf16(x, w, y, K, n0, n1);
    else if (kind == 2) gemvFp8(xs, bmul, w, sc, y, K, n0, n1, scratch);
    else gemvFp8Fp8(x, sa, w, sc, y, K, n0, n1, scratch);
  }
}
