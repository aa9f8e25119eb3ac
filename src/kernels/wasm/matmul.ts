// Drives the wasm matrix kernels (assembly/gemm.ts) on pointers into the shared memory: picks the
// GEMV (M = 1) or packed-GEMM path and splits output columns N across the pool's participants, in
// chunks they take at run time (gemvChunks, gemmChunks).
// Used by the `wasm` backend's matmul and by the wasm DeepGEMM port (grouped GEMMs call it per group).
import type { WasmRuntime } from './runtime.ts';

export const KIND_F32 = 0, KIND_BF16 = 1, KIND_FP8 = 2, KIND_FP8_FP8 = 3;
export type GemmKind = typeof KIND_F32 | typeof KIND_BF16 | typeof KIND_FP8 | typeof KIND_FP8_FP8;

/** Below this many multiply-adds an op runs on the calling thread alone (waking workers costs ~20 µs). */
export const PARALLEL_MIN_MACS = 1 << 17;

/** Column ranges [n0, n1) per participant, multiples of 8 (GEMM panels and scale blocks stay aligned). */
export function splitColumns(n: number, parts: number): Array<[number, number] | null> {
  const chunk = Math.ceil(n / parts / 8) * 8;
  return Array.from({ length: parts }, (_, t) => {
    const n0 = t * chunk, n1 = Math.min(n, n0 + chunk);
    return n0 < n1 ? [n0, n1] : null;
  });
}

/** Per-participant scratch of the GEMM path (packed panels) and the FP8 GEMVs (staged x), allocated once per runtime. */
const panels = new WeakMap<WasmRuntime, number[]>();
export function panelFor(rt: WasmRuntime, t: number): number {
  let p = panels.get(rt);
  if (!p) {
    const bytes = Number(rt.pool.exports('kernels').panelBytes!());
    p = Array.from({ length: rt.threads }, () => rt.heap.alloc(bytes));
    panels.set(rt, p);
  }
  return p[t]!;
}

/**
 * Work handed out at run time (gemmChunks, gemvChunks, gemmGroupedParts): up to this many chunks per
 * participant (chunkCount), so a participant that runs slower (another process on its core, a late
 * wake-up) takes fewer of them instead of making the others wait at the end of the op.
 */
export const CHUNKS_PER_PARTICIPANT = 16;
/** Fewest multiply-adds per chunk (~30-60 us on one core): below it a chunk's hand-out and restart cost shows. */
export const CHUNK_MIN_MACS = 1 << 20;

/**
 * How many chunks an op of `macs` multiply-adds is cut into for `parts` participants: up to
 * CHUNKS_PER_PARTICIPANT each, none under CHUNK_MIN_MACS, and at least one each.
 */
export function chunkCount(macs: number, parts: number): number {
  return Math.max(parts, Math.min(parts * CHUNKS_PER_PARTICIPANT, Math.floor(macs / CHUNK_MIN_MACS)));
}

/** Per runtime, the i32 the participants of a dynamically scheduled op count chunks with. */
const counters = new WeakMap<WasmRuntime, number>();
/** The runtime's chunk counter, zeroed (the pool's start of a run publishes the store to the workers). */
export function chunkCounter(rt: WasmRuntime): number {
  let p = counters.get(rt);
  if (p === undefined) counters.set(rt, (p = rt.heap.alloc(64)));
  rt.heap.i32(p, 1)[0] = 0;
  return p;
}

/** Columns (GEMV: rows of W) per chunk of an op cut into `chunks`: a multiple of 8, at least 64 (a GEMM packing block). */
export function chunkColumns(n: number, chunks: number): number {
  return Math.max(64, Math.ceil(n / chunks / 8) * 8);
}

export interface GemmArgs {
  kind: GemmKind;
  /** f32 [M, K] activations (KIND_FP8_FP8 GEMM path: exact decoded FP8 values; GEMV path: values·2^118). */
  x: number;
  m: number;
  k: number;
  /** weights [N, K] in the kind's format. */
  w: number;
  /** FP8 128x128 scales [ceil(N/128), ceil(K/128)] (kinds FP8, FP8_FP8). */
  scales: number;
  /** KIND_FP8_FP8: activation scales [M, ceil(K/128)]. */
  aScales: number;
  /** f32 [M, N] output. */
  y: number;
  n: number;
  /** Force the single-thread path (e.g. tiny problems). */
  threads?: number;
}

/**
 * y = x·Wᵀ on the pool. Rows go to the GEMV kernels (for FP8 weight-only, x is first prepared per
 * 128-block on the calling thread) or the packed GEMM as splitRows says; for KIND_FP8_FP8 the caller
 * prepares x in the representation that path expects (gemmPathIsGemv).
 */
export function runGemm(rt: WasmRuntime, a: GemmArgs): void {
  if (a.m <= 1) return runPath(rt, a);
  const { gemm, gemv } = splitRows(a.kind, a.m);
  if (gemm > 0) runPath(rt, { ...a, m: gemm });
  const kb = Math.ceil(a.k / 128);
  for (let i = gemm; i < gemm + gemv; i++) {
    // Each GEMV row with its own activation scales (read by the FP8 x FP8 kernel only).
    runPath(rt, { ...a, m: 1, x: a.x + i * a.k * 4, y: a.y + i * a.n * 4, aScales: a.aScales + i * kb * 4 });
  }
}

/**
 * How m rows of one product are split: a packed GEMM over the first `gemm` rows, then one GEMV per row
 * for the last `gemv`. Few rows: the GEMM's weight packing is paid once per call whatever M is, and rows
 * beyond a multiple of 4 take its 1-row micro-kernel (about 4x slower per row than the 4-row one); one
 * GEMV per row (weights decoded in registers, the matrix cache-hot after the first row) is then faster
 * below gemmMinRows rows. Larger M: a GEMM over the first M & ~3 rows plus GEMVs for the last M % 4.
 * FP8 x FP8 keeps one path for all rows (its activations are decoded per path: gemmPathIsGemv).
 */
export function splitRows(kind: GemmKind, m: number): { gemm: number; gemv: number } {
  if (kind === KIND_FP8_FP8) return gemmPathIsGemv(m) ? { gemm: 0, gemv: m } : { gemm: m, gemv: 0 };
  const gemv = m < gemmMinRows(kind) ? m : m & 3;
  return { gemm: m - gemv, gemv };
}

/**
 * Fewest rows the packed GEMM path is used for (see runGemm). Measured: bf16 [192..2048, 384]: M = 2, 3
 * ~2.5x faster by GEMV, M = 6 ~1.3x, M = 4 even, M >= 8 the GEMM wins; FP8 weights, whose packing also
 * decodes (V3 shapes 2112x7168 and 4096x7168, 1 and 2 threads): M = 8 ~1.25x faster by GEMV, M = 12
 * even, M >= 16 the GEMM wins (the FP8 x FP8 GEMV is about as fast per row).
 */
export function gemmMinRows(kind: GemmKind): number {
  return kind === KIND_FP8 || kind === KIND_FP8_FP8 ? 12 : 8;
}

/** One call on one path: GEMV when m = 1, else the packed GEMM. */
function runPath(rt: WasmRuntime, a: GemmArgs): void {
  const k = rt.pool.exports('kernels');
  const parts = a.m * a.n * a.k < PARALLEL_MIN_MACS ? 1 : Math.min(a.threads ?? rt.threads, rt.threads);
  if (parts === 1) {
    // One participant: call the kernel directly (no argument table, no closures, no column split).
    if (a.m === 1) {
      if (a.kind === KIND_F32) k.gemvF32!(a.x, a.w, a.y, a.k, 0, a.n);
      else if (a.kind === KIND_BF16) k.gemvBf16!(a.x, a.w, a.y, a.k, 0, a.n);
      else if (a.kind === KIND_FP8) { const scr = panelFor(rt, 0); gemvFp8(rt, a, (xs, bmul) => k.gemvFp8!(xs, bmul, a.w, a.scales, a.y, a.k, 0, a.n, scr)); }
      else k.gemvFp8Fp8!(a.x, a.aScales, a.w, a.scales, a.y, a.k, 0, a.n, panelFor(rt, 0));
    } else {
      k.gemm!(a.kind, a.x, a.m, a.k, a.w, a.scales, a.aScales, a.y, a.n, 0, a.n, panelFor(rt, 0));
    }
    return;
  }
  if (a.m === 1) {
    // Row chunks taken at run time (gemvChunks); the FP8 GEMVs stage x in the per-thread scratch.
    const chunk = chunkColumns(a.n, chunkCount(a.n * a.k, parts));
    panelFor(rt, 0); // allocates every participant's scratch
    const run = (xs: number, bmul: number): void => {
      const counter = chunkCounter(rt);
      rt.pool.run('kernels', 'gemvChunks', (t) => (t < parts
        ? [a.kind, a.x, xs, bmul, a.aScales, a.w, a.scales, a.y, a.k, a.n, chunk, counter, panelFor(rt, t)] : null));
    };
    if (a.kind === KIND_FP8) gemvFp8(rt, a, run);
    else run(0, 0);
    return;
  }
  panelFor(rt, 0);
  const chunk = chunkColumns(a.n, chunkCount(a.m * a.n * a.k, parts)), counter = chunkCounter(rt);
  rt.pool.run('kernels', 'gemmChunks', (t) => {
    if (t >= parts) return null;
    return [a.kind, a.x, a.m, a.k, a.w, a.scales, a.aScales, a.y, a.n, chunk, counter, panelFor(rt, t)];
  });
}

/** FP8 weight-only GEMV: x is first prepared per 128-block on the calling thread (scratch xs, bmul). */
function gemvFp8(rt: WasmRuntime, a: GemmArgs, run: (xs: number, bmul: number) => void): void {
  const kb = Math.ceil(a.k / 128);
  const xs = rt.heap.alloc(a.k * 4), bmul = rt.heap.alloc(kb * 4);
  try {
    rt.pool.exports('kernels').prepFp8Gemv!(a.x, xs, bmul, a.k);
    run(xs, bmul);
  } finally {
    rt.heap.free(xs);
    rt.heap.free(bmul);
  }
}

/**
 * Whether runGemm (and a grouped run of m rows) takes the GEMV path for KIND_FP8_FP8: fewer than
 * gemmMinRows rows, as for the other kinds (the packed GEMM at M = 2 ran ~3.5x slower per row).
 * Its activations are then values·2^118, else exact values.
 */
export function gemmPathIsGemv(m: number): boolean {
  return m < gemmMinRows(KIND_FP8_FP8);
}
