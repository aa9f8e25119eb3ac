// WGSL generator for the DeepGEMM family (see deepgemm.ts): D = A·Bᵀ ("NT") with
//   A: fp8 e4m3 with 1x128 scales [rows, kb]  |  f32 (weight-only variants)
//   B: fp8 e4m3 with 128x128 scales [G, nb, kb]  |  bf16 bits  |  f32 (the forward op matmul), G stacked [n, k]
//   grouping: none (G = 1) | contiguous (row r uses B[mIndices[r]], -1 rows written 0, -2 rows not written:
//             the rows of groups another weight part serves, see deepgemm.ts)
//             | masked (row r = g·mMax + i uses B[g] when i < maskedM[g], other rows not written).
// One invocation per output element (64 along N; rows over y/z). B may be one part of a larger weight
// (rows n0.. of it): the kernel's n is the part's row, written at column p.n0 + n of an output whose rows
// are p.ldo wide (unsplit: n0 = 0, ldo = n); row r of A starts at element r·p.lda + p.a0 (a column block of a
// wider activation; plain: lda = k, a0 = 0); contiguous grouping serves groups [p.g0, p.g0 + p.gn) of the
// group indices (the part's groups; other rows are left alone). Per 128-wide K block the f32 partial sum
// is promoted: acc += (sA·sB)·partial for fp8×fp8, acc += sB·partial for f32×fp8, acc += partial for bf16/f32.
// When K % 4 == 0 every row starts on a u32 word, and the inner loop decodes 4 fp8 codes (or 2 words of
// bf16) per step; otherwise it decodes byte by byte.
import { BF16_DECODE, FP8_E4M3_DECODE } from './wgsl.ts';

export type GemmA = 'fp8' | 'f32';
export type GemmB = 'fp8' | 'bf16' | 'f32';
export type Grouping = 'none' | 'contiguous' | 'masked';

export interface GemmVariant {
  a: GemmA;
  b: GemmB;
  grouping: Grouping;
  /** K % 4 == 0: word-aligned rows, vectorized inner loop. */
  k4: boolean;
  /**
   * Split-K: one workgroup of 64 per output element, each invocation summing 32-wide K chunks (scaled by
   * their block's scale: the promotion is linear, so chunk sums can be scaled before adding), then a tree
   * reduction. Coalesced weight reads for small M (decode) on real GPUs; on CPU adapters the barriers
   * cost more than they save, so `direct` (one invocation per output) is the default there.
   */
  split: boolean;
  /**
   * Direct kernel, no grouping, f32 A only: rows of A per invocation (default 1). Each B value is decoded
   * once for all of them (fp8 / bf16 decoding costs more than the multiply-add on CPU adapters); every
   * output element keeps its own accumulators in the same order, so results equal rowBlock 1 bit for bit.
   */
  rowBlock?: number;
}

/** Rows per invocation worth blocking for a call (see GemmVariant.rowBlock). */
export function gemmRowBlock(v: Omit<GemmVariant, 'rowBlock'>, rows: number): number {
  return !v.split && v.grouping === 'none' && v.a === 'f32' && rows >= 4 ? 4 : 1;
}

export const GEMM_WG = 64;

export function gemmKey(v: GemmVariant): string {
  return `deepgemm:${v.a}x${v.b}:${v.grouping}:${v.k4 ? 'k4' : 'k1'}:${v.split ? 'split' : 'direct'}${(v.rowBlock ?? 1) > 1 ? `:rb${v.rowBlock}` : ''}`;
}

/** Chunk of K one split-K invocation sums at a time (divides the 128-wide scale block). */
const SPLIT_CHUNK = 32;

/** Bindings after the fixed ones (0 params, 1 a, 2 b, 3 out), in order, for a variant. */
export function gemmExtraBindings(v: GemmVariant): ('aScales' | 'bScales' | 'groupIndex')[] {
  const out: ('aScales' | 'bScales' | 'groupIndex')[] = [];
  if (v.a === 'fp8') out.push('aScales');
  if (v.b === 'fp8') out.push('bScales');
  if (v.grouping !== 'none') out.push('groupIndex');
  return out;
}

const FP8X4_DECODE = /* wgsl */ `
fn fp8x4(w: u32) -> vec4f {
  let c = vec4u(w & 0xffu, (w >> 8u) & 0xffu, (w >> 16u) & 0xffu, w >> 24u);
  let e = (c >> vec4u(3u)) & vec4u(15u);
  let m = c & vec4u(7u);
  let normal = bitcast<vec4f>(((e + vec4u(120u)) << vec4u(23u)) | (m << vec4u(20u)));
  let sub = vec4f(m) * 0.001953125;
  let nan = bitcast<vec4f>(vec4u(0x7f800000u) | (m << vec4u(20u)));
  var v = select(normal, sub, e == vec4u(0u));
  v = select(v, nan, (e == vec4u(15u)) & (m == vec4u(7u)));
  return select(v, -v, (c & vec4u(0x80u)) != vec4u(0u));
}`;

/**
 * Contiguous grouping: the group of row `row` local to the weight part's groups [g0, g0 + gn), -1 (write 0)
 * or -2 (not written: below -1, or a group of another part).
 */
const GROUP_OF = /* wgsl */ `
fn groupOf(row: u32) -> i32 {
  let gi = groupIndex[row];
  if (gi < 0) { return max(gi, -2); }
  let gl = gi - i32(p.g0);
  if (gl < 0 || gl >= i32(p.gn)) { return -2; }
  return gl;
}`;

export function gemmWgsl(v: GemmVariant): string {
  let binding = 4;
  const extra = gemmExtraBindings(v).map((name) => {
    const type = name === 'groupIndex' ? 'array<i32>' : 'array<f32>';
    return `@group(0) @binding(${binding++}) var<storage, read> ${name}: ${type};`;
  }).join('\n');
  const aScalar = v.a === 'fp8' ? 'fp8e4m3(byteAt(a[(i) >> 2u], i))' : 'a[i]';
  const bScalar = v.b === 'fp8' ? 'fp8e4m3(byteAt(b[(i) >> 2u], i))' : v.b === 'bf16' ? 'bf16At(b[(i) >> 1u], i)' : 'b[i]';
  const aVec = v.a === 'fp8' ? 'fp8x4(a[i >> 2u])' : 'vec4f(a[i], a[i + 1u], a[i + 2u], a[i + 3u])';
  const bVec = v.b === 'fp8' ? 'fp8x4(b[i >> 2u])'
    : v.b === 'bf16' ? 'vec4f(bf16At(b[i >> 1u], 0u), bf16At(b[i >> 1u], 1u), bf16At(b[(i >> 1u) + 1u], 0u), bf16At(b[(i >> 1u) + 1u], 1u))'
    : 'vec4f(b[i], b[i + 1u], b[i + 2u], b[i + 3u])';
  const scale = v.a === 'fp8' && v.b === 'fp8' ? '(aScales[row * p.kb + kb] * bScales[bso + kb])'
    : v.b === 'fp8' ? 'bScales[bso + kb]' : '1.0';
  const group = v.grouping === 'contiguous' ? /* wgsl */ `
  let gi = groupOf(row);
  if (gi < 0) {
    if (gi == -1) { out[row * p.ldo + p.n0 + n] = 0.0; }
    return;
  }
  let g = u32(gi);`
    : v.grouping === 'masked' ? /* wgsl */ `
  let g = row / p.mMax;
  if (row % p.mMax >= u32(groupIndex[g])) { return; }`
    : `let g = 0u;`;
  const HEADER = /* wgsl */ `
struct P { rows: u32, n: u32, k: u32, kb: u32, nb: u32, mMax: u32, ldo: u32, n0: u32, lda: u32, a0: u32, g0: u32, gn: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<${v.a === 'fp8' ? 'u32' : 'f32'}>;
@group(0) @binding(2) var<storage, read> b: array<${v.b === 'f32' ? 'f32' : 'u32'}>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
${extra}
${FP8_E4M3_DECODE}
${FP8X4_DECODE}
${BF16_DECODE}
${v.grouping === 'contiguous' ? GROUP_OF : ''}
fn aAt(i: u32) -> f32 { return ${aScalar}; }
fn bAt(i: u32) -> f32 { return ${bScalar}; }
fn aAt4(i: u32) -> vec4f { return ${aVec}; }
fn bAt4(i: u32) -> vec4f { return ${bVec}; }
`;
  if (v.split) {
    // Group decision made once per workgroup (uniform for the barriers): g ≥ 0, −1 = write 0, −2 = skip.
    const decide = v.grouping === 'contiguous' ? 'groupOf(row)'
      : v.grouping === 'masked' ? 'select(i32(row / p.mMax), -2, row % p.mMax >= u32(groupIndex[row / p.mMax]))'
      : '0';
    const inner = v.k4
      ? `var part4 = vec4f(0.0);
    for (var kk = k0; kk < k1; kk += 4u) { part4 += aAt4(ao + kk) * bAt4(bo + kk); }
    let part = (part4.x + part4.y) + (part4.z + part4.w);`
      : `var part = 0.0;
    for (var kk = k0; kk < k1; kk++) { part += aAt(ao + kk) * bAt(bo + kk); }`;
    return /* wgsl */ `${HEADER}
var<workgroup> red: array<f32, ${GEMM_WG}>;
var<workgroup> gsh: i32;
@compute @workgroup_size(${GEMM_WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let flat = wid.x + wid.y * nwg.x;
  if (flat >= p.rows * p.n) { return; }
  let n = flat % p.n;
  let row = flat / p.n;
  if (lid.x == 0u) { gsh = ${decide}; }
  let gd = workgroupUniformLoad(&gsh);
  if (gd == -2) { return; }
  if (gd == -1) {
    if (lid.x == 0u) { out[row * p.ldo + p.n0 + n] = 0.0; }
    return;
  }
  let g = u32(gd);
  let ao = row * p.lda + p.a0;
  let bo = (g * p.n + n) * p.k;
  let bso = (g * p.nb + n / 128u) * p.kb;
  var acc = 0.0;
  for (var c = lid.x; c * ${SPLIT_CHUNK}u < p.k; c += ${GEMM_WG}u) {
    let k0 = c * ${SPLIT_CHUNK}u;
    let k1 = min(k0 + ${SPLIT_CHUNK}u, p.k);
    let kb = k0 / 128u;
    ${inner}
    acc += ${scale} * part;
  }
  red[lid.x] = acc;
  workgroupBarrier();
  for (var s = ${GEMM_WG / 2}u; s > 0u; s >>= 1u) {
    if (lid.x < s) { red[lid.x] += red[lid.x + s]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { out[row * p.ldo + p.n0 + n] = red[0]; }
}`;
  }
  const RB = v.rowBlock ?? 1;
  if (RB > 1) {
    if (v.grouping !== 'none' || v.a !== 'f32') throw new RangeError('gemmWgsl: rowBlock > 1 needs f32 A and no grouping');
    // Per row r of the block: accumulators acc{r}, part4_{r} / part{r} (named scalars: dynamically indexed
    // private arrays live in memory on CPU adapters); rows past the end read the last row and write nothing.
    const rep = (f: (r: number) => string, sep = '\n    ') => Array.from({ length: RB }, (_, r) => f(r)).join(sep);
    return /* wgsl */ `${HEADER}
@compute @workgroup_size(${GEMM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let n = gid.x;
  let row0 = (gid.y + gid.z * nwg.y) * ${RB}u;
  if (n >= p.n || row0 >= p.rows) { return; }
  let bo = n * p.k;
  let bso = (n / 128u) * p.kb;
  ${rep((r) => `let ao${r} = min(row0 + ${r}u, p.rows - 1u) * p.lda + p.a0;`)}
  ${rep((r) => `var acc${r} = 0.0;`)}
  for (var kb = 0u; kb < p.kb; kb++) {
    let k0 = kb * 128u;
    let k1 = min(k0 + 128u, p.k);
    let sc = ${scale};
    ${v.k4
      ? `${rep((r) => `var part4_${r} = vec4f(0.0);`)}
    for (var kk = k0; kk < k1; kk += 4u) {
      let w = bAt4(bo + kk);
      ${rep((r) => `part4_${r} += aAt4(ao${r} + kk) * w;`, '\n      ')}
    }
    ${rep((r) => `acc${r} += sc * ((part4_${r}.x + part4_${r}.y) + (part4_${r}.z + part4_${r}.w));`)}`
      : `${rep((r) => `var part${r} = 0.0;`)}
    for (var kk = k0; kk < k1; kk++) {
      let w = bAt(bo + kk);
      ${rep((r) => `part${r} += aAt(ao${r} + kk) * w;`, '\n      ')}
    }
    ${rep((r) => `acc${r} += sc * part${r};`)}`}
  }
  ${rep((r) => `if (row0 + ${r}u < p.rows) { out[(row0 + ${r}u) * p.ldo + p.n0 + n] = acc${r}; }`)}
}`;
  }
  return /* wgsl */ `${HEADER}
@compute @workgroup_size(${GEMM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let n = gid.x;
  let row = gid.y + gid.z * nwg.y;
  if (n >= p.n || row >= p.rows) { return; }
  ${group}
  let ao = row * p.lda + p.a0;
  let bo = (g * p.n + n) * p.k;
  let bso = (g * p.nb + n / 128u) * p.kb;
  var acc = 0.0;
  for (var kb = 0u; kb < p.kb; kb++) {
    let k0 = kb * 128u;
    let k1 = min(k0 + 128u, p.k);
    var part = 0.0;
    ${v.k4
      ? 'var part4 = vec4f(0.0);\n    for (var kk = k0; kk < k1; kk += 4u) { part4 += aAt4(ao + kk) * bAt4(bo + kk); }\n    part = (part4.x + part4.y) + (part4.z + part4.w);'
      : 'for (var kk = k0; kk < k1; kk++) { part += aAt(ao + kk) * bAt(bo + kk); }'}
    acc += ${scale} * part;
  }
  out[row * p.ldo + p.n0 + n] = acc;
}`;
}
