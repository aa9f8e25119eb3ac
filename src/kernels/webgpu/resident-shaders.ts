// WGSL for the GPU-resident ops (resident.ts): row ops on column blocks of wider tensors (stride/offset in
// the parameters, since a resident tensor is one buffer bound whole), gathers and scatters of rows by an
// index tensor, the MoE gate, the expert plan (counting sort) and the weighted combine of expert rows.
// Conventions as op-shaders.ts: binding 0 is the uniform parameter block; flat indices from grid().
import { ELEM_WG, ROW_WG } from './op-shaders.ts';
import { BF16_DECODE, FLAT_GROUP } from './wgsl.ts';

const ELEM_INDEX = `let i = gid.x + gid.y * nwg.x * ${ELEM_WG}u;`;

function reduceSum(): string {
  return /* wgsl */ `
  for (var s = ${ROW_WG / 2}u; s > 0u; s >>= 1u) {
    if (lid.x < s) { red[lid.x] = red[lid.x] + red[lid.x + s]; }
    workgroupBarrier();
  }`;
}

/**
 * RMSNorm of `rows` rows of `cols` values read at x[r·xs + xo ..] and written at y[r·ys + yo ..];
 * `inPlace`: y is x (one read_write binding, since a buffer may not be bound writable twice).
 */
export function rmsNormStridedWgsl(inPlace: boolean): string {
  return /* wgsl */ `
struct P { rows: u32, cols: u32, eps: f32, xs: u32, xo: u32, ys: u32, yo: u32, _p: u32 }
@group(0) @binding(0) var<uniform> p: P;
${inPlace
    ? '@group(0) @binding(1) var<storage, read_write> x: array<f32>;\n@group(0) @binding(2) var<storage, read> wt: array<f32>;'
    : '@group(0) @binding(1) var<storage, read> x: array<f32>;\n@group(0) @binding(2) var<storage, read> wt: array<f32>;\n@group(0) @binding(3) var<storage, read_write> y: array<f32>;'}
var<workgroup> red: array<f32, ${ROW_WG}>;
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = ${FLAT_GROUP};
  if (row >= p.rows) { return; }
  let o = row * p.xs + p.xo;
  var ss = 0.0;
  for (var c = lid.x; c < p.cols; c += ${ROW_WG}u) { let v = x[o + c]; ss += v * v; }
  red[lid.x] = ss;
  workgroupBarrier();
  ${reduceSum()}
  let inv = 1.0 / sqrt(red[0] / f32(p.cols) + p.eps);
  let oy = row * p.ys + p.yo;
  for (var c = lid.x; c < p.cols; c += ${ROW_WG}u) { ${inPlace ? 'x' : 'y'}[oy + c] = x[o + c] * inv * wt[c]; }
}`;
}

/** x[i] += y[i] for i < n. */
export function addWgsl(): string {
  return /* wgsl */ `
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@compute @workgroup_size(${ELEM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  ${ELEM_INDEX}
  if (i >= p.n) { return; }
  x[i] = x[i] + y[i];
}`;
}

/** dst[r·ds + do + c] = src[r·ss + so + c] for r < rows, c < n (a column block of 32-bit values). */
export function copy2dWgsl(): string {
  return /* wgsl */ `
struct P { rows: u32, n: u32, ss: u32, so: u32, ds: u32, dof: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(${ELEM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  ${ELEM_INDEX}
  if (i >= p.rows * p.n) { return; }
  let r = i / p.n;
  let c = i % p.n;
  dst[r * p.ds + p.dof + c] = src[r * p.ss + p.so + c];
}`;
}

/** dst[r, :] = src[idx[r], :] for r < rows, rows of `width` values. */
export function gatherRowsWgsl(): string {
  return /* wgsl */ `
struct P { rows: u32, width: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<i32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(${ELEM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  ${ELEM_INDEX}
  if (i >= p.rows * p.width) { return; }
  let r = i / p.width;
  let c = i % p.width;
  dst[i] = src[u32(idx[r]) * p.width + c];
}`;
}

/**
 * dst[idx[r] - lo, :] = src[r, :] for r < rows whose index lies in [lo, hi) (rows of `width` values;
 * indices distinct): dst may be one part of a larger row space (a cache part), the others untouched.
 */
export function scatterRowsWgsl(): string {
  return /* wgsl */ `
struct P { rows: u32, width: u32, lo: u32, hi: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<i32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(${ELEM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  ${ELEM_INDEX}
  if (i >= p.rows * p.width) { return; }
  let r = i / p.width;
  let c = i % p.width;
  let s = u32(idx[r]);
  if (s < p.lo || s >= p.hi) { return; }
  dst[(s - p.lo) * p.width + c] = src[i];
}`;
}

/**
 * Rows of a table part (rows [r0, r1) of an f32 or bf16 matrix of `width` columns) widened to f32:
 * out[t, :] = table[ids[t] - r0, :] for the tokens whose id lies in the part (others untouched).
 */
export function embedWgsl(dtype: 'f32' | 'bf16'): string {
  return /* wgsl */ `
struct P { rows: u32, width: u32, r0: u32, r1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> table: array<${dtype === 'f32' ? 'f32' : 'u32'}>;
@group(0) @binding(2) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
${BF16_DECODE}
@compute @workgroup_size(${ELEM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  ${ELEM_INDEX}
  if (i >= p.rows * p.width) { return; }
  let t = i / p.width;
  let c = i % p.width;
  let id = u32(ids[t]);
  if (id < p.r0 || id >= p.r1) { return; }
  let e = (id - p.r0) * p.width + c;
  out[i] = ${dtype === 'f32' ? 'table[e]' : 'bf16At(table[e >> 1u], e)'};
}`;
}

/** The MoE gate's compile-time choices (DeepSeek-V2/V3 MoEGate; see src/model/moe.ts `route`). */
export interface GateVariant {
  experts: number;
  k: number;
  scoring: 'softmax' | 'sigmoid';
  /** greedy: top-k over all experts; group (group_limited_greedy: group max; noaux_tc: sum of top-2). */
  method: 'greedy' | 'group_max' | 'group_top2';
  groups: number;
  topkGroup: number;
  bias: boolean;
}

export function gateKey(v: GateVariant): string {
  return `moeGate:e${v.experts}:k${v.k}:${v.scoring}:${v.method}:g${v.groups}:${v.topkGroup}:${v.bias ? 'bias' : 'nobias'}`;
}

/**
 * Bindings: params, logits, bias (only with `bias`), experts, weights.
 * One invocation per token: scores = softmax(logits) or sigmoid(logits); choice = scores (+ bias); with
 * groups, the topkGroup best groups by max / top-2-sum of choice are kept and the other experts' choice
 * becomes 0; top-k of choice (value descending, ties to the lower index); weights = the unbiased scores
 * of the chosen experts, × p.mul (or normalised to sum 1 first when p.norm, then × p.mul).
 */
export function moeGateWgsl(v: GateVariant): string {
  const E = v.experts, G = v.groups;
  const per = E / G;
  return /* wgsl */ `
struct P { rows: u32, norm: u32, mul: f32, _a: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
${v.bias ? '@group(0) @binding(2) var<storage, read> bias: array<f32>;' : ''}
@group(0) @binding(${v.bias ? 3 : 2}) var<storage, read_write> outE: array<i32>;
@group(0) @binding(${v.bias ? 4 : 3}) var<storage, read_write> outW: array<f32>;
const E = ${E}u;
const K = ${v.k}u;
const G = ${G}u;
const PER = ${per}u;
fn score(o: u32, e: u32, mx: f32, inv: f32) -> f32 {
  ${v.scoring === 'softmax' ? 'return exp(logits[o + e] - mx) * inv;' : 'return 1.0 / (1.0 + exp(-logits[o + e]));'}
}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 64u;
  if (t >= p.rows) { return; }
  let o = t * E;
  var mx = -3.4028234663852886e38;
  var inv = 1.0;
  ${v.scoring === 'softmax' ? `for (var e = 0u; e < E; e++) { mx = max(mx, logits[o + e]); }
  var sum = 0.0;
  for (var e = 0u; e < E; e++) { sum += exp(logits[o + e] - mx); }
  inv = 1.0 / sum;` : ''}
  var choice: array<f32, ${E}>;
  for (var e = 0u; e < E; e++) { choice[e] = score(o, e, mx, inv)${v.bias ? ' + bias[e]' : ''}; }
  ${v.method === 'greedy' || G <= 1 ? '' : /* wgsl */ `
  var gs: array<f32, ${G}>;
  for (var g = 0u; g < G; g++) {
    var a = -3.4028234663852886e38;
    var b = -3.4028234663852886e38;
    for (var j = 0u; j < PER; j++) {
      let c = choice[g * PER + j];
      ${v.method === 'group_max' ? 'a = max(a, c);' : 'if (c > a) { b = a; a = c; } else if (c > b) { b = c; }'}
    }
    gs[g] = ${v.method === 'group_max' ? 'a' : 'a + b'};
  }
  var keep: array<u32, ${G}>;
  for (var j = 0u; j < ${v.topkGroup}u; j++) {
    var best = G;
    for (var g = 0u; g < G; g++) {
      if (keep[g] == 0u && (best == G || gs[g] > gs[best])) { best = g; }
    }
    keep[best] = 1u;
  }
  for (var g = 0u; g < G; g++) {
    if (keep[g] == 0u) { for (var j = 0u; j < PER; j++) { choice[g * PER + j] = 0.0; } }
  }`}
  var taken: array<u32, ${E}>;
  var wsum = 0.0;
  for (var j = 0u; j < K; j++) {
    var best = E;
    for (var e = 0u; e < E; e++) {
      if (taken[e] == 0u && (best == E || choice[e] > choice[best])) { best = e; }
    }
    taken[best] = 1u;
    let w = score(o, best, mx, inv);
    outE[t * K + j] = i32(best);
    outW[t * K + j] = w;
    wsum += w;
  }
  let m = select(p.mul, p.mul / (wsum + 1e-20), p.norm == 1u);
  for (var j = 0u; j < K; j++) { outW[t * K + j] = outW[t * K + j] * m; }
}`;
}

/**
 * The expert plan of T·K assignments (DeepGEMM's contiguous layout, no padding), one invocation: a stable
 * counting sort by expert. rowToken[r] = token of grouped row r, rowExpert[r] = its expert (the grouped
 * GEMM's group index), rowOf[a] = grouped row of assignment a = t·K + j.
 */
export function expertPlanWgsl(experts: number): string {
  return /* wgsl */ `
struct P { assignments: u32, k: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> idx: array<i32>;
@group(0) @binding(2) var<storage, read_write> rowToken: array<i32>;
@group(0) @binding(3) var<storage, read_write> rowExpert: array<i32>;
@group(0) @binding(4) var<storage, read_write> rowOf: array<i32>;
const E = ${experts}u;
@compute @workgroup_size(1)
fn main() {
  var fill: array<u32, ${experts}>;
  for (var a = 0u; a < p.assignments; a++) { fill[u32(idx[a])] += 1u; }
  var s = 0u;
  for (var e = 0u; e < E; e++) { let c = fill[e]; fill[e] = s; s += c; }
  for (var a = 0u; a < p.assignments; a++) {
    let e = u32(idx[a]);
    let r = fill[e];
    fill[e] = r + 1u;
    rowToken[r] = i32(a / p.k);
    rowExpert[r] = i32(e);
    rowOf[a] = i32(r);
  }
}`;
}

/**
 * out[t, c] = Σ_j w[t, j] · y[rowOf[t·K + j], c], the K terms added in ascending grouped-row order (the
 * order the CPU executor's scatter adds them), from 0.
 */
export function combineExpertsWgsl(): string {
  return /* wgsl */ `
struct P { rows: u32, width: u32, k: u32, _a: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> rowOf: array<i32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(${ELEM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  ${ELEM_INDEX}
  if (i >= p.rows * p.width) { return; }
  let t = i / p.width;
  let c = i % p.width;
  var acc = 0.0;
  var prev = -1;
  for (var n = 0u; n < p.k; n++) {
    // The assignment of t with the smallest grouped row after prev.
    var bestJ = 0u;
    var bestR = 2147483647;
    for (var j = 0u; j < p.k; j++) {
      let r = rowOf[t * p.k + j];
      if (r > prev && r < bestR) { bestR = r; bestJ = j; }
    }
    acc = acc + w[t * p.k + bestJ] * y[u32(bestR) * p.width + c];
    prev = bestR;
  }
  out[i] = acc;
}`;
}
