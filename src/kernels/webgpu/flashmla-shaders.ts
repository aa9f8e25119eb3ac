// WGSL for FlashMLA (see flashmla.ts): the split-KV main kernel and the LSE combine.
//
// Main kernel: one workgroup of 128 invocations per (work item, kv head, tile of R folded query rows).
// A work item is a (request, block range) of the scheduler (getMlaMetadata). The workgroup keeps its R
// query rows in workgroup memory and walks the range one 64-key cache block at a time, online softmax:
//   A  scores: invocation (key j = lid % 64, row parity lid / 64) dots its key against its rows' q;
//      keys past a row's causal limit get the MASKED score;
//   B  per row (invocation r < R): new max, rescale factor α = e^(m_old − m_new), p_j = e^(s_j − m_new),
//      l = α·l + Σp;
//   C  invocation t owns output dims t, t+128, ...: o[r] = α_r·o[r] + Σ_j p_rj·V_j[d].
// The cache binding may be one part of the cache (blocks [blo, bhi), flashmla.ts): blocks outside it are
// skipped, and the parts' partial results are merged by the combine like splits.
// Keys at or past the sequence length are never loaded (NaN-poisoned slots and the block-table entries
// past ceil(len/64) are never touched); causally masked keys inside the sequence are finite and get p = 0.
// A row that saw no key ends with l = 0: O = 0 and lse = +inf (final) or −inf (a split's partial).
// Unsplit requests write out/lse directly; splits write partials that the combine kernel merges.
//
// WGSL has neither infinities in constant expressions nor defined inf arithmetic, so "no score" is the
// finite MASKED = −3e38 and tested explicitly; ±inf outputs come from uniforms set by the host.
import type { KvCacheDType } from '../flashmla/types.ts';
import { BF16_DECODE, FLAT_GROUP, FP8_E4M3_DECODE } from './wgsl.ts';

export const MLA_WG = 128;
/** Keys per chunk: the cache block. */
const CHUNK = 64;

export interface MlaVariant {
  dtype: KvCacheDType;
  /** dQK (compile-time: sizes the q tile in workgroup memory). */
  dQK: number;
  /** Output dims per invocation: ceil(dV / 128). */
  dpt: number;
  /** Query rows per workgroup. */
  rowsPerGroup: number;
}

/** Rows per workgroup that fit the q tile + scores in `storageBytes` of workgroup memory (≤ 8). */
export function mlaRowsPerGroup(dQK: number, storageBytes: number): number {
  let r = 8;
  while (r > 2 && (r * dQK + r * CHUNK + 4 * r + 8) * 4 > storageBytes) r >>= 1;
  return r;
}

export function mlaKey(v: MlaVariant): string {
  return `flashmla:main:${v.dtype}:qk${v.dQK}:dpt${v.dpt}:r${v.rowsPerGroup}`;
}

function kAtWgsl(dtype: KvCacheDType): string {
  if (dtype === 'f32') return 'fn kAt(row: u32, e: u32) -> f32 { return kc[row * p.dQK + e]; }';
  if (dtype === 'bf16') return `${BF16_DECODE}
fn kAt(row: u32, e: u32) -> f32 { let i = row * p.dQK + e; return bf16At(kc[i >> 1u], i); }`;
  // FP8 token layout (DeepSeek-V3.2, 656 B for 576 dims): nope e4m3 codes, nope/128 f32 scales, bf16 RoPE.
  return `${FP8_E4M3_DECODE}
${BF16_DECODE}
fn kAt(row: u32, e: u32) -> f32 {
  let base = row * p.strideW;
  if (e < p.nope) {
    let s = bitcast<f32>(kc[base + (p.nope >> 2u) + e / 128u]);
    return fp8e4m3(byteAt(kc[base + (e >> 2u)], e)) * s;
  }
  let hw = base * 2u + (p.nope + 4u * (p.nope / 128u)) / 2u + (e - p.nope);
  return bf16At(kc[hw >> 1u], hw);
}`;
}

const PARAMS = /* wgsl */ `
struct P {
  b: u32, sQ: u32, hQ: u32, hKv: u32,
  g: u32, rows: u32, dQK: u32, dV: u32,
  maxBlocks: u32, causal: u32, scale: f32, numItems: u32,
  tiles: u32, nope: u32, strideW: u32, qk0: u32,
  posInf: f32, negInf: f32, blo: u32, bhi: u32,
}`;

export function mlaMainWgsl(v: MlaVariant): string {
  const R = v.rowsPerGroup;
  if (R < 2 || R % 2 !== 0) throw new RangeError(`rowsPerGroup ${R} must be even`);
  const RH = R / 2;
  const QK = v.dQK;
  const DPT = v.dpt;
  // llvmpipe (and GPUs) keep scalars in registers but dynamically indexed private arrays in memory, so the
  // per-row accumulators are unrolled into named scalars: acc{i} (phase A), o{r}_{i} (phase C).
  const rep = (n: number, f: (i: number) => string, sep = '\n') => Array.from({ length: n }, (_, i) => f(i)).join(sep);
  const rd = (f: (r: number, i: number) => string, sep = '\n') => rep(R, (r) => rep(DPT, (i) => f(r, i), sep), sep);
  return /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<${v.dtype === 'f32' ? 'f32' : 'u32'}>;
@group(0) @binding(3) var<storage, read> blockTable: array<i32>;
@group(0) @binding(4) var<storage, read> seqlens: array<i32>;
@group(0) @binding(5) var<storage, read> items: array<vec4<i32>>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;
@group(0) @binding(8) var<storage, read_write> oAcc: array<f32>;
@group(0) @binding(9) var<storage, read_write> lseAcc: array<f32>;
${kAtWgsl(v.dtype)}
const R = ${R}u;
const QK = ${QK}u;
const WG = ${MLA_WG}u;
const MASKED = -3.0e38;
// q tile transposed, [QK, R]: the R values a key meets at dim e are adjacent.
var<workgroup> qs: array<f32, ${R * QK}>;
var<workgroup> sc: array<f32, ${R * CHUNK}>;
var<workgroup> mrow: array<f32, ${R}>;
var<workgroup> lrow: array<f32, ${R}>;
var<workgroup> arow: array<f32, ${R}>;
var<workgroup> lim: array<i32, ${R}>;
var<workgroup> span: vec4<i32>;
var<workgroup> blk: u32;

@compute @workgroup_size(${MLA_WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let flat = ${FLAT_GROUP};
  if (flat >= p.numItems * p.hKv * p.tiles) { return; }
  let tile = flat % p.tiles;
  let h = (flat / p.tiles) % p.hKv;
  let itIdx = flat / (p.tiles * p.hKv);
  if (lid.x == 0u) {
    let it = items[itIdx];
    let len = seqlens[it.x];
    // [request, first key, end key (exclusive, ≤ len), partial slot or −1]
    span = vec4<i32>(it.x, it.y * ${CHUNK}, min(it.z * ${CHUNK}, len), it.w);
  }
  let sp = workgroupUniformLoad(&span);
  let bi = u32(sp.x);
  let t0 = u32(sp.y);
  let t1 = u32(max(sp.z, sp.y));
  let slot = sp.w;
  let len = seqlens[bi];
  let r0 = tile * R;

  for (var idx = lid.x; idx < R * QK; idx += WG) {
    let r = idx / QK;
    let e = idx % QK;
    let row = r0 + r;
    var v = 0.0;
    if (row < p.rows && e >= p.qk0 && e < p.dQK) {
      v = q[((bi * p.sQ + row / p.g) * p.hQ + h * p.g + row % p.g) * p.dQK + e];
    }
    qs[e * R + r] = v;
  }
  if (lid.x < R) {
    let row = r0 + lid.x;
    mrow[lid.x] = MASKED;
    lrow[lid.x] = 0.0;
    var l = 0;
    if (row < p.rows) {
      l = len;
      if (p.causal != 0u) { l = min(len, len - i32(p.sQ) + 1 + i32(row / p.g)); }
    }
    lim[lid.x] = l;
  }
${rd((r, i) => `  var o${r}_${i} = 0.0;`)}
  // Output dims of this invocation: lid + WG·i (reads clamped to a valid dim, writes guarded).
${rep(DPT, (i) => `  let d${i} = min(lid.x + ${MLA_WG * i}u, p.dV - 1u);`)}
  workgroupBarrier();

  for (var cs = t0; cs < t1; cs += ${CHUNK}u) {
    if (lid.x == 0u) { blk = u32(blockTable[bi * p.maxBlocks + cs / ${CHUNK}u]); }
    let gblock = workgroupUniformLoad(&blk);
    // Only blocks [blo, bhi) are in the bound cache part (at block - blo); a block of another part counts
    // as no keys (nk = 0: α = 1, nothing added, so the row's state is unchanged exactly).
    let nk = select(0u, min(${CHUNK}u, t1 - cs), gblock >= p.blo && gblock < p.bhi);
    let block = gblock - p.blo;
    // A: score of key j for the rows of parity j2 (rows j2, j2+2, ...)
    let j = lid.x % ${CHUNK}u;
    let j2 = lid.x / ${CHUNK}u;
    if (j < nk && j2 < 2u) {
      let krow = (block * ${CHUNK}u + j) * p.hKv + h;
${rep(RH, (i) => `      var acc${i} = 0.0;`)}
      // Scores over dims [qk0, QK) (FlashMlaArgs.qkBegin; q's dims before it stay 0 in the tile).
      for (var e = p.qk0; e < QK; e++) {
        let kv = kAt(krow, e);
        let qb = e * R + j2;
${rep(RH, (i) => `        acc${i} += qs[qb + ${2 * i}u] * kv;`)}
      }
${rep(RH, (i) => `      sc[(j2 + ${2 * i}u) * ${CHUNK}u + j] = select(MASKED, acc${i} * p.scale, i32(cs + j) < lim[j2 + ${2 * i}u]);`)}
    }
    workgroupBarrier();
    // B: online softmax statistics, one invocation per row
    if (lid.x < R) {
      let r = lid.x;
      let mOld = mrow[r];
      var mx = mOld;
      for (var k = 0u; k < nk; k++) { mx = max(mx, sc[r * ${CHUNK}u + k]); }
      if (mx <= MASKED) {
        arow[r] = 1.0;
        for (var k = 0u; k < nk; k++) { sc[r * ${CHUNK}u + k] = 0.0; }
      } else {
        let alpha = select(exp(mOld - mx), 0.0, mOld <= MASKED);
        var sum = 0.0;
        for (var k = 0u; k < nk; k++) {
          let s = sc[r * ${CHUNK}u + k];
          let pk = select(exp(s - mx), 0.0, s <= MASKED);
          sc[r * ${CHUNK}u + k] = pk;
          sum += pk;
        }
        lrow[r] = lrow[r] * alpha + sum;
        mrow[r] = mx;
        arow[r] = alpha;
      }
    }
    workgroupBarrier();
    // C: rescale, then accumulate V = K[:, :dV] for the dims this invocation owns
${rep(R, (r) => `    let a${r} = arow[${r}u];\n${rep(DPT, (i) => `    o${r}_${i} *= a${r};`)}`)}
    for (var k = 0u; k < nk; k++) {
      let krow = (block * ${CHUNK}u + k) * p.hKv + h;
${rep(DPT, (i) => `      let v${i} = kAt(krow, d${i});`)}
${rep(R, (r) => `      let p${r} = sc[${r * CHUNK}u + k];\n${rep(DPT, (i) => `      o${r}_${i} += p${r} * v${i};`)}`)}
    }
    workgroupBarrier();
  }

${rep(R, (r) => `  writeRow(${r}u, r0 + ${r}u, array<f32, ${DPT}>(${rep(DPT, (i) => `o${r}_${i}`, ', ')}), lid.x, bi, h, slot);`)}
}

fn writeRow(r: u32, row: u32, o: array<f32, ${DPT}>, t: u32, bi: u32, h: u32, slot: i32) {
  if (row >= p.rows) { return; }
  let l = lrow[r];
  let empty = !(l > 0.0);
  let inv = select(1.0 / l, 0.0, empty);
  let qh = h * p.g + row % p.g;
  let sIdx = row / p.g;
  if (slot < 0) {
    let oo = ((bi * p.sQ + sIdx) * p.hQ + qh) * p.dV;
${rep(DPT, (i) => `    if (t + ${MLA_WG * i}u < p.dV) { out[oo + t + ${MLA_WG * i}u] = o[${i}] * inv; }`)}
    if (t == 0u) { lse[(bi * p.hQ + qh) * p.sQ + sIdx] = select(log(l) + mrow[r], p.posInf, empty); }
  } else {
    let base = (u32(slot) * p.hKv + h) * p.rows + row;
${rep(DPT, (i) => `    if (t + ${MLA_WG * i}u < p.dV) { oAcc[base * p.dV + t + ${MLA_WG * i}u] = o[${i}] * inv; }`)}
    if (t == 0u) { lseAcc[base] = select(log(l) + mrow[r], p.negInf, empty); }
  }
}
`;
}

/**
 * Combine (mla_combine.cu): one workgroup per (request, kv head, row) of requests with more than one
 * split: m = max lse_i, lse = ln Σ e^(lse_i − m) + m (+inf if no split saw a key), O = Σ e^(lse_i − lse)·O_i.
 * Splits with lse −inf (no keys for the row) are skipped explicitly.
 */
export function mlaCombineWgsl(): string {
  return /* wgsl */ `
${PARAMS}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> numSplits: array<i32>;
@group(0) @binding(2) var<storage, read> oAcc: array<f32>;
@group(0) @binding(3) var<storage, read> lseAcc: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
const WG = ${MLA_WG}u;
const NONE = -3.0e38;
@compute @workgroup_size(${MLA_WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let flat = ${FLAT_GROUP};
  if (flat >= p.b * p.hKv * p.rows) { return; }
  let row = flat % p.rows;
  let h = (flat / p.rows) % p.hKv;
  let bi = flat / (p.rows * p.hKv);
  let s0 = u32(numSplits[bi]);
  let n = u32(numSplits[bi + 1u]) - s0;
  if (n <= 1u) { return; }
  var m = NONE;
  for (var i = 0u; i < n; i++) { m = max(m, lseAcc[((s0 + i) * p.hKv + h) * p.rows + row]); }
  let any = m > NONE;
  var sum = 0.0;
  for (var i = 0u; i < n; i++) {
    let li = lseAcc[((s0 + i) * p.hKv + h) * p.rows + row];
    if (li > NONE) { sum += exp(li - m); }
  }
  let total = log(sum) + m;
  let qh = h * p.g + row % p.g;
  let sIdx = row / p.g;
  let oo = ((bi * p.sQ + sIdx) * p.hQ + qh) * p.dV;
  for (var d = lid.x; d < p.dV; d += WG) {
    var acc = 0.0;
    if (any) {
      for (var i = 0u; i < n; i++) {
        let base = ((s0 + i) * p.hKv + h) * p.rows + row;
        let li = lseAcc[base];
        if (li > NONE) { acc += exp(li - total) * oAcc[base * p.dV + d]; }
      }
    }
    out[oo + d] = acc;
  }
  if (lid.x == 0u) { lse[(bi * p.hQ + qh) * p.sQ + sIdx] = select(p.posInf, total, any); }
}`;
}
