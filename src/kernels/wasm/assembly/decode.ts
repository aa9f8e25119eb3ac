// Weight decoding in registers: FP8 e4m3fn and bf16 codes -> f32x4, no tables.
//
// e4m3 code b = s eeee mmm. Placing the 7 bits "eeee mmm" at f32 bits 20..26 and s at bit 31 gives
// an f32 whose value is exactly decode(b) * 2^-120, subnormal codes included (an e4m3 subnormal lands
// on an f32 subnormal with the same mantissa). So bytes 3 and 2 of each f32 lane are
//   hi = (b & 0x80) | ((b >> 4) & 0x07),   lo = (b << 4) & 0xff,
// computed for 16 codes at once, then interleaved with zero bytes. Callers multiply by 2^120 (exactly)
// or fold that factor into their scales. NaN codes (0x7f, 0xff) decode to ±480: checkpoints hold none.

/** 16 FP8 codes at p -> four f32x4 holding codes p[0..3], p[4..7], p[8..11], p[12..15] (times 2^-120). */
@inline export function fp8Hi(b: v128): v128 {
  return v128.or(v128.and(b, i8x16.splat(<i8>0x80)), v128.and(i8x16.shr_u(b, 4), i8x16.splat(7)));
}
@inline export function fp8Lo(b: v128): v128 {
  return i8x16.shl(b, 4);
}
/** u16 lanes (lo | hi << 8) for codes 0..7 of the 16. */
@inline export function fp8W0(lo: v128, hi: v128): v128 {
  return i8x16.shuffle(lo, hi, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
}
/** u16 lanes (lo | hi << 8) for codes 8..15 of the 16. */
@inline export function fp8W1(lo: v128, hi: v128): v128 {
  return i8x16.shuffle(lo, hi, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
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
