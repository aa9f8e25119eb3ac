// Weight decoding in registers: FP8 e4m3fn and bf16 codes -> f32x4, no tables.
//
// e4m3 code b = s eeee mmm. Placing the 7 bits "eeee mmm" at f32 bits 20..26 and s at bit 31 gives
// an f32 whose value is exactly decode(b) * 2^-120, subnormal codes included (an e4m3 subnormal lands
// on an f32 subnormal with the same mantissa). For 16 codes at once: interleave zero bytes below the
// codes (u16 lanes b << 8: s at bit 15, eeeemmm at bits 8..14), shift arithmetically right by 4 (s
// copied into bits 11..15, eeeemmm now at bits 4..10) and keep bits 0x87f0: that is the top half of
// the f32; interleaving zero u16 lanes below gives the four f32x4 (3 + 4 ops per 16 codes per half).
// Callers multiply by 2^120 (exactly) or fold that factor into their scales. NaN codes (0x7f, 0xff)
// decode to ±480: checkpoints hold none.

/** u16 lanes: top halves of the f32 bits of codes 0..7 of the 16 in b. */
@inline export function fp8W0(b: v128): v128 {
  const t = i8x16.shuffle(i8x16.splat(0), b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  return v128.and(i16x8.shr_s(t, 4), i16x8.splat(<i16>0x87f0));
}
/** u16 lanes: top halves of the f32 bits of codes 8..15. */
@inline export function fp8W1(b: v128): v128 {
  const t = i8x16.shuffle(i8x16.splat(0), b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  return v128.and(i16x8.shr_s(t, 4), i16x8.splat(<i16>0x87f0));
}
/** Low 4 u16 lanes of w moved to the high halves of 4 i32 lanes (the f32 bits). */
@inline export function hiHalvesLo(w: v128): v128 {
  return i16x8.shuffle(i16x8.splat(0), w, 0, 8, 1, 9, 2, 10, 3, 11);
}
@inline export function hiHalvesHi(w: v128): v128 {
  return i16x8.shuffle(i16x8.splat(0), w, 4, 12, 5, 13, 6, 14, 7, 15);
}

// Shift-based variant for streaming (the GEMVs): 4 shifts + 1 byte shift + 4 ands per 16 codes. In each
// u16 lane the high byte is an odd code: i16x8.shr_s(b, 4) puts its "eeeemmm" at bits 4..10 and copies
// s into bits 11..15 (the low byte's bits fall into 0..3); shifting the whole register up one byte first
// lifts the even codes into the high bytes. In each i32 lane the upper u16 then already is the top half of an f32 (keep the bits
// 0x87f00000), the lower u16 gets there with i32x4.shl 16. So from 16 codes c[0..15]:
//   fp8Code(b, a) lane i = raw(c[4i + a]),  a = 0..3
// i.e. the four vectors hold the codes transposed per 16: a caller pairs fp8Code(b, a) with
// x'[4a + i] = x[4i + a] (x pre-permuted once per call, see gemm.ts permute16).

/** u16 lanes of odd codes (a = 1, 3), shifted into f32 top-half position (bits outside 0x87f0 are junk). */
@inline export function fp8Odd(b: v128): v128 {
  return i16x8.shr_s(b, 4);
}
/**
 * Same for the even codes (a = 0, 2): a whole-register byte shift (one palignr) lifts each even code into
 * the high byte of its u16 lane; measured a little faster than i16x8.shl(b, 8), which competes with the
 * other shifts.
 */
@inline export function fp8Even(b: v128): v128 {
  return i16x8.shr_s(fp8Lift(b), 4);
}
/**
 * fp8Lo without the shift: i32x4.dot_i16x8_s(b, splat(4096)) is each i32 lane's lower u16 (the code
 * pair [even, odd]) times 2^12, which puts the odd code's "eeeemmm" at bits 20..26 and its sign at 27 and
 * above (sign-extended), the even code below bit 20: & 0x87f00000 leaves the f32 of the odd code. Same
 * value as fp8Lo(fp8Odd(b)); pass the byte-lifted codes of fp8Even for fp8Lo(fp8Even(b)). pmaddwd runs on
 * a multiply port while this machine's vector shifts share one port (1 per cycle), so the plain build
 * (separate multiply and add, more ops per weight) trades two of its four shifts per 16 codes for it.
 */
@inline export function fp8LoMul(b: v128): v128 {
  return v128.and(i32x4.dot_i16x8_s(b, i32x4.splat(4096)), i32x4.splat(0x87f00000));
}
/** The byte-lifted codes fp8Even shifts: even codes in the high bytes of the u16 lanes. */
@inline export function fp8Lift(b: v128): v128 {
  return i8x16.shuffle(i8x16.splat(0), b, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30);
}
/** Raw f32 of the codes in the upper u16 of each i32 lane of fp8Odd/fp8Even (a = 3 resp. 2). */
@inline export function fp8Hi(v: v128): v128 {
  return v128.and(v, i32x4.splat(0x87f00000));
}
/** Raw f32 of the codes in the lower u16 (a = 1 resp. 0). */
@inline export function fp8Lo(v: v128): v128 {
  return v128.and(i32x4.shl(v, 16), i32x4.splat(0x87f00000));
}

/** One FP8 code -> its value times 2^-120 (scalar version of the above). */
@inline export function fp8Raw(b: u32): f32 {
  return reinterpret<f32>(((b & 0x7f) << 20) | ((b & 0x80) << 24));
}

/** 2^120, exact in f32: fp8Raw(b) * TWO120 = decode(b). */
export const TWO120: f32 = 1.329227995784916e36;
/** 2^119 (two factors of it give 2^238, used to decode activations pre-scaled by 2^118). */
export const TWO119: f32 = 6.64613997892458e35;

/** bf16 bits -> f32. */
@inline export function bf16(h: u32): f32 {
  return reinterpret<f32>(h << 16);
}

/**
 * The f32 (raw, ×2^-120) of code 4i + a in lane i, a = 0..3, for the 16 codes in b: the four vectors the
 * FP8 GEMVs multiply with x permuted per 16 (gemm.ts permute16). Relaxed build: the shift decode; plain
 * build: a = 0, 1 via fp8LoMul (its multiply-add loop has more ops per weight, so fewer shifts pay).
 * Shared subexpressions (fp8Lift(b), fp8Odd(b)) are computed once by the optimizers.
 */
@inline export function fp8Code(b: v128, a: i32): v128 {
  if (a == 2) return fp8Hi(fp8Even(b));
  if (a == 3) return fp8Hi(fp8Odd(b));
  if (ASC_FEATURE_RELAXED_SIMD) return fp8Lo(a == 0 ? fp8Even(b) : fp8Odd(b));
  return fp8LoMul(a == 0 ? fp8Lift(b) : b);
}
