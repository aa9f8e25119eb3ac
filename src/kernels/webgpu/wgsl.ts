// Shared WGSL snippets: number formats WGSL lacks (e4m3 fp8 and bf16 arrive as bytes / halves packed into
// u32 words, see buffers.ts packWords) and the 2-D grid used to address more than 65535 workgroups.

/**
 * e4m3fn code (low 8 bits) -> f32 with bit math: sign s, exponent e (bias 7), mantissa m; e = 0 is
 * subnormal m·2⁻⁹; e = 15, m = 7 is NaN (there is no infinity). The NaN is built at run time
 * (0x7f800000 | m<<20) since a constant NaN is a WGSL compile error.
 */
export const FP8_E4M3_DECODE = /* wgsl */ `
fn fp8e4m3(code: u32) -> f32 {
  let e = (code >> 3u) & 15u;
  let m = code & 7u;
  let normal = bitcast<f32>(((e + 120u) << 23u) | (m << 20u));
  let sub = f32(m) * 0.001953125;
  let nan = bitcast<f32>(0x7f800000u | (m << 20u));
  var v = select(normal, sub, e == 0u);
  v = select(v, nan, e == 15u && m == 7u);
  return select(v, -v, (code & 0x80u) != 0u);
}
/** Byte i of a packed u32 array. */
fn byteAt(word: u32, i: u32) -> u32 { return (word >> ((i & 3u) * 8u)) & 0xffu; }
`;

/** bf16 half i of a packed word -> f32: bf16 is the top half of an f32. */
export const BF16_DECODE = /* wgsl */ `
fn bf16At(word: u32, i: u32) -> f32 {
  return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
}
`;

/** Workgroup grid for `count` workgroups: [x, y] with x ≤ 65535 (max per dimension). */
export function grid(count: number, maxPerDim = 65535): [number, number] {
  if (count <= maxPerDim) return [Math.max(0, count), 1];
  const y = Math.ceil(count / maxPerDim);
  return [Math.ceil(count / y), y];
}

/** WGSL expression for the flat workgroup index of a grid() dispatch (needs `wid` and `nwg` builtins). */
export const FLAT_GROUP = '(wid.x + wid.y * nwg.x)';
