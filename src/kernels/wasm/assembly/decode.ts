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
