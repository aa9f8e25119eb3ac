// The summing halves of DeepEP's combines (normal: unweighted sum of a token's rows in rank order;
// low latency: sum over k of w_k·y_k in k order), in f32, as plain monomorphic loops over whole rows.
// Reference: https://github.com/deepseek-ai/DeepEP/blob/main/csrc/kernels/intranode.cu (combine) and
// internode_ll.cu (low-latency combine). Rows are [n, H] row-major.
import { decodeBf16 } from '../../tensor/dtypes.ts';

// Accumulation kernels: one monomorphic loop per dtype, in f32 (each `+=` rounds to f32 on the store, and
// a double sum of two f32 values rounded once to f32 equals the f32 sum). BF16 values are read through
// BF16_TO_F32 (a 64 Ki-entry table: one load instead of a bit-cast round trip through a scratch row).

/** out[idx[i]·H ..][c] += src[i·H + c] for every row i (normal combine, f32 rows). */
export function addRowsF32(out: Float32Array, idx: Int32Array, src: Float32Array, H: number): void {
  for (let i = 0; i < idx.length; i++) {
    const o = idx[i]! * H;
    const s = i * H;
    for (let c = 0; c < H; c++) out[o + c] += src[s + c]!;
  }
}

/**
 * Normal combine of bf16 rows, token by token: the rows of token t (at most one per rank) are summed in
 * rank order into one f32 scratch row that stays in cache, which is then rounded to bf16 into the
 * result: the same f32 sums as accumulating everything into a zeroed [T, H] f32 array (0 + a == a + 0,
 * -0 included), without that array. views[r]: rank r's rows in sendIdx[r] order.
 */
export function combineBf16(views: readonly Uint16Array[], sendIdx: readonly Int32Array[], T: number, H: number): Uint16Array {
  const R = views.length;
  const tab = bf16Table();
  // rowOf[r·T + t]: row of token t in rank r's message, or -1.
  const rowOf = new Int32Array(R * T).fill(-1);
  for (let r = 0; r < R; r++) {
    const idx = sendIdx[r]!;
    for (let i = 0; i < idx.length; i++) rowOf[r * T + idx[i]!] = i;
  }
  const out = new Uint16Array(T * H);
  const acc = new Float32Array(H);
  const accBits = new Uint32Array(acc.buffer);
  // The token's rows in rank order: views ofV[j], element offsets ofS[j].
  const ofV: Uint16Array[] = [];
  const ofS: number[] = [];
  for (let t = 0; t < T; t++) {
    let n = 0;
    for (let r = 0; r < R; r++) {
      const i = rowOf[r * T + t]!;
      if (i < 0) continue;
      ofV[n] = views[r]!;
      ofS[n] = i * H;
      n++;
    }
    if (n === 0) continue; // no rows: the sum is +0 (bits 0), already there
    const a = ofV[0]!, sa = ofS[0]!;
    if (n === 1) {
      for (let c = 0; c < H; c++) acc[c] = tab[a[sa + c]!]! + 0;
    } else {
      // The common case (a token on two ranks) in one pass: (0 + a) + b == a + b exactly.
      const b = ofV[1]!, sb = ofS[1]!;
      for (let c = 0; c < H; c++) acc[c] = tab[a[sa + c]!]! + tab[b[sb + c]!]!;
      for (let j = 2; j < n; j++) {
        const v = ofV[j]!, s = ofS[j]!;
        for (let c = 0; c < H; c++) acc[c] += tab[v[s + c]!]!;
      }
    }
    const o = t * H;
    for (let c = 0; c < H; c++) {
      // f32 -> bf16 round-to-nearest-even, NaN stays NaN (as f32ArrayToBf16).
      const b = accBits[c]!;
      out[o + c] = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  }
  return out;
}

/** out[o + c] += w · src[s + c], c < H (low-latency combine, f32 rows). */
export function addScaledF32(out: Float32Array, o: number, src: Float32Array, s: number, H: number, w: number): void {
  for (let c = 0; c < H; c++) out[o + c] += w * src[s + c]!;
}

/** out[o + c] += w · bf16(src[s + c]), c < H (low-latency combine, bf16 rows). */
export function addScaledBf16(out: Float32Array, o: number, src: Uint16Array, s: number, H: number, w: number): void {
  const tab = bf16Table();
  for (let c = 0; c < H; c++) out[o + c] += w * tab[src[s + c]!]!;
}

/**
 * Two steps of addScaledBf16 in one pass: out = f32(f32(out + wa·a) + wb·b), the same roundings as
 * calling it for a then for b (each product of an f32 weight and a bf16 value is exact in f64).
 */
export function addScaled2Bf16(out: Float32Array, o: number, a: Uint16Array, sa: number, wa: number, b: Uint16Array, sb: number, wb: number, H: number): void {
  const tab = bf16Table();
  for (let c = 0; c < H; c++) out[o + c] = Math.fround(out[o + c]! + wa * tab[a[sa + c]!]!) + wb * tab[b[sb + c]!]!;
}

let BF16_TO_F32: Float32Array | null = null;

/** [65536] f32 value of every bf16 bit pattern (f32 bits = u16 << 16). */
export function bf16Table(): Float32Array {
  if (BF16_TO_F32 === null) {
    const codes = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) codes[i] = i;
    BF16_TO_F32 = decodeBf16(codes);
  }
  return BF16_TO_F32;
}
