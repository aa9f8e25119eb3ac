// The grouped wasm GEMM driver: work items cover every (segment, column) exactly once, the split is
// balanced, and a grouped product — through the backend's groupedMatmul or the DeepGEMM port — wakes the
// thread pool exactly once however many groups it has.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { groupSlice, type WeightMatrix } from '../api.ts';
import { WasmDeepGemm } from '../deepgemm/wasm.ts';
import { refDeepGemm } from '../deepgemm/ref.ts';
import { mulberry32 } from '../../tensor/random.ts';
import { WasmMemoryOps } from './backend.ts';
import { planGroupedItems, splitPaths, type GroupPiece } from './grouped.ts';
import { KIND_BF16, KIND_FP8, KIND_FP8_FP8 } from './matmul.ts';
import { matmul as refMatmul } from '../ref/ops.ts';

function randn(r: () => number, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => (r() - 0.5) * 2);
}

/** |w| of a bf16 or FP8 weight matrix (sign bits cleared), for error bounds Σ|x||w|. */
function absWeight(w: WeightMatrix): WeightMatrix {
  if (w.dtype === 'bf16') return { ...w, data: w.data.map((v) => v & 0x7fff) };
  if (w.dtype === 'fp8') return { ...w, data: w.data.map((v) => v & 0x7f) };
  return { ...w, data: w.data.map(Math.abs) };
}

/** f32 sums of K products: |got - want| <= 1e-6·Σ|x||w| + 1e-7 (well above K·2^-24 relative rounding). */
function assertWithin(what: string, got: Float32Array, want: Float32Array, mag: Float32Array): void {
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-6 * mag[i]! + 1e-7, `${what} [${i}]: ${got[i]} vs ${want[i]} (Σ|xw| ${mag[i]})`);
  }
}

/** Counts pool.run calls per function while `fn` runs (and which participants got work). */
function countDispatches(ops: { runtime: { pool: { run: (m: string, f: string, a: (t: number) => number[] | null) => void } } }, fn: () => void): { name: string; busy: number }[] {
  const pool = ops.runtime.pool;
  const orig = pool.run;
  const calls: { name: string; busy: number }[] = [];
  pool.run = function (m, f, argsFor) {
    let busy = 0;
    const wrapped = (t: number) => { const a = argsFor(t); if (a) busy++; return a; };
    calls.push({ name: `${m}.${f}`, busy: 0 });
    const i = calls.length - 1;
    orig.call(this, m, f, wrapped);
    calls[i]!.busy = busy;
  };
  try {
    fn();
  } finally {
    pool.run = orig;
  }
  return calls;
}

describe('planGroupedItems', () => {
  it('covers every (segment, column) exactly once, cuts on multiples of 8, and balances cost', () => {
    const runs: GroupPiece[] = [{ g: 0, r0: 0, len: 1, gemv: true }, { g: 3, r0: 1, len: 7, gemv: true }, { g: 5, r0: 8, len: 2, gemv: false }, { g: 6, r0: 10, len: 40, gemv: false }];
    for (const n of [8, 100, 384]) {
      for (const parts of [1, 2, 3, 4]) {
        const { items, bounds } = planGroupedItems(runs, n, parts);
        assert.equal(bounds.length, parts + 1);
        assert.equal(bounds[parts], items.length / 6);
        const covered = runs.map(() => new Uint8Array(n));
        const cost = new Array<number>(parts).fill(0);
        for (let t = 0; t < parts; t++) {
          for (let e = bounds[t]!; e < bounds[t + 1]!; e++) {
            const [g, r0, len, n0, n1, gemv] = items.subarray(e * 6, e * 6 + 6);
            const i = runs.findIndex((r) => r.g === g && r.r0 === r0 && r.len === len);
            assert.ok(i >= 0, 'item belongs to a run');
            assert.equal(gemv, runs[i]!.gemv ? 1 : 0);
            assert.ok(n0! % 8 === 0 && (n1! % 8 === 0 || n1 === n) && n1! > n0!);
            for (let c = n0!; c < n1!; c++) covered[i]![c]!++;
            cost[t]! += (n1! - n0!) * (runs[i]!.gemv ? len! : 2 + len! / 4);
          }
        }
        for (const c of covered) assert.ok(c.every((v) => v === 1), `n=${n} parts=${parts}: every column once`);
        // Balance: each part within one 8-column step per run of its fair share.
        const total = cost.reduce((a, b) => a + b, 0);
        const slack = runs.reduce((a, r) => a + 8 * (r.gemv ? r.len : 2 + r.len / 4), 0);
        for (const c of cost) assert.ok(Math.abs(c - total / parts) <= slack, `n=${n} parts=${parts}: cost ${c} vs ${total / parts}`);
      }
    }
  });
});

describe('splitPaths', () => {
  it('takes the paths matmul takes: < 8 rows (FP8: 12) as GEMVs, else a GEMM over 4k rows plus GEMV rows; FP8xFP8 one path per run', () => {
    const runs = [{ g: 0, r0: 0, len: 1 }, { g: 1, r0: 1, len: 5 }, { g: 2, r0: 6, len: 11 }];
    assert.deepEqual(splitPaths(runs, KIND_BF16), [
      { g: 0, r0: 0, len: 1, gemv: true }, { g: 1, r0: 1, len: 5, gemv: true },
      { g: 2, r0: 6, len: 8, gemv: false }, { g: 2, r0: 14, len: 3, gemv: true },
    ]);
    assert.deepEqual(splitPaths(runs, KIND_FP8_FP8), [
      { g: 0, r0: 0, len: 1, gemv: true }, { g: 1, r0: 1, len: 5, gemv: true }, { g: 2, r0: 6, len: 11, gemv: true },
    ]);
    assert.deepEqual(splitPaths([{ g: 0, r0: 0, len: 14 }], KIND_FP8_FP8), [{ g: 0, r0: 0, len: 14, gemv: false }]);
    assert.deepEqual(splitPaths([{ g: 0, r0: 0, len: 11 }, { g: 1, r0: 11, len: 14 }], KIND_FP8), [
      { g: 0, r0: 0, len: 11, gemv: true }, { g: 1, r0: 11, len: 12, gemv: false }, { g: 1, r0: 23, len: 2, gemv: true },
    ]);
  });
});

describe('grouped products dispatch the wasm pool once', () => {
  let ops: WasmMemoryOps;
  let gemm: WasmDeepGemm;
  before(async () => {
    ops = await WasmMemoryOps.create(2);
    gemm = new WasmDeepGemm(ops.runtime);
  });
  after(async () => {
    await ops?.runtime.dispose();
  });

  // 8 groups of [96, 256] with 1..8 rows each: well above the parallel threshold.
  const G = 8, N = 96, K = 256;
  const count = Int32Array.from({ length: G }, (_, g) => g + 1);
  const start = new Int32Array(G);
  for (let g = 1; g < G; g++) start[g] = start[g - 1]! + count[g - 1]!;
  const M = start[G - 1]! + count[G - 1]!;

  for (const dtype of ['bf16', 'fp8'] as const) {
    it(`groupedMatmul ${dtype}: one gemmGroupedParts dispatch with both threads busy, equal to per-group matmuls`, () => {
      const r = mulberry32(31);
      const w = ops.allocGroupedWeight(dtype, G, N, K);
      if (w.dtype === 'bf16') for (let i = 0; i < w.data.length; i++) w.data[i] = 0x3c00 + Math.floor(r() * 0x300) + (r() < 0.5 ? 0x8000 : 0);
      else if (w.dtype === 'fp8') {
        for (let i = 0; i < w.data.length; i++) { const q = Math.floor(r() * 0x7e); w.data[i] = q | (r() < 0.5 ? 0x80 : 0); }
        for (let i = 0; i < w.scaleInv.length; i++) w.scaleInv[i] = 0.001 * (1 + i);
      }
      const x = randn(r, M * K);
      let y: Float32Array = new Float32Array(0);
      const calls = countDispatches(ops, () => { y = ops.groupedMatmul(x, M, w, { start, count }); });
      assert.deepEqual(calls.map((c) => c.name), ['kernels.gemmGroupedParts']);
      assert.equal(calls[0]!.busy, 2);
      // Against one reference matmul per group (f64 sums).
      const ax = x.map(Math.abs);
      for (let g = 0; g < G; g++) {
        const rows = (v: Float32Array) => v.subarray(start[g]! * K, (start[g]! + count[g]!) * K);
        const want = refMatmul(rows(x), count[g]!, groupSlice(w, g));
        const mag = refMatmul(rows(ax), count[g]!, absWeight(groupSlice(w, g)));
        assertWithin(`group ${g}`, y.subarray(start[g]! * N, (start[g]! + count[g]!) * N), want, mag);
      }
    });
  }

  it('DeepGEMM grouped (masked, weight-only FP8): one gemmGroupedParts dispatch with both threads busy, equal to the ref', () => {
    const r = mulberry32(32);
    const b = gemm.allocGroupedFp8(G, N, K);
    for (let i = 0; i < b.data.length; i++) b.data[i] = Math.floor(r() * 0x7e) | (r() < 0.5 ? 0x80 : 0);
    for (let i = 0; i < b.scales.length; i++) b.scales[i] = 0.002 * (1 + i);
    const mMax = 8;
    const x = randn(r, G * mMax * K);
    let y: Float32Array = new Float32Array(0);
    const calls = countDispatches(gemm, () => { y = gemm.mGroupedFp8WeightGemmNtMasked(x, b, count, mMax); });
    assert.deepEqual(calls.map((c) => c.name), ['kernels.gemmGroupedParts']);
    assert.equal(calls[0]!.busy, 2);
    const want = refDeepGemm.mGroupedFp8WeightGemmNtMasked(x, b, count, mMax);
    const mag = refDeepGemm.mGroupedFp8WeightGemmNtMasked(x.map(Math.abs), { ...b, data: b.data.map((v) => v & 0x7f) }, count, mMax);
    assertWithin('masked', y, want, mag);
  });
});
