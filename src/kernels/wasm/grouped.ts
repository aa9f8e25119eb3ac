// Drives the grouped wasm kernel (assembly/grouped.ts gemmGrouped) for DeepGEMM-style m-grouped
// products y = x · W_gᵀ over row segments: splits the whole product — every used group, every output
// column — across the pool's participants by estimated cost and wakes the pool ONCE (a hand-off costs
// tens of microseconds, so one per group would dominate MoE at decode sizes).
// Used by the wasm backend's groupedMatmul (MoE experts) and by the wasm DeepGEMM port.
import { KIND_FP8, PARALLEL_MIN_MACS, chunkCount, chunkCounter, panelFor, splitRows, type GemmArgs, type GemmKind } from './matmul.ts';
import type { WasmRuntime } from './runtime.ts';

/** One used segment: rows [r0, r0 + len) use group g. */
export interface GroupRun { readonly g: number; readonly r0: number; readonly len: number }

/** Copies the rows of each run from src [M, n] into dst [M, n]; dst's other rows are not touched. */
export function copyRunRows(dst: Float32Array, src: Float32Array, runs: readonly GroupRun[], n: number): void {
  for (const r of runs) dst.set(src.subarray(r.r0 * n, (r.r0 + r.len) * n), r.r0 * n);
}

/** A run (or part of one) on one kernel path: GEMV row by row, or the packed GEMM. */
export interface GroupPiece extends GroupRun { readonly gemv: boolean }

/** The path of each run's rows, as runGemm (matmul.ts) picks it for one matmul (splitRows). */
export function splitPaths(runs: readonly GroupRun[], kind: GemmKind): GroupPiece[] {
  const out: GroupPiece[] = [];
  for (const r of runs) {
    const { gemm, gemv } = splitRows(kind, r.len);
    if (gemm > 0) out.push({ g: r.g, r0: r.r0, len: gemm, gemv: false });
    if (gemv > 0) out.push({ g: r.g, r0: r.r0 + gemm, len: gemv, gemv: true });
  }
  return out;
}

/** Ints per work item in the kernel's table: [g, r0, len, n0, n1, gemv]. */
const ITEM = 6;

/** runGemm's arguments (w and scales point at group 0 of [G, N, K] / [G, ceil(N/128), ceil(K/128)];
 * y's rows of the runs are overwritten, other rows are not touched) plus the runs of rows per group. */
export interface GroupedGemmArgs extends Omit<GemmArgs, 'threads'> {
  runs: readonly GroupRun[];
}

/**
 * Work items per participant: run i's columns are laid end to end on one cost axis (cost per column:
 * a GEMV pass per row, or a panel pack plus a quarter per row for the GEMM), the axis is cut into
 * `parts` equal spans, and each cut is rounded to a multiple of 8 columns (GEMM panels and scale blocks
 * stay aligned). Returns the item table and each participant's item range [bounds[t], bounds[t+1]).
 */
export function planGroupedItems(runs: readonly GroupPiece[], n: number, parts: number): { items: Int32Array; bounds: number[] } {
  const cost = runs.map((r) => (r.gemv ? r.len : 2 + r.len / 4));
  const startCost: number[] = [];
  let total = 0;
  for (const c of cost) { startCost.push(total); total += c * n; }
  const quota = total / parts;
  const cut = (i: number, t: number): number => {
    if (t >= parts) return n;
    const v = Math.round((t * quota - startCost[i]!) / cost[i]! / 8) * 8;
    return Math.max(0, Math.min(n, v));
  };
  const items: number[] = [];
  const bounds = [0];
  for (let t = 0; t < parts; t++) {
    runs.forEach((r, i) => {
      const n0 = cut(i, t), n1 = cut(i, t + 1);
      if (n1 > n0) items.push(r.g, r.r0, r.len, n0, n1, r.gemv ? 1 : 0);
    });
    bounds.push(items.length / ITEM);
  }
  return { items: Int32Array.from(items), bounds };
}

/** y rows of every run = x rows · W_gᵀ, in one pool dispatch. */
export function runGroupedGemm(rt: WasmRuntime, a: GroupedGemmArgs): void {
  if (a.runs.length === 0 || a.n === 0) return;
  const kx = rt.pool.exports('kernels');
  let macs = 0;
  for (const r of a.runs) macs += r.len * a.n * a.k;
  const parts = macs < PARALLEL_MIN_MACS ? 1 : rt.threads;
  const pieces = splitPaths(a.runs, a.kind);
  const { items, bounds } = planGroupedItems(pieces, a.n, parts === 1 ? 1 : chunkCount(macs, parts));
  const temps: number[] = [];
  const temp = (bytes: number): number => { const p = rt.heap.alloc(bytes); temps.push(p); return p; };
  try {
    const kb = Math.ceil(a.k / 128);
    // FP8 weight-only GEMV rows are prepared once here (per-128-block exponent; see gemm.ts gemvFp8).
    let xs = 0, bmul = 0;
    if (a.kind === KIND_FP8 && pieces.some((r) => r.gemv)) {
      xs = temp(a.m * a.k * 4);
      bmul = temp(a.m * kb * 4);
      for (const r of pieces) {
        if (!r.gemv) continue;
        for (let row = r.r0; row < r.r0 + r.len; row++) kx.prepFp8Gemv!(a.x + row * a.k * 4, xs + row * a.k * 4, bmul + row * kb * 4, a.k);
      }
    }
    const table = temp(items.byteLength);
    rt.heap.i32(table, items.length).set(items);
    panelFor(rt, 0); // allocates every participant's scratch
    if (parts === 1) {
      kx.gemmGrouped!(a.kind, a.x, xs, bmul, a.aScales, a.k, a.w, a.scales, a.y, a.n, table, 0, bounds[1]!, panelFor(rt, 0));
      return;
    }
    // chunkCount parts, taken at run time (gemmGroupedParts).
    const bt = temp(bounds.length * 4);
    rt.heap.i32(bt, bounds.length).set(bounds);
    const nParts = bounds.length - 1, counter = chunkCounter(rt);
    rt.pool.run('kernels', 'gemmGroupedParts', (t) => {
      if (t >= parts) return null;
      return [a.kind, a.x, xs, bmul, a.aScales, a.k, a.w, a.scales, a.y, a.n, table, bt, nParts, counter, panelFor(rt, t)];
    });
  } finally {
    for (const p of temps) rt.heap.free(p);
  }
}
