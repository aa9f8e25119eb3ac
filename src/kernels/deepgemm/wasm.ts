// DeepGEMM port on WebAssembly SIMD + threads (the `wasm` backend's runtime and kernels).
// Reference: https://github.com/deepseek-ai/DeepGEMM
// FP8 x FP8: A is decoded once per call into f32 (exact values; for the GEMV path values·2^118, see
// ../wasm/assembly/gemm.ts), B stays FP8 and is decoded in registers: the GEMV kernel (runs of fewer
// than 12 rows, one GEMV per row) sums in the ref's 'lanes16' order, the packed GEMM (12 rows or more) in
// 'sequential' order, each 128-K partial promoted with fround(sA·sB) exactly as ref.ts does, so results
// are bit-identical to ref with that order.
// Grouped variants run every run of rows (a segment sharing a group) in ONE grouped kernel call, one
// thread-pool dispatch per product (../wasm/grouped.ts).
// Weights created with allocFp8Matrix / allocGroupedFp8 / allocGroupedBf16 live in wasm memory; others
// are copied in per call.
import { KIND_BF16, KIND_FP8, KIND_FP8_FP8, gemmPathIsGemv, type GemmKind } from '../wasm/matmul.ts';
import { copyRunRows, runGroupedGemm, type GroupRun } from '../wasm/grouped.ts';
import { WasmRuntime } from '../wasm/runtime.ts';
import {
  BLOCK, ceilDiv, checkFp8Matrix, checkGrouped, checkMasked, checkMIndices, DeepGemmShapeError, outBuffer,
  type DeepGemm1d1dOps, type DeepGemmOps, type Fp8Matrix, type GroupedBf16Weights, type GroupedFp8Weights,
} from './types.ts';

type Typed = Float32Array | Uint16Array | Uint8Array;

function runsContiguous(mIndices: Int32Array): GroupRun[] {
  const runs: GroupRun[] = [];
  for (let r = 0; r < mIndices.length;) {
    const g = mIndices[r]!;
    let e = r + 1;
    while (e < mIndices.length && mIndices[e] === g) e++;
    if (g >= 0) runs.push({ r0: r, len: e - r, g });
    r = e;
  }
  return runs;
}

function runsMasked(maskedM: Int32Array, mMax: number): GroupRun[] {
  const runs: GroupRun[] = [];
  maskedM.forEach((c, g) => { if (c > 0) runs.push({ r0: g * mMax, len: c, g }); });
  return runs;
}

export class WasmDeepGemm implements DeepGemmOps, DeepGemm1d1dOps {
  private readonly blocks: number[] = [];
  constructor(readonly runtime: WasmRuntime, private readonly ownsRuntime = false) {}

  /** Creates its own runtime (pool of `threads`); or pass a wasm backend's runtime to share its memory. */
  static async create(threads: number): Promise<WasmDeepGemm> {
    return new WasmDeepGemm(await WasmRuntime.create({ threads }), true);
  }

  // ------------------------------------------------------------------------- allocation helpers

  /** An FP8 matrix whose data and scales live in wasm memory (zeroed). */
  allocFp8Matrix(rows: number, cols: number, scaleBlock: '1x128' | '128x128'): Fp8Matrix {
    const h = this.runtime.heap;
    const s = (scaleBlock === '1x128' ? rows : ceilDiv(rows, BLOCK)) * ceilDiv(cols, BLOCK);
    return { rows, cols, scaleBlock, data: h.u8(h.allocZeroed(rows * cols), rows * cols), scales: h.f32(h.allocZeroed(s * 4), s) };
  }

  allocGroupedFp8(groups: number, n: number, k: number): GroupedFp8Weights {
    const h = this.runtime.heap;
    const s = groups * ceilDiv(n, BLOCK) * ceilDiv(k, BLOCK);
    return { groups, n, k, data: h.u8(h.allocZeroed(groups * n * k), groups * n * k), scales: h.f32(h.allocZeroed(s * 4), s) };
  }

  allocGroupedBf16(groups: number, n: number, k: number): GroupedBf16Weights {
    const h = this.runtime.heap;
    return { groups, n, k, data: h.u16(h.allocZeroed(groups * n * k * 2), groups * n * k) };
  }

  // ----------------------------------------------------------------------------- staging

  private input(src: Typed): number {
    const h = this.runtime.heap;
    if (h.owns(src)) return src.byteOffset;
    const p = this.temp(src.byteLength);
    h.u8(p, src.byteLength).set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
    return p;
  }

  private temp(bytes: number): number {
    const p = this.runtime.heap.alloc(bytes);
    this.blocks.push(p);
    return p;
  }

  private releaseTemps(): void {
    for (const p of this.blocks) this.runtime.heap.free(p);
    this.blocks.length = 0;
  }

  /**
   * Decodes A's FP8 codes (at aData, [rows, k]) into one f32 buffer, each run's rows in the
   * representation its path expects (GEMV: values·2^118, GEMM: exact values); other rows stay unset.
   */
  private decodeRuns(aData: number, rows: number, k: number, runs: readonly GroupRun[]): number {
    const p = this.temp(rows * k * 4);
    const dec = this.runtime.pool.exports('kernels').decodeFp8!;
    for (const r of runs) dec(aData + r.r0 * k, p + r.r0 * k * 4, r.len * k, gemmPathIsGemv(r.len) ? 1 : 0);
    return p;
  }

  // ----------------------------------------------------------------------------- FP8 x FP8

  fp8GemmNt(a: Fp8Matrix, b: Fp8Matrix, out?: Float32Array): Float32Array {
    const op = 'fp8GemmNt';
    checkFp8Matrix(op, 'a', a, '1x128');
    checkFp8Matrix(op, 'b', b, '128x128');
    if (a.cols !== b.cols) throw new DeepGemmShapeError(op, `a has k=${a.cols}, b has k=${b.cols}`);
    const m = a.rows, n = b.rows, k = a.cols;
    const o = outBuffer(op, out, m * n);
    if (m === 0 || n === 0) return o;
    try {
      const y = this.temp(m * n * 4);
      const runs: GroupRun[] = [{ r0: 0, len: m, g: 0 }];
      runGroupedGemm(this.runtime, {
        kind: KIND_FP8_FP8, x: this.decodeRuns(this.input(a.data), m, k, runs), m, k, w: this.input(b.data),
        scales: this.input(b.scales), aScales: this.input(a.scales), y, n, runs,
      });
      o.set(this.runtime.heap.f32(y, m * n));
      return o;
    } finally {
      this.releaseTemps();
    }
  }

  /**
   * 1D1D (both operands 1x128 along K; see DeepGemm1d1dOps). The wasm kernels read B's scales per 128-row
   * block, so this runs the existing FP8 x FP8 kernel once per 128-wide K block on that block's codes with
   * unit scales (its promotion fround(fround(1·1)·partial) returns the block's f32 partial unchanged) and
   * promotes here exactly as ref.ts does: acc = fround(acc + fround(fround(sA·sB)·partial)). Bit-identical
   * to ref.fp8GemmNt1d1d in the order of the path fp8GemmNt takes for m rows ('lanes16' below 12 rows,
   * else 'sequential'). Extra cost over one kernel call: a copy of both operands' codes and an
   * m·n·ceil(k/128) promotion pass in JS (the kernel does m·n·k multiply-adds).
   */
  fp8GemmNt1d1d(a: Fp8Matrix, b: Fp8Matrix, out?: Float32Array): Float32Array {
    const op = 'fp8GemmNt1d1d';
    checkFp8Matrix(op, 'a', a, '1x128');
    checkFp8Matrix(op, 'b', b, '1x128');
    if (a.cols !== b.cols) throw new DeepGemmShapeError(op, `a has k=${a.cols}, b has k=${b.cols}`);
    const m = a.rows, n = b.rows, k = a.cols, kb = ceilDiv(k, BLOCK);
    const o = outBuffer(op, out, m * n);
    o.fill(0);
    if (m === 0 || n === 0 || k === 0) return o;
    const partial = new Float32Array(m * n);
    const aOnes = new Float32Array(m).fill(1), bOnes = new Float32Array(ceilDiv(n, BLOCK)).fill(1);
    for (let blk = 0; blk < kb; blk++) {
      const c0 = blk * BLOCK, len = Math.min(k, c0 + BLOCK) - c0;
      const slice = (x: Fp8Matrix): Uint8Array => {
        const d = new Uint8Array(x.rows * len);
        for (let r = 0; r < x.rows; r++) d.set(x.data.subarray(r * k + c0, r * k + c0 + len), r * len);
        return d;
      };
      this.fp8GemmNt(
        { rows: m, cols: len, data: slice(a), scales: aOnes, scaleBlock: '1x128' },
        { rows: n, cols: len, data: slice(b), scales: bOnes, scaleBlock: '128x128' }, partial);
      for (let i = 0; i < m; i++) {
        const sa = a.scales[i * kb + blk]!, row = i * n;
        for (let j = 0; j < n; j++) {
          // o is f32: storing the double sum of two f32 values rounds it exactly as fround would.
          o[row + j] = o[row + j]! + Math.fround(Math.fround(sa * b.scales[j * kb + blk]!) * partial[row + j]!);
        }
      }
    }
    return o;
  }

  private groupedFp8(a: Fp8Matrix, b: GroupedFp8Weights, runs: GroupRun[], out: Float32Array, copyRows: (y: Float32Array) => void): Float32Array {
    const { n, k } = b;
    try {
      const y = this.temp(a.rows * n * 4);
      this.runtime.heap.f32(y, a.rows * n).fill(0);
      runGroupedGemm(this.runtime, {
        kind: KIND_FP8_FP8, x: this.decodeRuns(this.input(a.data), a.rows, k, runs), m: a.rows, k, w: this.input(b.data),
        scales: this.input(b.scales), aScales: this.input(a.scales), y, n, runs,
      });
      copyRows(this.runtime.heap.f32(y, a.rows * n));
      return out;
    } finally {
      this.releaseTemps();
    }
  }

  mGroupedFp8GemmNtContiguous(a: Fp8Matrix, b: GroupedFp8Weights, mIndices: Int32Array, out?: Float32Array): Float32Array {
    const op = 'mGroupedFp8GemmNtContiguous';
    checkFp8Matrix(op, 'a', a, '1x128');
    checkGrouped(op, b, a.cols);
    checkMIndices(op, mIndices, a.rows, b.groups);
    const o = outBuffer(op, out, a.rows * b.n);
    if (a.rows === 0 || b.n === 0) return o;
    return this.groupedFp8(a, b, runsContiguous(mIndices), o, (y) => o.set(y));
  }

  mGroupedFp8GemmNtMasked(a: Fp8Matrix, b: GroupedFp8Weights, maskedM: Int32Array, mMax: number, out?: Float32Array): Float32Array {
    const op = 'mGroupedFp8GemmNtMasked';
    checkFp8Matrix(op, 'a', a, '1x128');
    checkGrouped(op, b, a.cols);
    checkMasked(op, maskedM, mMax, b.groups, a.rows);
    const o = outBuffer(op, out, a.rows * b.n);
    if (a.rows === 0 || b.n === 0) return o;
    const runs = runsMasked(maskedM, mMax);
    return this.groupedFp8(a, b, runs, o, (y) => copyRunRows(o, y, runs, b.n));
  }

  // ------------------------------------------------------------------ weight-only FP8 and bf16

  private dense(op: string, kind: GemmKind, x: Float32Array, m: number, b: GroupedFp8Weights | GroupedBf16Weights,
    runs: GroupRun[], out: Float32Array, copyAll: boolean): Float32Array {
    const { n, k } = b;
    if (x.length !== m * k) throw new DeepGemmShapeError(op, `x has ${x.length} values, want ${m}*${k}`);
    if (m === 0 || n === 0) return out;
    try {
      const y = this.temp(m * n * 4);
      this.runtime.heap.f32(y, m * n).fill(0);
      runGroupedGemm(this.runtime, {
        kind, x: this.input(x), m, k, w: this.input(b.data), scales: 'scales' in b ? this.input(b.scales) : 0, aScales: 0, y, n, runs,
      });
      const yv = this.runtime.heap.f32(y, m * n);
      if (copyAll) out.set(yv);
      else copyRunRows(out, yv, runs, n);
      return out;
    } finally {
      this.releaseTemps();
    }
  }

  mGroupedFp8WeightGemmNtContiguous(x: Float32Array, m: number, b: GroupedFp8Weights, mIndices: Int32Array, out?: Float32Array): Float32Array {
    const op = 'mGroupedFp8WeightGemmNtContiguous';
    checkGrouped(op, b, b.k);
    checkMIndices(op, mIndices, m, b.groups);
    return this.dense(op, KIND_FP8, x, m, b, runsContiguous(mIndices), outBuffer(op, out, m * b.n), true);
  }

  mGroupedFp8WeightGemmNtMasked(x: Float32Array, b: GroupedFp8Weights, maskedM: Int32Array, mMax: number, out?: Float32Array): Float32Array {
    const op = 'mGroupedFp8WeightGemmNtMasked';
    checkGrouped(op, b, b.k);
    checkMasked(op, maskedM, mMax, b.groups, b.groups * mMax);
    return this.dense(op, KIND_FP8, x, b.groups * mMax, b, runsMasked(maskedM, mMax), outBuffer(op, out, b.groups * mMax * b.n), false);
  }

  mGroupedBf16GemmNtContiguous(x: Float32Array, m: number, b: GroupedBf16Weights, mIndices: Int32Array, out?: Float32Array): Float32Array {
    const op = 'mGroupedBf16GemmNtContiguous';
    checkGrouped(op, b, b.k);
    checkMIndices(op, mIndices, m, b.groups);
    return this.dense(op, KIND_BF16, x, m, b, runsContiguous(mIndices), outBuffer(op, out, m * b.n), true);
  }

  mGroupedBf16GemmNtMasked(x: Float32Array, b: GroupedBf16Weights, maskedM: Int32Array, mMax: number, out?: Float32Array): Float32Array {
    const op = 'mGroupedBf16GemmNtMasked';
    checkGrouped(op, b, b.k);
    checkMasked(op, maskedM, mMax, b.groups, b.groups * mMax);
    return this.dense(op, KIND_BF16, x, b.groups * mMax, b, runsMasked(maskedM, mMax), outBuffer(op, out, b.groups * mMax * b.n), false);
  }

  async dispose(): Promise<void> {
    if (this.ownsRuntime) await this.runtime.dispose();
  }
}
