// WGSL generators for the forward ops (KernelOps semantics, src/kernels/api.ts). Each returns the full
// shader for one parameter set; the caller caches the pipeline under `op:params` (pipelines.ts).
// Conventions: binding 0 is the uniform parameter block, storage bindings follow in the order the host
// passes them; flat indices come from a grid() dispatch.
import { FLAT_GROUP } from './wgsl.ts';

export const ROW_WG = 64;
export const ELEM_WG = 256;

/** Tree reduction over a workgroup array `red` of ROW_WG values with `op`; result in red[0]. */
function reduce(op: string): string {
  return /* wgsl */ `
  for (var s = ${ROW_WG / 2}u; s > 0u; s >>= 1u) {
    if (lid.x < s) { red[lid.x] = ${op.replace('A', 'red[lid.x]').replace('B', 'red[lid.x + s]')}; }
    workgroupBarrier();
  }`;
}

/** One workgroup per row: y = x / sqrt(mean(x²) + eps) * weight. */
export function rmsNormWgsl(): string {
  return /* wgsl */ `
struct P { rows: u32, cols: u32, eps: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
var<workgroup> red: array<f32, ${ROW_WG}>;
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = ${FLAT_GROUP};
  if (row >= p.rows) { return; }
  let o = row * p.cols;
  var ss = 0.0;
  for (var c = lid.x; c < p.cols; c += ${ROW_WG}u) { let v = x[o + c]; ss += v * v; }
  red[lid.x] = ss;
  workgroupBarrier();
  ${reduce('A + B')}
  let inv = 1.0 / sqrt(red[0] / f32(p.cols) + p.eps);
  for (var c = lid.x; c < p.cols; c += ${ROW_WG}u) { y[o + c] = x[o + c] * inv * wt[c]; }
}`;
}

/** One workgroup per row, in place: x = exp(x - max) / Σ exp(x - max). */
export function softmaxWgsl(): string {
  return /* wgsl */ `
struct P { rows: u32, cols: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
var<workgroup> red: array<f32, ${ROW_WG}>;
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = ${FLAT_GROUP};
  if (row >= p.rows) { return; }
  let o = row * p.cols;
  var mx = -3.4028234663852886e38;
  for (var c = lid.x; c < p.cols; c += ${ROW_WG}u) { mx = max(mx, x[o + c]); }
  red[lid.x] = mx;
  workgroupBarrier();
  ${reduce('max(A, B)')}
  let m = red[0];
  workgroupBarrier();
  var sum = 0.0;
  for (var c = lid.x; c < p.cols; c += ${ROW_WG}u) { let e = exp(x[o + c] - m); x[o + c] = e; sum += e; }
  red[lid.x] = sum;
  workgroupBarrier();
  ${reduce('A + B')}
  let inv = 1.0 / red[0];
  for (var c = lid.x; c < p.cols; c += ${ROW_WG}u) { x[o + c] = x[o + c] * inv; }
}`;
}

/** out = silu(gate) · up, one invocation per element. */
export function siluMulWgsl(): string {
  return /* wgsl */ `
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(${ELEM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * ${ELEM_WG}u;
  if (i >= p.n) { return; }
  let v = g[i];
  y[i] = v / (1.0 + exp(-v)) * u[i];
}`;
}

/** Rotates interleaved pairs in place; one invocation per (row, pair). */
export function ropeWgsl(): string {
  return /* wgsl */ `
struct P { rows: u32, stride: u32, offset: u32, half: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> cs: array<f32>;
@group(0) @binding(3) var<storage, read> sn: array<f32>;
@compute @workgroup_size(${ELEM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * ${ELEM_WG}u;
  if (t >= p.rows * p.half) { return; }
  let r = t / p.half;
  let i = t % p.half;
  let o = r * p.stride + p.offset + 2u * i;
  let a = x[o];
  let b = x[o + 1u];
  let c = cs[t];
  let s = sn[t];
  x[o] = a * c - b * s;
  x[o + 1u] = a * s + b * c;
}`;
}

/**
 * Top-k per row, one workgroup per row: k rounds, each picks the best element strictly after the previous
 * pick in the order (value descending, index ascending) by a strided scan plus a tree reduction, so no
 * scratch copy of the row is needed whatever its length. NaN ranks below -inf (ties among NaNs: index).
 */
export function topkWgsl(): string {
  return /* wgsl */ `
struct P { rows: u32, cols: u32, k: u32, _a: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> outI: array<i32>;
@group(0) @binding(3) var<storage, read_write> outV: array<f32>;
var<workgroup> bv: array<f32, ${ROW_WG}>;
var<workgroup> bi: array<u32, ${ROW_WG}>;
var<workgroup> bn: array<u32, ${ROW_WG}>;
const NONE = 0xffffffffu;
fn isNan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
// (va, ia, na) ranks before (vb, ib, nb): non-NaN first, larger value, then lower index.
fn before(va: f32, ia: u32, na: bool, vb: f32, ib: u32, nb: bool) -> bool {
  if (ia == NONE) { return false; }
  if (ib == NONE) { return true; }
  if (na != nb) { return nb; }
  if (!na && va != vb) { return va > vb; }
  return ia < ib;
}
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = ${FLAT_GROUP};
  if (row >= p.rows) { return; }
  let o = row * p.cols;
  var pv = 0.0;
  var pi = NONE;
  var pn = false;
  for (var j = 0u; j < p.k; j++) {
    var cv = 0.0;
    var ci = NONE;
    var cn = false;
    for (var c = lid.x; c < p.cols; c += ${ROW_WG}u) {
      let v = x[o + c];
      let n = isNan(v);
      // Only elements ranked after the previous pick are candidates this round.
      if (pi == NONE || before(pv, pi, pn, v, c, n)) {
        if (before(v, c, n, cv, ci, cn)) { cv = v; ci = c; cn = n; }
      }
    }
    bv[lid.x] = cv; bi[lid.x] = ci; bn[lid.x] = select(0u, 1u, cn);
    workgroupBarrier();
    for (var s = ${ROW_WG / 2}u; s > 0u; s >>= 1u) {
      if (lid.x < s && before(bv[lid.x + s], bi[lid.x + s], bn[lid.x + s] == 1u, bv[lid.x], bi[lid.x], bn[lid.x] == 1u)) {
        bv[lid.x] = bv[lid.x + s]; bi[lid.x] = bi[lid.x + s]; bn[lid.x] = bn[lid.x + s];
      }
      workgroupBarrier();
    }
    pv = bv[0]; pi = bi[0]; pn = bn[0] == 1u;
    if (lid.x == 0u) { outI[row * p.k + j] = i32(pi); outV[row * p.k + j] = pv; }
    workgroupBarrier();
  }
}`;
}
