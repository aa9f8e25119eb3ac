// Grouped matrix products (DeepGEMM's m-grouped GEMM): G weight matrices stacked [G, N, K], rows of x in
// segments, segment g multiplied by W_g. One call runs a list of work items so that the thread pool is
// woken ONCE per grouped product: the JS side (../grouped.ts) splits the work into items
//   table[i] = [g, r0, len, n0, n1, gemv]  (i32 x 6)
// i.e. rows [r0, r0+len) of x times columns [n0, n1) of W_g, and hands each participant a range of items.
// Each item runs the ordinary kernels of gemm.ts on pointers offset to its group and rows, so results are
// bit-identical to one matmul per group:
//   gemv = 1: the GEMV kernel row by row (the path a one-row product takes);
//   gemv = 0: the packed GEMM over the item's rows.
// Kinds as in gemm.ts (0 f32, 1 bf16, 2 FP8 weight-only, 3 FP8 x FP8). For kind 2 GEMV items, xs/bmul
// hold the rows prepared by prepFp8Gemv ([M, K] and [M, ceil(K/128)]); for kind 3, x holds each row
// decoded for its path and sa the activation scales [M, ceil(K/128)]. `panel` is the participant's
// scratch (gemm.ts PANEL_BYTES: packed panels, or the FP8 GEMVs' staged x).
import { gemm, gemvBf16, gemvF32, gemvFp8, gemvFp8Fp8 } from './gemm';

export const GROUP_ITEM_INTS: i32 = 6;

export function gemmGrouped(kind: i32, x: usize, xs: usize, bmul: usize, sa: usize, K: i32, w: usize, sc: usize,
  y: usize, N: i32, table: usize, e0: i32, e1: i32, panel: usize): void {
  const KB = (K + 127) >> 7;
  const es: usize = kind == 0 ? 4 : kind == 1 ? 2 : 1;
  const wStride = <usize>N * <usize>K * es;
  const sStride = <usize>((N + 127) >> 7) * <usize>KB * 4;
  const lda = <usize>K * 4, ldy = <usize>N * 4, lds = <usize>KB * 4;
  for (let e = e0; e < e1; e++) {
    const it = table + <usize>e * <usize>GROUP_ITEM_INTS * 4;
    const g = <usize>load<i32>(it), r0 = load<i32>(it, 4), len = load<i32>(it, 8);
    const n0 = load<i32>(it, 12), n1 = load<i32>(it, 16), gemv = load<i32>(it, 20);
    const wg = w + g * wStride;
    const sg = sc + g * sStride;
    if (gemv) {
      for (let r = r0; r < r0 + len; r++) {
        const yr = y + <usize>r * ldy;
        if (kind == 0) gemvF32(x + <usize>r * lda, wg, yr, K, n0, n1);
        else if (kind == 1) gemvBf16(x + <usize>r * lda, wg, yr, K, n0, n1);
        else if (kind == 2) gemvFp8(xs + <usize>r * lda, bmul + <usize>r * lds, wg, sg, yr, K, n0, n1, panel);
        else gemvFp8Fp8(x + <usize>r * lda, sa + <usize>r * lds, wg, sg, yr, K, n0, n1, panel);
      }
    } else {
      gemm(kind, x + <usize>r0 * lda, len, K, wg, sg, sa + <usize>r0 * lds, y + <usize>r0 * ldy, N, n0, n1, panel);
    }
  }
}

/**
 * gemmGrouped() over parts handed out at run time: each participant takes part p = counter++ (an i32 at
 * `counter`, zeroed by the caller), items [bounds[p], bounds[p+1]) of the table (bounds: i32 [parts + 1]),
 * until none is left; see gemmChunks in gemm.ts.
 */
export function gemmGroupedParts(kind: i32, x: usize, xs: usize, bmul: usize, sa: usize, K: i32, w: usize, sc: usize,
  y: usize, N: i32, table: usize, bounds: usize, parts: i32, counter: usize, panel: usize): void {
  while (true) {
    const p = atomic.add<i32>(counter, 1);
    if (p >= parts) break;
    gemmGrouped(kind, x, xs, bmul, sa, K, w, sc, y, N, table, load<i32>(bounds + <usize>p * 4), load<i32>(bounds + <usize>p * 4 + 4), panel);
  }
}
