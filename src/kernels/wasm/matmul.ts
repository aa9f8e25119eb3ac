// Drives the wasm matrix kernels (assembly/gemm.ts) on pointers into the shared memory: picks the
// GEMV (M = 1) or packed-GEMM path and splits output columns N across the pool's participants.
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
function panelFor(rt: WasmRuntime, t: number): number {
  let p = panels.get(rt);
  if (!p) {
    const bytes = Number(rt.pool.exports('kernels').panelBytes!());
    p = Array.from({ length: rt.threads }, () => rt.heap.alloc(bytes));
    panels.set(rt, p);
  }
  return p[t]!;
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
 * y = x·Wᵀ on the pool. M = 1 uses the GEMV kernels (for FP8 weight-only, x is first prepared per
 * 128-block on the calling thread); M > 1 the packed GEMM. For KIND_FP8_FP8 the caller prepares x in
 * the representation the chosen path expects (see gemmPathIsGemv).
 */
export function runGemm(rt: WasmRuntime, a: GemmArgs): void {
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
  const ranges = splitColumns(a.n, parts);
  const per = (t: number): [number, number] | null => (t < parts ? ranges[t] ?? null : null);
  if (a.m === 1) {
    if (a.kind === KIND_F32) rt.pool.run('kernels', 'gemvF32', (t) => { const r = per(t); return r && [a.x, a.w, a.y, a.k, r[0], r[1]]; });
    else if (a.kind === KIND_BF16) rt.pool.run('kernels', 'gemvBf16', (t) => { const r = per(t); return r && [a.x, a.w, a.y, a.k, r[0], r[1]]; });
    else if (a.kind === KIND_FP8) {
      panelFor(rt, 0); // the FP8 GEMVs stage x in the per-thread scratch
      gemvFp8(rt, a, (xs, bmul) => rt.pool.run('kernels', 'gemvFp8', (t) => { const r = per(t); return r && [xs, bmul, a.w, a.scales, a.y, a.k, r[0], r[1], panelFor(rt, t)]; }));
    } else {
      panelFor(rt, 0);
      rt.pool.run('kernels', 'gemvFp8Fp8', (t) => { const r = per(t); return r && [a.x, a.aScales, a.w, a.scales, a.y, a.k, r[0], r[1], panelFor(rt, t)]; });
    }
    return;
  }
  panelFor(rt, 0);
  rt.pool.run('kernels', 'gemm', (t) => {
    const r = per(t);
    return r && [a.kind, a.x, a.m, a.k, a.w, a.scales, a.aScales, a.y, a.n, r[0], r[1], panelFor(rt, t)];
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

/** Whether runGemm takes the GEMV path (its FP8xFP8 activations are then values·2^118, else exact values). */
export function gemmPathIsGemv(m: number): boolean {
  return m === 1;
}
