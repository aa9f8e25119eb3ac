// Test support for every FlashMLA backend (imported by *.test.ts only): FlashMLA's conformance matrix
// scaled to a CPU, case builders (paged cache with NaN-poisoned unused slots, permuted block tables,
// invalid ids in unused entries, zero-length sequences), a dense float64 SDPA oracle that shares no
// code with the kernels, and kernelkit's `check_is_allclose`.
// Reference: https://github.com/deepseek-ai/FlashMLA/blob/main/tests/test_flash_mla_dense_decoding.py
// (data generation, matrix) and kernelkit compare.py (check_is_allclose).
import { bf16ToF32, f32ToBf16 } from '../../tensor/dtypes.ts';
import { allocCacheLayer, poisonRow, readRow, writeRow } from './kv-format.ts';
import { getMlaMetadata } from './metadata.ts';
import { INVALID_BLOCK_ID, MLA_BLOCK_SIZE, V3_D_QK, V3_D_V, type FlashMlaArgs, type KvCacheDType, type KvCacheLayer } from './types.ts';

/** Deterministic PRNG (mulberry32) with a Box-Muller normal. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  normal(): number {
    const u = Math.max(this.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  }
}

export interface MlaCase {
  b: number;
  sQ: number;
  sK: number;
  hQ: number;
  hKv: number;
  varlen: boolean;
  causal: boolean;
}

/** FlashMLA's current test axes, scaled to a CPU (upstream also has hQ 9/63/126 and hKv 3/8). */
export const AXES = {
  b: [1, 2, 6, 64],
  sQ: [1, 2, 4],
  sK: [20, 140, 4096],
  hQ: [1, 3, 16, 64, 128],
  hKv: [1, 2],
  varlen: [false, true],
  causal: [false, true],
} as const;
type Axis = keyof typeof AXES;
const AXIS_NAMES = Object.keys(AXES) as Axis[];

/** Query-row × key pairs a case computes: its cost in units of (dQK + dV) multiply-adds. */
export function caseCost(c: MlaCase): number {
  return c.b * c.sQ * c.hQ * c.sK;
}

/**
 * A covering subset of the full cartesian product (1440 cases): every pair of values of every two axes
 * appears in some case (so every value of every axis too). Greedy and deterministic: repeatedly take the
 * case that covers the most uncovered pairs per unit of cost (cost + a fixed per-case overhead).
 */
export function coveringCases(overhead = 30_000): MlaCase[] {
  const all: MlaCase[] = [];
  for (const b of AXES.b) for (const sQ of AXES.sQ) for (const sK of AXES.sK) for (const hQ of AXES.hQ)
    for (const hKv of AXES.hKv) for (const varlen of AXES.varlen) for (const causal of AXES.causal) {
      if (hQ % hKv !== 0) continue; // hQ must be a multiple of hKv
      all.push({ b, sQ, sK, hQ, hKv, varlen, causal });
    }
  const key = (i: number, vi: unknown, j: number, vj: unknown) => `${i}=${String(vi)}|${j}=${String(vj)}`;
  const pairsOf = (c: MlaCase): string[] => {
    const out: string[] = [];
    for (let i = 0; i < AXIS_NAMES.length; i++) for (let j = i + 1; j < AXIS_NAMES.length; j++) {
      out.push(key(i, c[AXIS_NAMES[i]!], j, c[AXIS_NAMES[j]!]));
    }
    return out;
  };
  const needed = new Set<string>();
  for (const c of all) for (const p of pairsOf(c)) needed.add(p);
  const chosen: MlaCase[] = [];
  while (needed.size > 0) {
    let best = -1;
    let bestScore = 0;
    for (let k = 0; k < all.length; k++) {
      const gain = pairsOf(all[k]!).filter((p) => needed.has(p)).length;
      const score = gain / (caseCost(all[k]!) + overhead);
      if (gain > 0 && score > bestScore) {
        bestScore = score;
        best = k;
      }
    }
    const c = all[best]!;
    for (const p of pairsOf(c)) needed.delete(p);
    chosen.push(c);
  }
  return chosen;
}

/** Every pair of values of every two axes the cases cover, and all pairs that exist (for the coverage test). */
export function pairCoverage(cases: MlaCase[]): { covered: number; total: number } {
  let covered = 0;
  let total = 0;
  for (let i = 0; i < AXIS_NAMES.length; i++) for (let j = i + 1; j < AXIS_NAMES.length; j++) {
    for (const vi of AXES[AXIS_NAMES[i]!]) for (const vj of AXES[AXIS_NAMES[j]!]) {
      const ok = (c: MlaCase) => c[AXIS_NAMES[i]!] === vi && c[AXIS_NAMES[j]!] === vj;
      const possible = !(AXIS_NAMES[i] === 'hQ' && AXIS_NAMES[j] === 'hKv' && (vi as number) % (vj as number) !== 0);
      if (!possible) continue;
      total++;
      if (cases.some(ok)) covered++;
    }
  }
  return { covered, total };
}

export interface BuiltCase {
  args: FlashMlaArgs;
  /**
   * Request i's K values as the kernel will see them (bf16-rounded / fp8-dequantized), regenerated on
   * demand so big cases need no dense copy: [len·hKv·dQK].
   */
  keys(i: number): Float32Array;
  /** Request i's K values before quantization (differs from keys() for bf16/fp8 only). */
  rawKeys(i: number): Float32Array;
}

export interface BuildOptions {
  dtype?: KvCacheDType;
  dQK?: number;
  dV?: number;
  numParts?: number;
  softmaxScale?: number;
  /** Force these lengths instead of drawing them. */
  seqlens?: number[];
  seed: number;
}

/**
 * FlashMLA's data is randn/10 clamped to [−1, 1]; a uniform of the same spread (std 0.1) is used here
 * because the big cases draw 10^8 values and a normal costs several generator calls per value.
 */
function sample(rng: Rng): number {
  return (2 * rng.next() - 1) * 0.17320508075688773;
}

/**
 * Builds one case like FlashMLA's tests: q, K with std 0.1 (see sample); varlen lengths ~ N(sK, sK/2)
 * clamped to [0, 2·sK] with one request forced to length 0 when b ≥ 3; blocks handed out in a random
 * permutation with spare blocks; unused block-table entries INVALID_BLOCK_ID; every unused cache slot NaN.
 */
export function buildCase(c: MlaCase, o: BuildOptions): BuiltCase {
  const rng = new Rng(o.seed);
  const dQK = o.dQK ?? V3_D_QK;
  const dV = o.dV ?? V3_D_V;
  const dtype = o.dtype ?? 'f32';
  const { b, sQ, hQ, hKv } = c;
  const lens = o.seqlens ? [...o.seqlens] : Array.from({ length: b }, () =>
    c.varlen ? Math.max(0, Math.min(2 * c.sK, Math.round(c.sK + (rng.normal() * c.sK) / 2))) : c.sK);
  if (!o.seqlens && c.varlen && b >= 3) lens[rng.int(b)] = 0;
  const nbs = lens.map((l) => Math.ceil(l / MLA_BLOCK_SIZE));
  const used = nbs.reduce((x, y) => x + y, 0);
  const numBlocks = used + 3;
  const maxBlocks = Math.max(...nbs) + 1;
  const perm = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const blockTable = new Int32Array(b * maxBlocks).fill(INVALID_BLOCK_ID);
  let next = 0;
  for (let i = 0; i < b; i++) for (let j = 0; j < nbs[i]!; j++) blockTable[i * maxBlocks + j] = perm[next++]!;
  const cache: KvCacheLayer = allocCacheLayer(dtype, numBlocks, hKv, dQK, 64);
  for (let blk = 0; blk < numBlocks; blk++) for (let s = 0; s < MLA_BLOCK_SIZE; s++) for (let h = 0; h < hKv; h++) poisonRow(cache, blk, s, h);
  // Request i's rows come from their own generator, so they can be regenerated for the oracle.
  const rawKeys = (i: number): Float32Array => {
    // xorshift32 inline (the big cases draw ~10^8 values): uniform in ±0.1732, std 0.1.
    let x = (Math.imul(o.seed + 1, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca6b) ^ 0x2545f491) | 1;
    const k = new Float32Array(lens[i]! * hKv * dQK);
    for (let e = 0; e < k.length; e++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      k[e] = ((x >>> 0) * 2.3283064365386963e-10 * 2 - 1) * 0.17320508075688773;
    }
    return k;
  };
  const fp8Keys: Float32Array[] = [];
  const back = new Float32Array(dQK);
  for (let i = 0; i < b; i++) {
    const raw = rawKeys(i);
    const deq = dtype === 'fp8' ? new Float32Array(raw.length) : null;
    for (let t = 0; t < lens[i]!; t++) for (let h = 0; h < hKv; h++) {
      const blk = blockTable[i * maxBlocks + Math.floor(t / MLA_BLOCK_SIZE)]!;
      const off = (t * hKv + h) * dQK;
      writeRow(cache, blk, t % MLA_BLOCK_SIZE, h, raw, off);
      if (deq) {
        readRow(cache, blk, t % MLA_BLOCK_SIZE, h, back);
        deq.set(back, off);
      }
    }
    if (deq) fp8Keys.push(deq);
  }
  const keys = (i: number): Float32Array => {
    if (dtype === 'fp8') return fp8Keys[i]!;
    const k = rawKeys(i);
    if (dtype === 'bf16') for (let e = 0; e < k.length; e++) k[e] = bf16ToF32(f32ToBf16(k[e]!));
    return k;
  };
  const qf = new Float32Array(b * sQ * hQ * dQK);
  for (let i = 0; i < qf.length; i++) qf[i] = dtype === 'bf16' ? bf16ToF32(f32ToBf16(sample(rng))) : sample(rng);
  const cacheSeqlens = Int32Array.from(lens);
  const numParts = o.numParts ?? 4;
  const meta = getMlaMetadata(cacheSeqlens, (sQ * hQ) / hKv, hKv, numParts);
  return {
    args: {
      q: qf, batch: b, seqLenQ: sQ, numHeadsQ: hQ, kCache: cache, blockTable, cacheSeqlens, dV, meta,
      softmaxScale: o.softmaxScale ?? 1 / Math.sqrt(dQK), causal: c.causal,
    },
    keys, rawKeys,
  };
}

/**
 * Dense scaled-dot-product attention in float64 over the given K values (independent of the kernels):
 * out [b, sQ, hQ, dV], lse [b, hQ, sQ]; query s of a causal case sees keys 0 .. len−sQ+s; no keys →
 * out 0, lse +inf.
 */
export function denseSdpaF64(
  q: ArrayLike<number>, keys: (i: number) => ArrayLike<number>, lens: ArrayLike<number>, dims: { b: number; sQ: number; hQ: number; hKv: number; dQK: number; dV: number },
  scale: number, causal: boolean,
): { out: Float64Array; lse: Float64Array } {
  const { b, sQ, hQ, hKv, dQK, dV } = dims;
  const g = hQ / hKv;
  const out = new Float64Array(b * sQ * hQ * dV);
  const lse = new Float64Array(b * hQ * sQ);
  for (let i = 0; i < b; i++) {
    const len = lens[i]!;
    const K = keys(i);
    const scores = new Float64Array(len);
    for (let s = 0; s < sQ; s++) for (let h = 0; h < hQ; h++) {
      const kvh = Math.floor(h / g);
      const visible = causal && sQ > 1 ? Math.max(0, Math.min(len, len - sQ + 1 + s)) : len;
      const qo = ((i * sQ + s) * hQ + h) * dQK;
      const oo = ((i * sQ + s) * hQ + h) * dV;
      if (visible === 0) {
        lse[(i * hQ + h) * sQ + s] = Infinity;
        continue;
      }
      let m = -Infinity;
      for (let t = 0; t < visible; t++) {
        let dot = 0;
        const ko = (t * hKv + kvh) * dQK;
        for (let e = 0; e < dQK; e++) dot += q[qo + e]! * K[ko + e]!;
        scores[t] = dot * scale;
        m = Math.max(m, scores[t]!);
      }
      let sum = 0;
      for (let t = 0; t < visible; t++) {
        const p = Math.exp(scores[t]! - m);
        sum += p;
        const ko = (t * hKv + kvh) * dQK;
        for (let e = 0; e < dV; e++) out[oo + e] += p * K[ko + e]!;
      }
      for (let e = 0; e < dV; e++) out[oo + e] /= sum;
      lse[(i * hQ + h) * sQ + s] = Math.log(sum) + m;
    }
  }
  return { out, lse };
}

export interface AllcloseReport {
  ok: boolean;
  message: string;
  maxAbs: number;
  cosDiff: number;
}

/**
 * kernelkit's check_is_allclose: inf/NaN positions (and inf signs) must match exactly; every finite
 * element passes if |x−y| < absTol or |x−y|/(|y|+1e-6) < relTol; and |1 − 2Σxy/Σ(x²+y²)| ≤ cosTol
 * over the finite elements (float64).
 */
export function checkIsAllclose(name: string, x: ArrayLike<number>, y: ArrayLike<number>, absTol: number, relTol: number, cosTol: number): AllcloseReport {
  if (x.length !== y.length) return { ok: false, message: `${name}: length ${x.length} vs ${y.length}`, maxAbs: NaN, cosDiff: NaN };
  let xy = 0;
  let xx = 0;
  let maxAbs = 0;
  let bad = -1;
  for (let i = 0; i < x.length; i++) {
    const a = x[i]!;
    const r = y[i]!;
    if (!Number.isFinite(a) || !Number.isFinite(r)) {
      if (!(Object.is(a, r) || (Number.isNaN(a) && Number.isNaN(r)))) {
        return { ok: false, message: `${name}[${i}]: got ${a}, expected ${r} (non-finite positions differ)`, maxAbs: NaN, cosDiff: NaN };
      }
      continue;
    }
    const d = Math.abs(a - r);
    maxAbs = Math.max(maxAbs, d);
    if (!(d < absTol || d / (Math.abs(r) + 1e-6) < relTol) && bad < 0) bad = i;
    xy += a * r;
    xx += a * a + r * r;
  }
  const cosDiff = xx === 0 ? 0 : 1 - (2 * xy) / xx;
  if (bad >= 0) {
    return { ok: false, message: `${name}[${bad}]: got ${x[bad]}, expected ${y[bad]} (abs ${Math.abs(x[bad]! - y[bad]!)} ≥ ${absTol}, rel ≥ ${relTol})`, maxAbs, cosDiff };
  }
  if (Math.abs(cosDiff) > cosTol) return { ok: false, message: `${name}: cos_diff ${cosDiff} > ${cosTol}`, maxAbs, cosDiff };
  return { ok: true, message: `${name}: max abs ${maxAbs.toExponential(2)}, cos_diff ${cosDiff.toExponential(2)}`, maxAbs, cosDiff };
}

/** FlashMLA's tolerances for the dense decode kernel. */
export const TOL = {
  out: { abs: 8e-4, rel: 2.01 / 128, cos: 5e-6 },
  lse: { abs: 1e-6, rel: 8.01 / 65536, cos: 5e-6 },
} as const;

// ---------------------------------------------------------------- the conformance suite

/** Scales cycled over the cases: 576^-0.5 (kernel default), DeepSeek-V3's 192^-0.5·mscale², and a peaky 1.0. */
export const TEST_SCALES = [1 / Math.sqrt(576), 192 ** -0.5 * (0.1 * Math.log(40) + 1) ** 2, 1.0] as const;
/** Part counts cycled over the cases: unsplit, a few splits, many splits. */
export const TEST_PARTS = [1, 3, 8, 17] as const;

export interface PreparedCase {
  name: string;
  built: BuiltCase;
  expected: { out: Float64Array; lse: Float64Array };
}

/** Builds case `index` of `cases` (seed = index + 1) and its float64 oracle. */
export function prepareCase(c: MlaCase, index: number, dtype: KvCacheDType = 'f32', useRawKeys = false): PreparedCase {
  const numParts = TEST_PARTS[index % TEST_PARTS.length]!;
  const softmaxScale = TEST_SCALES[index % TEST_SCALES.length]!;
  const built = buildCase(c, { seed: index + 1, numParts, softmaxScale, dtype });
  const a = built.args;
  const expected = denseSdpaF64(a.q, useRawKeys ? built.rawKeys : built.keys, a.cacheSeqlens,
    { b: c.b, sQ: c.sQ, hQ: c.hQ, hKv: c.hKv, dQK: a.kCache.headDim, dV: a.dV }, softmaxScale, c.causal);
  const name = `b${c.b} sQ${c.sQ} sK${c.sK} hQ${c.hQ} hKv${c.hKv}${c.varlen ? ' varlen' : ''}${c.causal ? ' causal' : ''} parts${numParts} ${dtype}`;
  return { name, built, expected };
}

/** Checks a kernel result against a prepared case with FlashMLA's tolerances; throws with details. */
export function assertMatches(p: PreparedCase, got: { out: Float32Array; lse: Float32Array }): void {
  const o = checkIsAllclose(`${p.name} out`, got.out, p.expected.out, TOL.out.abs, TOL.out.rel, TOL.out.cos);
  const l = checkIsAllclose(`${p.name} lse`, got.lse, p.expected.lse, TOL.lse.abs, TOL.lse.rel, TOL.lse.cos);
  if (!o.ok) throw new Error(o.message);
  if (!l.ok) throw new Error(l.message);
}

/**
 * A case for FlashMlaArgs.qkBegin shaped like the model's decompressed MLA prefill: rows [v | k_nope | k_pe]
 * (dQK 320, dV 128, qkBegin 128), one request per head (b 3, hQ = hKv = 1), a causal 70-token prefill (more
 * rows than the wasm kernel's 64-row tile, so 2 threads split rows). q's first 128 values of every row are
 * NaN: they must take no part. Oracle: dense float64 SDPA with those values 0 (then q·K over all 320
 * columns is the score over the last 192).
 */
export function qkBeginCase(seed: number): PreparedCase {
  const c: MlaCase = { b: 3, sQ: 70, sK: 70, hQ: 1, hKv: 1, varlen: false, causal: true };
  const dQK = 320, dV = 128, qkBegin = 128;
  const built = buildCase(c, { seed, numParts: 2, dQK, dV, seqlens: [70, 70, 70], softmaxScale: 192 ** -0.5 });
  const zeroed = built.args.q.slice(), poisoned = built.args.q.slice();
  for (let i = 0; i < zeroed.length; i += dQK) {
    zeroed.fill(0, i, i + qkBegin);
    poisoned.fill(NaN, i, i + qkBegin);
  }
  const expected = denseSdpaF64(zeroed, built.keys, built.args.cacheSeqlens, { b: 3, sQ: 70, hQ: 1, hKv: 1, dQK, dV }, built.args.softmaxScale, true);
  return { name: 'qkBegin 128 (dQK 320, dV 128, q[:128] NaN)', built: { ...built, args: { ...built.args, q: poisoned, qkBegin } }, expected };
}
