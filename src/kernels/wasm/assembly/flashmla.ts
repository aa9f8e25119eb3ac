// FlashMLA main kernel on WebAssembly SIMD128: online-softmax attention of the folded query rows of one
// (request, kv head, block range) work unit over a paged latent cache (f32, bf16 bits or the V3.2 FP8
// layout), writing the final output (unsplit request) or a split partial for the combine.
// Reference: https://github.com/deepseek-ai/FlashMLA/blob/main/csrc/kernels/splitkv_mla.cu
// (compute_attn_1rowblock_splitkv_mla) — same work decomposition, CPU-shaped inner loops.
//
// Memory (byte offsets into the shared memory; all f32 unless stated):
//   params  i32[24], see P_* below        units  i32[n, 8]: [batch, blockBegin, blockEnd, kvHead, final, slot, r0, r1]
//   (folded rows [r0, r1) of the unit; r1 = 0 means all R rows: the driver splits a long prefill's rows
//   across participants, each row's result is independent of the split)
//   q       [b, sQ, hQ, dQK]              cache  [numBlocks, 64, hKv, rowStride] (f32 / u16 bf16 / FP8 bytes)
//   blockTable i32 [b, maxBlocks]         seqlens i32 [b]
//   out     [b, sQ, hQ, dV]               lse    [b, hQ, sQ]
//   oAcc    [slots, hKv, R, dV]           lseAcc [slots, hKv, R]        (R = sQ·g folded rows)
//   scratch per participant: flashScratchBytes(R, dQK, dV)
// Scores are q[qk0:] · K[qk0:] (P_QK0: FlashMlaArgs.qkBegin, 0 for FlashMLA's full row).
// Keys past the sequence length are never loaded; causal-masked keys get weight exactly 0 and are finite,
// so NaN in unused cache slots never reaches a result.

import { exp4 } from './vmath';

const BLOCK: i32 = 64;
/**
 * Folded query rows processed together over all of a unit's key blocks (a prefill has sQ·g rows, e.g.
 * 512 × 16): Q, S and O of one tile (RT × (dQK + 64 + dV) f32, ~300 KB for MLA) stay cache-resident while
 * the keys stream past, and a tile stops at the last key block its last row may see (causal). Rows are
 * computed exactly as without tiles (the 4-row S and P·V tiles start at multiples of 4 either way).
 */
export const ROW_TILE: i32 = 64;
const P_Q = 0, P_CACHE = 1, P_TABLE = 2, P_SEQLENS = 3, P_OUT = 4, P_LSE = 5, P_OACC = 6, P_LSEACC = 7, P_UNITS = 8;
const P_SQ = 9, P_HQ = 10, P_HKV = 11, P_G = 12, P_DQK = 13, P_DV = 14, P_MAXBLOCKS = 15, P_DTYPE = 16;
const P_STRIDE = 17, P_ROPE = 18, P_CAUSAL = 19, P_SCALE = 20, P_LUT = 21, P_R = 22, P_QK0 = 23;

/**
 * a·b + c per lane: one fused multiply-add in the relaxed-SIMD build (flashmla-relaxed.wasm), a multiply
 * then an add in the plain build (as gemm.ts).
 */
@inline function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(c, f32x4.mul(a, b));
}

@inline function pi(p: usize, i: i32): i32 {
  return load<i32>(p + (<usize>i << 2));
}

@inline function hsum(v: v128): f32 {
  const u = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(u, 0) + f32x4.extract_lane(u, 1);
}

@inline function align64(n: usize): usize {
  return (n + 63) & ~(<usize>63);
}

/** Scratch bytes one participant needs: K block f32 [64, dQK], Q rows [R, dQK], S [R, 64], O [R, dV], m, l [R]. */
export function flashScratchBytes(rows: i32, dQK: i32, dV: i32): i32 {
  const R = min(rows, ROW_TILE);
  return <i32>(align64(<usize>BLOCK * <usize>dQK * 4) + align64(<usize>R * <usize>dQK * 4) + align64(<usize>R * BLOCK * 4)
    + align64(<usize>R * <usize>dV * 4) + 2 * align64(<usize>R * 4));
}

/** Converts `n` rows of block `blk` (kv head h) to f32 in kbuf [n, dQK]. */
function loadBlock(p: usize, blk: i32, h: i32, n: i32, kbuf: usize): void {
  const cache = <usize>pi(p, P_CACHE);
  const dtype = pi(p, P_DTYPE);
  const hKv = pi(p, P_HKV);
  const dQK = pi(p, P_DQK);
  const stride = pi(p, P_STRIDE);
  for (let t = 0; t < n; t++) {
    const tok = (<usize>blk * BLOCK + <usize>t) * <usize>hKv + <usize>h;
    const dst = kbuf + <usize>t * <usize>dQK * 4;
    if (dtype == 1) {
      const src = cache + tok * <usize>stride * 2;
      const full = dQK & ~7;
      for (let e = 0; e < full; e += 8) {
        const v = v128.load(src + (<usize>e << 1));
        v128.store(dst + (<usize>e << 2), i32x4.shl(i32x4.extend_low_i16x8_u(v), 16));
        v128.store(dst + (<usize>e << 2), i32x4.shl(i32x4.extend_high_i16x8_u(v), 16), 16);
      }
      for (let e = full; e < dQK; e++) store<u32>(dst + (<usize>e << 2), (<u32>load<u16>(src + (<usize>e << 1))) << 16);
    } else {
      // FP8: nope e4m3 codes, f32 scale per 128, rope bf16.
      const src = cache + tok * <usize>stride;
      const rope = pi(p, P_ROPE);
      const nope = dQK - rope;
      const lut = <usize>pi(p, P_LUT);
      const scales = src + <usize>nope;
      for (let tile = 0; tile < nope; tile += 128) {
        const s = load<f32>(scales + (<usize>(tile >> 7) << 2));
        for (let e = tile; e < tile + 128; e++) {
          store<f32>(dst + (<usize>e << 2), load<f32>(lut + (<usize>load<u8>(src + <usize>e) << 2)) * s);
        }
      }
      const rp = scales + (<usize>(nope >> 7) << 2);
      for (let e = 0; e < rope; e++) store<u32>(dst + (<usize>(nope + e) << 2), (<u32>load<u16>(rp + (<usize>e << 1))) << 16);
    }
  }
}

/** Dot products of 4 query rows with 2 keys over d values (a multiple of 4). Stores S[r][t], S[r][t+1]. */
@inline function dot4x2(q0: usize, qs: usize, k0: usize, k1: usize, d: i32, s: usize): void {
  let a00 = f32x4.splat(0), a01 = f32x4.splat(0), a10 = f32x4.splat(0), a11 = f32x4.splat(0);
  let a20 = f32x4.splat(0), a21 = f32x4.splat(0), a30 = f32x4.splat(0), a31 = f32x4.splat(0);
  // Bumped pointers (one add each per step, no per-load address arithmetic; as gemm.ts kernel4x8).
  let pk0 = k0, pk1 = k1, p0 = q0, p1 = q0 + qs, p2 = q0 + 2 * qs, p3 = q0 + 3 * qs;
  const end = k0 + (<usize>d << 2);
  while (pk0 < end) {
    const x0 = v128.load(pk0), x1 = v128.load(pk1);
    const y0 = v128.load(p0), y1 = v128.load(p1), y2 = v128.load(p2), y3 = v128.load(p3);
    a00 = madd(y0, x0, a00); a01 = madd(y0, x1, a01);
    a10 = madd(y1, x0, a10); a11 = madd(y1, x1, a11);
    a20 = madd(y2, x0, a20); a21 = madd(y2, x1, a21);
    a30 = madd(y3, x0, a30); a31 = madd(y3, x1, a31);
    pk0 += 16; pk1 += 16; p0 += 16; p1 += 16; p2 += 16; p3 += 16;
  }
  const row = <usize>BLOCK * 4;
  store<f32>(s, hsum(a00)); store<f32>(s, hsum(a01), 4);
  store<f32>(s + row, hsum(a10)); store<f32>(s + row, hsum(a11), 4);
  store<f32>(s + 2 * row, hsum(a20)); store<f32>(s + 2 * row, hsum(a21), 4);
  store<f32>(s + 3 * row, hsum(a30)); store<f32>(s + 3 * row, hsum(a31), 4);
}

/** One query row with 4 keys (kstride bytes apart) over d values (a multiple of 4). Stores S[t..t+3]. */
@inline function dot1x4(q: usize, k0: usize, ks: usize, d: i32, s: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  for (let e = 0; e < d; e += 4) {
    const o = <usize>e << 2;
    const y = v128.load(q + o);
    a0 = madd(y, v128.load(k0 + o), a0);
    a1 = madd(y, v128.load(k0 + ks + o), a1);
    a2 = madd(y, v128.load(k0 + 2 * ks + o), a2);
    a3 = madd(y, v128.load(k0 + 3 * ks + o), a3);
  }
  store<f32>(s, hsum(a0)); store<f32>(s, hsum(a1), 4); store<f32>(s, hsum(a2), 8); store<f32>(s, hsum(a3), 12);
}

/** Scalar-tail dot product (d not a multiple of 4, or a single leftover row/key). */
function dot1(q: usize, k: usize, d: i32): f32 {
  let a = f32x4.splat(0);
  const full = d & ~3;
  for (let e = 0; e < full; e += 4) a = madd(v128.load(q + (<usize>e << 2)), v128.load(k + (<usize>e << 2)), a);
  let s = hsum(a);
  for (let e = full; e < d; e++) s += load<f32>(q + (<usize>e << 2)) * load<f32>(k + (<usize>e << 2));
  return s;
}

/**
 * Runs work units [u0, u1) of the table. Each unit: rows r = 0..R−1 of kv head h of request b over blocks
 * [blockBegin, blockEnd), online softmax in f32, result to out/lse (final) or oAcc/lseAcc (partial).
 */
export function flashMlaUnits(p: usize, u0: i32, u1: i32, scratch: usize): void {
  const sQ = pi(p, P_SQ), hQ = pi(p, P_HQ), hKv = pi(p, P_HKV), g = pi(p, P_G);
  const dQK = pi(p, P_DQK), dV = pi(p, P_DV), maxBlocks = pi(p, P_MAXBLOCKS), dtype = pi(p, P_DTYPE);
  const stride = pi(p, P_STRIDE), causal = pi(p, P_CAUSAL), RU = pi(p, P_R);
  const scale = reinterpret<f32>(pi(p, P_SCALE));
  const qBase = <usize>pi(p, P_Q), cache = <usize>pi(p, P_CACHE);
  const table = <usize>pi(p, P_TABLE), seqlens = <usize>pi(p, P_SEQLENS), units = <usize>pi(p, P_UNITS);
  const RT = min(RU, ROW_TILE);
  const kbuf = scratch;
  const qbuf = kbuf + align64(<usize>BLOCK * <usize>dQK * 4);
  const sbuf = qbuf + align64(<usize>RT * <usize>dQK * 4);
  const obuf = sbuf + align64(<usize>RT * BLOCK * 4);
  const mbuf = obuf + align64(<usize>RT * <usize>dV * 4);
  const lbuf = mbuf + align64(<usize>RT * 4);
  const qs = <usize>dQK * 4;
  // Scores over columns [qk0, dQK): every dot product starts qo bytes into its q and K rows.
  const qk0 = pi(p, P_QK0), dq = dQK - qk0, qo = <usize>qk0 * 4;
  const simdD = (dq & 3) == 0;
  const dV4 = dV & ~3;

  for (let u = u0; u < u1; u++) {
    const up = units + (<usize>u << 5);
    const bi = load<i32>(up), bb = load<i32>(up, 4), be = load<i32>(up, 8), h = load<i32>(up, 12);
    const isFinal = load<i32>(up, 16), slot = load<i32>(up, 20);
    const ur0 = load<i32>(up, 24), ur1raw = load<i32>(up, 28);
    const ur1 = ur1raw == 0 ? RU : ur1raw;
    const len = load<i32>(seqlens + (<usize>bi << 2));
    for (let ra = ur0; ra < ur1; ra += RT) {
    const R = min(RT, ur1 - ra); // rows of this tile: folded rows ra + r, r in [0, R)
    // Gather the tile's query rows: row ra + r = s·g + j -> q[b, s, h·g + j].
    for (let r = 0; r < R; r++) {
      const s = (ra + r) / g, j = (ra + r) % g;
      memory.copy(qbuf + <usize>r * qs, qBase + ((<usize>(bi * sQ + s) * <usize>hQ + <usize>(h * g + j)) * qs), qs);
      store<f32>(mbuf + (<usize>r << 2), -Infinity);
      store<f32>(lbuf + (<usize>r << 2), 0);
    }
    memory.fill(obuf, 0, <usize>R * <usize>dV * 4);

    for (let blkIdx = bb; blkIdx < be; blkIdx++) {
      const t0 = blkIdx * BLOCK;
      const n = min(BLOCK, len - t0);
      if (n <= 0) break;
      // No row of the tile sees this block or later ones (its last row sees keys < len − sQ + 1 + ⌊row/g⌋).
      if (causal && t0 >= len - sQ + 1 + (ra + R - 1) / g) break;
      const blk = load<i32>(table + ((<usize>bi * <usize>maxBlocks + <usize>blkIdx) << 2));
      let kp: usize;
      let kstride: usize; // bytes between consecutive keys
      if (dtype == 0) {
        kp = cache + ((<usize>blk * BLOCK) * <usize>hKv + <usize>h) * <usize>stride * 4;
        kstride = <usize>hKv * <usize>stride * 4;
      } else {
        loadBlock(p, blk, h, n, kbuf);
        kp = kbuf;
        kstride = qs;
      }
      // S = q · kᵀ for 4-row × 2-key tiles (keys the row may not see are masked below, all are finite).
      let r = 0;
      if (simdD) {
        for (; r + 4 <= R; r += 4) {
          let t = 0;
          for (; t + 2 <= n; t += 2) {
            dot4x2(qbuf + <usize>r * qs + qo, qs, kp + <usize>t * kstride + qo, kp + <usize>(t + 1) * kstride + qo, dq, sbuf + (<usize>(r * BLOCK + t) << 2));
          }
          for (; t < n; t++) {
            for (let rr = r; rr < r + 4; rr++) store<f32>(sbuf + (<usize>(rr * BLOCK + t) << 2), dot1(qbuf + <usize>rr * qs + qo, kp + <usize>t * kstride + qo, dq));
          }
        }
      }
      for (; r < R; r++) {
        let t = 0;
        if (simdD) {
          for (; t + 4 <= n; t += 4) dot1x4(qbuf + <usize>r * qs + qo, kp + <usize>t * kstride + qo, kstride, dq, sbuf + (<usize>(r * BLOCK + t) << 2));
        }
        for (; t < n; t++) store<f32>(sbuf + (<usize>(r * BLOCK + t) << 2), dot1(qbuf + <usize>r * qs + qo, kp + <usize>t * kstride + qo, dq));
      }
      // Online softmax per row: new max, rescale O and l, p = exp(s − m) (0 for masked keys).
      for (r = 0; r < R; r++) {
        // Keys of this block row r may see: FlashMLA's col ≤ sK − 1 − (sQ − 1 − ⌊r/g⌋).
        let lim = n;
        if (causal) lim = min(n, len - sQ + 1 + (ra + r) / g - t0);
        const srow = sbuf + (<usize>(r * BLOCK) << 2);
        if (lim <= 0) {
          for (let t = 0; t < n; t++) store<f32>(srow + (<usize>t << 2), 0);
          continue;
        }
        // Scale and max, 4 keys at a time, then the tail (lim % 4) in order.
        const lim4 = lim & ~3;
        const sv = f32x4.splat(scale);
        let mxv = f32x4.splat(-Infinity);
        for (let t = 0; t < lim4; t += 4) {
          const v = f32x4.mul(v128.load(srow + (<usize>t << 2)), sv);
          v128.store(srow + (<usize>t << 2), v);
          mxv = f32x4.max(mxv, v);
        }
        let mx: f32 = max(max(f32x4.extract_lane(mxv, 0), f32x4.extract_lane(mxv, 1)), max(f32x4.extract_lane(mxv, 2), f32x4.extract_lane(mxv, 3)));
        for (let t = lim4; t < lim; t++) {
          const v = load<f32>(srow + (<usize>t << 2)) * scale;
          store<f32>(srow + (<usize>t << 2), v);
          mx = max(mx, v);
        }
        const mOld = load<f32>(mbuf + (<usize>r << 2));
        const mNew = max(mOld, mx);
        const alpha = Mathf.exp(mOld - mNew); // mOld = −inf -> 0
        // p = e^(s − m): 4 lanes of partial sums, then the tail.
        const mv = f32x4.splat(mNew);
        let sumv = f32x4.splat(0);
        for (let t = 0; t < lim4; t += 4) {
          const e = exp4(f32x4.sub(v128.load(srow + (<usize>t << 2)), mv));
          v128.store(srow + (<usize>t << 2), e);
          sumv = f32x4.add(sumv, e);
        }
        let sum: f32 = hsum(sumv);
        for (let t = lim4; t < lim; t++) {
          const e = Mathf.exp(load<f32>(srow + (<usize>t << 2)) - mNew);
          store<f32>(srow + (<usize>t << 2), e);
          sum += e;
        }
        for (let t = lim; t < n; t++) store<f32>(srow + (<usize>t << 2), 0);
        store<f32>(mbuf + (<usize>r << 2), mNew);
        store<f32>(lbuf + (<usize>r << 2), load<f32>(lbuf + (<usize>r << 2)) * alpha + sum);
        if (alpha != 1) {
          const orow = obuf + <usize>r * <usize>dV * 4;
          const av = f32x4.splat(alpha);
          for (let e = 0; e < dV4; e += 4) v128.store(orow + (<usize>e << 2), f32x4.mul(v128.load(orow + (<usize>e << 2)), av));
          for (let e = dV4; e < dV; e++) store<f32>(orow + (<usize>e << 2), load<f32>(orow + (<usize>e << 2)) * alpha);
        }
      }
      // O[r] += Σ_t p[r][t] · v_t, tiles of 4 rows × 8 values, V = the first dV values of each key row.
      r = 0;
      for (; r + 4 <= R; r += 4) {
        const o0 = obuf + <usize>r * <usize>dV * 4;
        const ob = <usize>dV * 4;
        const s0 = sbuf + (<usize>(r * BLOCK) << 2);
        let e = 0;
        for (; e + 8 <= dV; e += 8) {
          const eo = <usize>e << 2;
          let c00 = v128.load(o0 + eo), c01 = v128.load(o0 + eo, 16);
          let c10 = v128.load(o0 + ob + eo), c11 = v128.load(o0 + ob + eo, 16);
          let c20 = v128.load(o0 + 2 * ob + eo), c21 = v128.load(o0 + 2 * ob + eo, 16);
          let c30 = v128.load(o0 + 3 * ob + eo), c31 = v128.load(o0 + 3 * ob + eo, 16);
          // Bumped pointers: the key's values (kstride apart) and the 4 rows' p (BLOCK floats apart).
          let vp = kp + eo, sp = s0;
          const send = s0 + (<usize>n << 2);
          while (sp < send) {
            const v0 = v128.load(vp), v1 = v128.load(vp, 16);
            const p0 = v128.load32_splat(sp), p1 = v128.load32_splat(sp, BLOCK * 4);
            const p2 = v128.load32_splat(sp, BLOCK * 8), p3 = v128.load32_splat(sp, BLOCK * 12);
            c00 = madd(p0, v0, c00); c01 = madd(p0, v1, c01);
            c10 = madd(p1, v0, c10); c11 = madd(p1, v1, c11);
            c20 = madd(p2, v0, c20); c21 = madd(p2, v1, c21);
            c30 = madd(p3, v0, c30); c31 = madd(p3, v1, c31);
            vp += kstride; sp += 4;
          }
          v128.store(o0 + eo, c00); v128.store(o0 + eo, c01, 16);
          v128.store(o0 + ob + eo, c10); v128.store(o0 + ob + eo, c11, 16);
          v128.store(o0 + 2 * ob + eo, c20); v128.store(o0 + 2 * ob + eo, c21, 16);
          v128.store(o0 + 3 * ob + eo, c30); v128.store(o0 + 3 * ob + eo, c31, 16);
        }
        for (; e < dV; e++) {
          for (let rr = 0; rr < 4; rr++) {
            let acc = load<f32>(o0 + <usize>rr * ob + (<usize>e << 2));
            for (let t = 0; t < n; t++) acc += load<f32>(s0 + (<usize>(rr * BLOCK + t) << 2)) * load<f32>(kp + <usize>t * kstride + (<usize>e << 2));
            store<f32>(o0 + <usize>rr * ob + (<usize>e << 2), acc);
          }
        }
      }
      // Leftover rows: 1 row × 16 values held in registers over the block's keys.
      for (; r < R; r++) {
        const orow = obuf + <usize>r * <usize>dV * 4;
        const srow = sbuf + (<usize>(r * BLOCK) << 2);
        let e = 0;
        for (; e + 16 <= dV; e += 16) {
          const eo = <usize>e << 2;
          let c0 = v128.load(orow + eo), c1 = v128.load(orow + eo, 16), c2 = v128.load(orow + eo, 32), c3 = v128.load(orow + eo, 48);
          let vp = kp + eo, sp = srow;
          const send = srow + (<usize>n << 2);
          while (sp < send) {
            const ps = v128.load32_splat(sp);
            c0 = madd(ps, v128.load(vp), c0);
            c1 = madd(ps, v128.load(vp, 16), c1);
            c2 = madd(ps, v128.load(vp, 32), c2);
            c3 = madd(ps, v128.load(vp, 48), c3);
            vp += kstride; sp += 4;
          }
          v128.store(orow + eo, c0); v128.store(orow + eo, c1, 16); v128.store(orow + eo, c2, 32); v128.store(orow + eo, c3, 48);
        }
        for (; e < dV; e++) {
          let acc = load<f32>(orow + (<usize>e << 2));
          for (let t = 0; t < n; t++) acc += load<f32>(srow + (<usize>t << 2)) * load<f32>(kp + <usize>t * kstride + (<usize>e << 2));
          store<f32>(orow + (<usize>e << 2), acc);
        }
      }
    }

    // Normalize and write out. No keys: O 0 and lse +inf (final) / −inf (partial, drops out of the combine).
    for (let r = 0; r < R; r++) {
      const l = load<f32>(lbuf + (<usize>r << 2));
      const m = load<f32>(mbuf + (<usize>r << 2));
      const s = (ra + r) / g, j = (ra + r) % g;
      const qh = h * g + j;
      let dst: usize, lsePtr: usize;
      if (isFinal) {
        dst = <usize>pi(p, P_OUT) + (<usize>(bi * sQ + s) * <usize>hQ + <usize>qh) * <usize>dV * 4;
        lsePtr = <usize>pi(p, P_LSE) + ((<usize>(bi * hQ + qh) * <usize>sQ + <usize>s) << 2);
      } else {
        dst = <usize>pi(p, P_OACC) + ((<usize>slot * <usize>hKv + <usize>h) * <usize>RU + <usize>(ra + r)) * <usize>dV * 4;
        lsePtr = <usize>pi(p, P_LSEACC) + (((<usize>slot * <usize>hKv + <usize>h) * <usize>RU + <usize>(ra + r)) << 2);
      }
      const orow = obuf + <usize>r * <usize>dV * 4;
      if (l == 0) {
        memory.fill(dst, 0, <usize>dV * 4);
        store<f32>(lsePtr, isFinal ? Infinity : -Infinity);
        continue;
      }
      const inv = <f32>1 / l;
      const iv = f32x4.splat(inv);
      for (let e = 0; e < dV4; e += 4) v128.store(dst + (<usize>e << 2), f32x4.mul(v128.load(orow + (<usize>e << 2)), iv));
      for (let e = dV4; e < dV; e++) store<f32>(dst + (<usize>e << 2), load<f32>(orow + (<usize>e << 2)) * inv);
      store<f32>(lsePtr, <f32>(Math.log(<f64>l) + <f64>m));
    }
    } // row tiles
  }
}

/**
 * flashMlaUnits over ranges of the unit table taken at run time: each participant takes range
 * k = counter++ (an i32 at `counter`, zeroed by the caller), units [bounds[k], bounds[k+1]) (bounds: i32
 * [parts + 1]), until none is left, so a slower core takes fewer ranges. Rows are independent: the
 * bits do not depend on who runs which range.
 */
export function flashMlaUnitRanges(p: usize, bounds: usize, parts: i32, counter: usize, scratch: usize): void {
  while (true) {
    const k = atomic.add<i32>(counter, 1);
    if (k >= parts) break;
    const u0 = load<i32>(bounds + <usize>k * 4), u1 = load<i32>(bounds + <usize>k * 4 + 4);
    if (u1 > u0) flashMlaUnits(p, u0, u1, scratch);
  }
}
