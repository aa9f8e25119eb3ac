// DeepEP's `Buffer`: MoE all-to-all for expert parallelism, ported to TypeScript on a Communicator.
// Reference: https://github.com/deepseek-ai/DeepEP/blob/main/deep_ep/buffer.py (normal mode: dispatch /
// combine; low-latency mode: low_latency_dispatch / low_latency_combine with a receive hook).
//
// Conventions (as DeepEP): expert e lives on rank floor(e / (E/R)); topk id -1 means "no expert".
// Normal mode sends one copy of a token per destination *rank* (not per expert); received rows are
// ordered by source rank, then by source token order; topk ids arrive remapped to local ids (or -1,
// weight 0); combine is an UNWEIGHTED sum back at the source. Low-latency mode sends one message per
// (token, expert) pair into a masked per-expert layout [E/R, maxTok·R, H]; its combine is WEIGHTED
// (sum over k of w_k·y_k, skipping -1).
//
// Message layouts (all 4-byte words first, so typed views over a received message are aligned):
//   dispatch:      [n, K, dtype, H] srcIdx[n] topk[n·K] weights[n·K] scales[n·S] | rows[n·H]
//   combine:       [n, dtype, H, 0] | rows[n·H]
//   LL dispatch:   [dtype, H, m, E/R] count[E/R] srcIdx[m] scales[m·S] | rows[m·H]  (m = pairs, expert-major)
//   LL combine:    [dtype, H, m, 0] | rows[m·H]
import { decodeBf16 } from '../../tensor/dtypes.ts';
import { int32View, isSyncCommunicator, type Communicator, type SyncCommunicator } from './comm.ts';
import { DeepEPShapeError } from './errors.ts';
import { castToFp8, scaleCols } from './fp8.ts';
import { checkTopk, getDispatchLayout, type DispatchLayout } from './layout.ts';
import {
  allocTokens, CODE_DTYPE, f32ArrayToBf16, dataView, DTYPE_CODE, elementBytes, numRows, rowBytes, scalesPerRow, tokensToF32,
  type TokenDType, type Tokens,
} from './tokens.ts';

export interface DispatchHandle {
  readonly numTokens: number;
  readonly hidden: number;
  readonly numTopk: number;
  /** [R] source token indices sent to rank r, in send order. */
  readonly sendIdx: readonly Int32Array[];
  /** [R] rows received from each source rank. */
  readonly recvCountPerRank: Int32Array;
  /** [R + 1] prefix of recvCountPerRank: rows from rank s are [prefix[s], prefix[s+1]). */
  readonly recvRankPrefix: Int32Array;
  /** [numRecv] index of each received row in its source rank's x. */
  readonly recvSrcIdx: Int32Array;
}

export interface DispatchResult {
  recvX: Tokens;
  /** [numRecv, K] local expert ids (0..E/R-1) or -1. */
  recvTopkIdx: Int32Array;
  /** [numRecv, K] weights; 0 where the id is -1. */
  recvTopkWeights: Float32Array;
  /** [E/R] received (row, k) pairs per local expert. */
  numRecvTokensPerExpert: Int32Array;
  handle: DispatchHandle;
}

export interface LowLatencyHandle {
  readonly numTokens: number;
  readonly hidden: number;
  readonly numExperts: number;
  readonly maxTokensPerRank: number;
  /** [E/R, maxTok·R] source token index of each received row (valid for the first recvCount[e] rows). */
  readonly srcInfo: Int32Array;
  /** [E/R, R, 2] (begin, count) of the rows expert e received from source rank r. */
  readonly layoutRange: Int32Array;
  /** [E/R] valid rows per local expert (the same array as the dispatch result's recvCount). */
  readonly recvCount: Int32Array;
}

export interface LowLatencyDispatchResult {
  /** [E/R, maxTok·R, H] (FP8 with scales [E/R, maxTok·R, ceil(H/128)], or the input dtype). */
  recvX: Tokens;
  /** [E/R] valid rows per local expert. Filled once `hook()` resolves. */
  recvCount: Int32Array;
  handle: LowLatencyHandle;
  /** Waits for the data to arrive (resolves at once when returnRecvHook was false). */
  hook(): Promise<void>;
}

export interface LowLatencyCombineResult {
  /** [T, H] f32: sum over k of w[t,k]·y. Complete once `hook()` resolves. */
  out: Float32Array;
  hook(): Promise<void>;
}

export interface LowLatencyOptions {
  /** Cast to FP8 (1x128 scales) before sending (default true, as DeepEP). */
  useFp8?: boolean;
  /** Only start the transfer; the caller awaits `hook()` later (default false). */
  returnRecvHook?: boolean;
}

interface LowLatencySet {
  key: string;
  recvX: Tokens;
  recvCount: Int32Array;
  srcInfo: Int32Array;
  layoutRange: Int32Array;
}

const HEADER_WORDS = 4;

export class Buffer {
  /** Two receive buffer sets used alternately, as DeepEP's low-latency mode: at most 2 live results. */
  readonly #llSets: (LowLatencySet | null)[] = [null, null];
  #llParity = 0;

  constructor(readonly comm: Communicator) {}

  get rank(): number {
    return this.comm.rank;
  }

  get numRanks(): number {
    return this.comm.size;
  }

  /** topkIdx [T, numTopk] Int32 (-1 = none). A local computation (no communication). */
  getDispatchLayout(topkIdx: Int32Array, numExperts: number, numTopk: number): DispatchLayout {
    if (!Number.isInteger(numTopk) || numTopk <= 0 || topkIdx.length % numTopk !== 0) {
      throw new DeepEPShapeError('get_dispatch_layout', 'numTopk', `${numTopk} does not divide topkIdx length ${topkIdx.length}`);
    }
    return getDispatchLayout(topkIdx, topkIdx.length / numTopk, numExperts, this.comm.size);
  }

  /** Normal-mode dispatch. x [T, H]; topkIdx / topkWeights [T, K]; layout from getDispatchLayout. */
  async dispatch(x: Tokens, topkIdx: Int32Array, topkWeights: Float32Array, layout: DispatchLayout): Promise<DispatchResult> {
    const p = this.#planDispatch(x, topkIdx, topkWeights, layout);
    return p.finish(await this.#startAsync(p.parts, 'dispatch')());
  }

  /** dispatch() for a thread that must not yield (needs a SyncCommunicator). */
  dispatchSync(x: Tokens, topkIdx: Int32Array, topkWeights: Float32Array, layout: DispatchLayout): DispatchResult {
    const p = this.#planDispatch(x, topkIdx, topkWeights, layout);
    return p.finish(this.#startSync(p.parts, 'dispatch')());
  }

  #planDispatch(x: Tokens, topkIdx: Int32Array, topkWeights: Float32Array, layout: DispatchLayout): Plan<DispatchResult> {
    const op = 'dispatch';
    const R = this.comm.size;
    const T = numRows(x, op);
    if (layout.numTokens !== T || layout.numRanks !== R) throw new DeepEPShapeError(op, 'layout', `is for ${layout.numTokens} tokens on ${layout.numRanks} ranks, x has ${T} tokens on ${R}`);
    const E = layout.numExperts;
    const K = checkTopk(op, topkIdx, T, E);
    if (topkWeights.length !== topkIdx.length) throw new DeepEPShapeError(op, 'topkWeights', `length ${topkWeights.length}, expected ${topkIdx.length}`);
    const perRank = E / R;
    const H = x.hidden;
    const S = scalesPerRow(x.dtype, H);
    const parts: Uint8Array[][] = [];
    const sendIdx: Int32Array[] = [];
    for (let r = 0; r < R; r++) {
      const n = layout.numTokensPerRank[r]!;
      const idx = new Int32Array(n);
      for (let t = 0, i = 0; t < T; t++) if (layout.isTokenInRank[t * R + r]) idx[i++] = t;
      sendIdx.push(idx);
      const meta = new ArrayBuffer((HEADER_WORDS + n + 2 * n * K + n * S) * 4);
      const mi = new Int32Array(meta);
      const mf = new Float32Array(meta);
      mi.set([n, K, DTYPE_CODE[x.dtype], H]);
      mi.set(idx, HEADER_WORDS);
      const oTopk = HEADER_WORDS + n;
      const oW = oTopk + n * K;
      const oS = oW + n * K;
      const lo = r * perRank;
      for (let i = 0; i < n; i++) {
        const t = idx[i]!;
        for (let k = 0; k < K; k++) {
          const e = topkIdx[t * K + k]!;
          const local = e >= lo && e < lo + perRank;
          mi[oTopk + i * K + k] = local ? e - lo : -1;
          mf[oW + i * K + k] = local ? topkWeights[t * K + k]! : 0;
        }
        if (x.dtype === 'fp8') mf.set(x.scales.subarray(t * S, t * S + S), oS + i * S);
      }
      parts.push([new Uint8Array(meta), ...rowRuns(x, idx)]);
    }
    return { parts, finish: (msgs) => this.#unpackDispatch(msgs, x, K, S, perRank, sendIdx) };
  }

  /**
   * Cached dispatch (DeepEP's dispatch with a `handle`): new rows x [T, H] sent exactly where the dispatch
   * that made `handle` sent its tokens; returns the received rows in the same order as that dispatch.
   */
  async dispatchCached(x: Tokens, handle: DispatchHandle): Promise<Tokens> {
    const p = this.#planCached(x, handle);
    return p.finish(await this.#startAsync(p.parts, 'cached_dispatch')());
  }

  dispatchCachedSync(x: Tokens, handle: DispatchHandle): Tokens {
    const p = this.#planCached(x, handle);
    return p.finish(this.#startSync(p.parts, 'cached_dispatch')());
  }

  #planCached(x: Tokens, handle: DispatchHandle): Plan<Tokens> {
    const op = 'cached_dispatch';
    const T = numRows(x, op);
    if (T !== handle.numTokens || x.hidden !== handle.hidden) throw new DeepEPShapeError(op, 'x', `is [${T}, ${x.hidden}], the handle is for [${handle.numTokens}, ${handle.hidden}]`);
    const S = scalesPerRow(x.dtype, x.hidden);
    const parts = handle.sendIdx.map((idx) => {
      const n = idx.length;
      const meta = new ArrayBuffer((HEADER_WORDS + n + n * S) * 4);
      const mi = new Int32Array(meta);
      mi.set([n, 0, DTYPE_CODE[x.dtype], x.hidden]);
      mi.set(idx, HEADER_WORDS);
      if (x.dtype === 'fp8') {
        const mf = new Float32Array(meta);
        for (let i = 0; i < n; i++) mf.set(x.scales.subarray(idx[i]! * S, idx[i]! * S + S), HEADER_WORDS + n + i * S);
      }
      return [new Uint8Array(meta), ...rowRuns(x, idx)];
    });
    return {
      parts,
      finish: (msgs) => {
        const r = this.#unpackDispatch(msgs, x, 0, S, 0, [...handle.sendIdx]);
        const R = this.comm.size;
        for (let s = 0; s < R; s++) {
          if (r.handle.recvCountPerRank[s] !== handle.recvCountPerRank[s]) {
            throw new DeepEPShapeError(op, 'handle', `rank ${s} sent ${r.handle.recvCountPerRank[s]} rows, the handle expects ${handle.recvCountPerRank[s]}`);
          }
        }
        return r.recvX;
      },
    };
  }

  #unpackDispatch(msgs: Uint8Array[], x: Tokens, ownK: number, S: number, perRank: number, sendIdx: Int32Array[]): DispatchResult {
    const op = 'dispatch';
    const R = this.comm.size;
    const H = x.hidden;
    const T = x.data.length / H;
    const counts = new Int32Array(R);
    const prefix = new Int32Array(R + 1);
    // A rank without tokens has no K of its own (T = 0): take it from the senders, who must agree.
    let K = T > 0 ? ownK : -1;
    msgs.forEach((m, s) => {
      const h = int32View(m, 0, HEADER_WORDS);
      if (h[0]! > 0) {
        if (K < 0) K = h[1]!;
        else if (h[1] !== K) throw new DeepEPShapeError(op, 'topk', `rank ${s} sent K=${h[1]}, expected K=${K}`);
      }
      if (CODE_DTYPE[h[2]!] !== x.dtype || h[3] !== H) throw new DeepEPShapeError(op, 'x', `rank ${s} sent ${CODE_DTYPE[h[2]!]}[${h[3]}], this rank has ${x.dtype}[${H}]`);
      counts[s] = h[0]!;
      prefix[s + 1] = prefix[s]! + h[0]!;
    });
    if (K < 0) K = 0;
    const total = prefix[R]!;
    const recvX = allocTokens(x.dtype, H, total);
    const recvTopkIdx = new Int32Array(total * K);
    const recvTopkWeights = new Float32Array(total * K);
    const recvSrcIdx = new Int32Array(total);
    const numRecvTokensPerExpert = new Int32Array(perRank);
    const eb = elementBytes(x.dtype);
    msgs.forEach((m, s) => {
      const n = counts[s]!;
      if (n === 0) return;
      const base = prefix[s]!;
      const words = HEADER_WORDS + n + 2 * n * K + n * S;
      const w = int32View(m, 0, words);
      recvSrcIdx.set(w.subarray(HEADER_WORDS, HEADER_WORDS + n), base);
      const topk = w.subarray(HEADER_WORDS + n, HEADER_WORDS + n + n * K);
      recvTopkIdx.set(topk, base * K);
      recvTopkWeights.set(new Float32Array(w.buffer, w.byteOffset + (HEADER_WORDS + n + n * K) * 4, n * K), base * K);
      for (const e of topk) if (e >= 0) numRecvTokensPerExpert[e]!++;
      if (recvX.dtype === 'fp8') recvX.scales.set(new Float32Array(w.buffer, w.byteOffset + (HEADER_WORDS + n + 2 * n * K) * 4, n * S), base * S);
      const rows = dataView(x.dtype, m, words * 4, n * H);
      if (m.byteLength !== words * 4 + n * H * eb) throw new DeepEPShapeError(op, 'message', `rank ${s} sent ${m.byteLength} bytes, expected ${words * 4 + n * H * eb}`);
      (recvX.data as Uint8Array).set(rows as Uint8Array, base * H);
    });
    const handle: DispatchHandle = { numTokens: T, hidden: H, numTopk: K, sendIdx, recvCountPerRank: counts, recvRankPrefix: prefix, recvSrcIdx };
    return { recvX, recvTopkIdx, recvTopkWeights, numRecvTokensPerExpert, handle };
  }

  /**
   * Normal-mode combine: x [numRecv, H] (f32 or bf16, rows in dispatch's receive order) goes back to the
   * source ranks, where the rows of one token are SUMMED without weights (in f32, in rank order).
   * Returns [T, H] in x's dtype.
   */
  async combine(x: Tokens, handle: DispatchHandle): Promise<Tokens> {
    const p = this.#planCombine(x, handle);
    return p.finish(await this.#startAsync(p.parts, 'combine')());
  }

  /** combine() for a thread that must not yield (needs a SyncCommunicator). */
  combineSync(x: Tokens, handle: DispatchHandle): Tokens {
    const p = this.#planCombine(x, handle);
    return p.finish(this.#startSync(p.parts, 'combine')());
  }

  #planCombine(x: Tokens, handle: DispatchHandle): Plan<Tokens> {
    const op = 'combine';
    const R = this.comm.size;
    if (x.dtype === 'fp8') throw new DeepEPShapeError(op, 'x.dtype', 'combine takes f32 or bf16 rows, as DeepEP (bf16)');
    const rows = numRows(x, op);
    const prefix = handle.recvRankPrefix;
    if (rows !== prefix[R]) throw new DeepEPShapeError(op, 'x', `has ${rows} rows, the handle received ${prefix[R]}`);
    const H = x.hidden;
    const parts: Uint8Array[][] = [];
    for (let s = 0; s < R; s++) {
      const n = prefix[s + 1]! - prefix[s]!;
      parts.push([new Uint8Array(new Int32Array([n, DTYPE_CODE[x.dtype], H, 0]).buffer), rowBytes(x, prefix[s]!, prefix[s + 1]!)]);
    }
    return { parts, finish: (msgs) => this.#unpackCombine(msgs, x, handle) };
  }

  #unpackCombine(msgs: Uint8Array[], x: Tokens, handle: DispatchHandle): Tokens {
    const op = 'combine';
    const H = x.hidden;
    const T = handle.numTokens;
    const out = new Float32Array(T * H);
    const row = new Float32Array(H);
    msgs.forEach((m, r) => {
      const h = int32View(m, 0, HEADER_WORDS);
      const idx = handle.sendIdx[r]!;
      if (h[0] !== idx.length || CODE_DTYPE[h[1]!] !== x.dtype || h[2] !== H) {
        throw new DeepEPShapeError(op, 'message', `rank ${r} returned ${h[0]} ${CODE_DTYPE[h[1]!]}[${h[2]}] rows, expected ${idx.length} ${x.dtype}[${H}]`);
      }
      const v = dataView(x.dtype, m, HEADER_WORDS * 4, idx.length * H);
      for (let i = 0; i < idx.length; i++) {
        const src = x.dtype === 'f32' ? (v as Float32Array).subarray(i * H, (i + 1) * H) : bf16RowToF32(v as Uint16Array, i * H, row);
        addScaled(out, idx[i]! * H, src, 1);
      }
    });
    if (x.dtype === 'f32') return { dtype: 'f32', hidden: H, data: out };
    return { dtype: 'bf16', hidden: H, data: f32ArrayToBf16(out) };
  }

  #llSet(dtype: TokenDType, hidden: number, localExperts: number, rowsPerExpert: number): LowLatencySet {
    const key = `${dtype}:${hidden}:${localExperts}:${rowsPerExpert}:${this.comm.size}`;
    const p = this.#llParity;
    this.#llParity ^= 1;
    const cur = this.#llSets[p];
    if (cur && cur.key === key) return cur;
    const set: LowLatencySet = {
      key,
      recvX: allocTokens(dtype, hidden, localExperts * rowsPerExpert),
      recvCount: new Int32Array(localExperts),
      srcInfo: new Int32Array(localExperts * rowsPerExpert),
      layoutRange: new Int32Array(localExperts * this.comm.size * 2),
    };
    this.#llSets[p] = set;
    return set;
  }

  /**
   * Low-latency dispatch. x [T, H] bf16 or f32 with T <= maxTokensPerRank; topkIdx [T, K].
   * Every (token, expert) pair is one row at the expert's rank, in [E/R, maxTok·R, H]; rows of local expert
   * e are ordered by source rank, then source token. The receive buffers alternate between two sets, so a
   * result stays valid until two more low-latency dispatches have been issued.
   */
  async lowLatencyDispatch(x: Tokens, topkIdx: Int32Array, maxTokensPerRank: number, numExperts: number, opts: LowLatencyOptions = {}): Promise<LowLatencyDispatchResult> {
    const p = this.#planLowLatencyDispatch(x, topkIdx, maxTokensPerRank, numExperts, opts);
    // Sends start before the first await: with a receive hook the caller computes right after this.
    const wait = this.#startAsync(p.parts, 'low_latency_dispatch');
    const done = wait().then(p.finish);
    if (!opts.returnRecvHook) await done;
    else done.catch(() => undefined); // surfaced through hook(); never an unhandled rejection
    return { ...p.result, hook: () => done };
  }

  /** lowLatencyDispatch() for a thread that must not yield; hook() blocks until the data is in. */
  lowLatencyDispatchSync(x: Tokens, topkIdx: Int32Array, maxTokensPerRank: number, numExperts: number, opts: LowLatencyOptions = {}): LowLatencySyncResult<LowLatencyDispatchResult> {
    const p = this.#planLowLatencyDispatch(x, topkIdx, maxTokensPerRank, numExperts, opts);
    const hook = once(this.#startSync(p.parts, 'low_latency_dispatch'), p.finish);
    if (!opts.returnRecvHook) hook();
    return { ...p.result, hook };
  }

  #planLowLatencyDispatch(x: Tokens, topkIdx: Int32Array, maxTokensPerRank: number, numExperts: number, opts: LowLatencyOptions): Plan<void> & { result: Omit<LowLatencyDispatchResult, 'hook'> } {
    const op = 'low_latency_dispatch';
    const R = this.comm.size;
    const T = numRows(x, op);
    if (x.dtype === 'fp8') throw new DeepEPShapeError(op, 'x.dtype', 'pass bf16 or f32; the FP8 cast happens inside (useFp8)');
    if (!Number.isInteger(numExperts) || numExperts % R !== 0) throw new DeepEPShapeError(op, 'numExperts', `${numExperts} experts do not split over ${R} ranks`);
    if (T > maxTokensPerRank) throw new DeepEPShapeError(op, 'x', `${T} tokens exceed maxTokensPerRank ${maxTokensPerRank}`);
    const K = checkTopk(op, topkIdx, T, numExperts);
    const useFp8 = opts.useFp8 ?? true;
    const H = x.hidden;
    const perRank = numExperts / R;
    const rowsPerExpert = maxTokensPerRank * R;
    const wire: TokenDType = useFp8 ? 'fp8' : x.dtype;
    const S = scalesPerRow(wire, H);
    const payload: Tokens = useFp8 ? { dtype: 'fp8', hidden: H, ...castToFp8(tokensToF32(x), T, H) } : x;
    const buckets = expertBuckets(topkIdx, T, K, numExperts);
    const set = this.#llSet(wire, H, perRank, rowsPerExpert);
    const handle: LowLatencyHandle = {
      numTokens: T, hidden: H, numExperts, maxTokensPerRank,
      srcInfo: set.srcInfo, layoutRange: set.layoutRange, recvCount: set.recvCount,
    };

    const allParts: Uint8Array[][] = [];
    for (let r = 0; r < R; r++) {
      let m = 0;
      for (let le = 0; le < perRank; le++) m += buckets[r * perRank + le]!.length;
      const meta = new ArrayBuffer((HEADER_WORDS + perRank + m + m * S) * 4);
      const mi = new Int32Array(meta);
      const mf = new Float32Array(meta);
      mi.set([DTYPE_CODE[wire], H, m, perRank]);
      const parts: Uint8Array[] = [new Uint8Array(meta)];
      let j = 0;
      for (let le = 0; le < perRank; le++) {
        const b = buckets[r * perRank + le]!;
        mi[HEADER_WORDS + le] = b.length;
        for (const pair of b) {
          const t = (pair / K) | 0;
          mi[HEADER_WORDS + perRank + j] = t;
          if (payload.dtype === 'fp8') mf.set(payload.scales.subarray(t * S, t * S + S), HEADER_WORDS + perRank + m + j * S);
          parts.push(rowBytes(payload, t, t + 1));
          j++;
        }
      }
      allParts.push(parts);
    }
    const finish = (msgs: Uint8Array[]): void => {
      const { recvX, recvCount, srcInfo, layoutRange } = set;
      recvCount.fill(0);
      const eb = elementBytes(wire);
      msgs.forEach((msg, s) => {
        const h = int32View(msg, 0, HEADER_WORDS);
        const m = h[2]!;
        if (CODE_DTYPE[h[0]!] !== wire || h[1] !== H || h[3] !== perRank) {
          throw new DeepEPShapeError(op, 'message', `rank ${s} sent ${CODE_DTYPE[h[0]!]}[${h[1]}] for ${h[3]} local experts, expected ${wire}[${H}] for ${perRank}`);
        }
        const words = HEADER_WORDS + perRank + m + m * S;
        const w = int32View(msg, 0, words);
        const rows = dataView(wire, msg, words * 4, m * H) as Uint8Array;
        const scales = new Float32Array(w.buffer, w.byteOffset + (HEADER_WORDS + perRank + m) * 4, m * S);
        let j = 0;
        for (let le = 0; le < perRank; le++) {
          const c = w[HEADER_WORDS + le]!;
          if (c > maxTokensPerRank) throw new DeepEPShapeError(op, 'message', `rank ${s} sent ${c} rows for local expert ${le}, more than maxTokensPerRank ${maxTokensPerRank}`);
          const begin = recvCount[le]!;
          layoutRange[(le * R + s) * 2] = begin;
          layoutRange[(le * R + s) * 2 + 1] = c;
          const row0 = le * rowsPerExpert + begin;
          srcInfo.set(w.subarray(HEADER_WORDS + perRank + j, HEADER_WORDS + perRank + j + c), row0);
          (recvX.data as Uint8Array).set(rows.subarray(j * H, (j + c) * H), row0 * H);
          if (recvX.dtype === 'fp8') recvX.scales.set(scales.subarray(j * S, (j + c) * S), row0 * S);
          recvCount[le] = begin + c;
          j += c;
        }
        if (msg.byteLength !== words * 4 + m * H * eb) throw new DeepEPShapeError(op, 'message', `rank ${s} sent ${msg.byteLength} bytes, expected ${words * 4 + m * H * eb}`);
      });
    };
    return { parts: allParts, finish, result: { recvX: set.recvX, recvCount: set.recvCount, handle } };
  }

  /**
   * Low-latency combine. x [E/R, maxTok·R, H] (bf16 or f32) holds each received row's expert output at
   * the place dispatch put the row; topkIdx / topkWeights [T, K] are this rank's routing for the dispatch
   * that produced `handle`. Returns out [T, H] = sum over k of w[t,k]·y(t,k), summed in k order.
   */
  async lowLatencyCombine(x: Tokens, topkIdx: Int32Array, topkWeights: Float32Array, handle: LowLatencyHandle, opts: { returnRecvHook?: boolean } = {}): Promise<LowLatencyCombineResult> {
    const p = this.#planLowLatencyCombine(x, topkIdx, topkWeights, handle);
    const done = this.#startAsync(p.parts, 'low_latency_combine')().then(p.finish);
    if (!opts.returnRecvHook) await done;
    else done.catch(() => undefined);
    return { out: p.out, hook: () => done };
  }

  /** lowLatencyCombine() for a thread that must not yield; hook() blocks until the sums are complete. */
  lowLatencyCombineSync(x: Tokens, topkIdx: Int32Array, topkWeights: Float32Array, handle: LowLatencyHandle, opts: { returnRecvHook?: boolean } = {}): LowLatencySyncResult<LowLatencyCombineResult> {
    const p = this.#planLowLatencyCombine(x, topkIdx, topkWeights, handle);
    const hook = once(this.#startSync(p.parts, 'low_latency_combine'), p.finish);
    if (!opts.returnRecvHook) hook();
    return { out: p.out, hook };
  }

  #planLowLatencyCombine(x: Tokens, topkIdx: Int32Array, topkWeights: Float32Array, handle: LowLatencyHandle): Plan<void> & { out: Float32Array } {
    const op = 'low_latency_combine';
    const R = this.comm.size;
    const { numExperts, maxTokensPerRank, numTokens: T, hidden: H } = handle;
    const perRank = numExperts / R;
    const rowsPerExpert = maxTokensPerRank * R;
    if (x.dtype === 'fp8') throw new DeepEPShapeError(op, 'x.dtype', 'combine sends bf16 or f32 rows');
    if (x.hidden !== H || numRows(x, op) !== perRank * rowsPerExpert) throw new DeepEPShapeError(op, 'x', `expected [${perRank}, ${rowsPerExpert}, ${H}]`);
    const K = checkTopk(op, topkIdx, T, numExperts);
    if (topkWeights.length !== topkIdx.length) throw new DeepEPShapeError(op, 'topkWeights', `length ${topkWeights.length}, expected ${topkIdx.length}`);
    const allParts: Uint8Array[][] = [];
    for (let s = 0; s < R; s++) {
      let m = 0;
      const parts: Uint8Array[] = [];
      for (let le = 0; le < perRank; le++) {
        const begin = handle.layoutRange[(le * R + s) * 2]!;
        const c = handle.layoutRange[(le * R + s) * 2 + 1]!;
        if (c > 0) parts.push(rowBytes(x, le * rowsPerExpert + begin, le * rowsPerExpert + begin + c));
        m += c;
      }
      parts.unshift(new Uint8Array(new Int32Array([DTYPE_CODE[x.dtype], H, m, 0]).buffer));
      allParts.push(parts);
    }
    const out = new Float32Array(T * H);
    const finish = (msgs: Uint8Array[]): void => {
      // Row of each (t, k) pair inside its rank's message, in dispatch's expert-major order.
      const buckets = expertBuckets(topkIdx, T, K, numExperts);
      const pairMsg = new Int32Array(T * K).fill(-1);
      const pairRow = new Int32Array(T * K);
      const views: (Float32Array | Uint16Array)[] = [];
      for (let r = 0; r < R; r++) {
        const h = int32View(msgs[r]!, 0, HEADER_WORDS);
        let j = 0;
        for (let le = 0; le < perRank; le++) {
          for (const pair of buckets[r * perRank + le]!) {
            pairMsg[pair] = r;
            pairRow[pair] = j++;
          }
        }
        if (CODE_DTYPE[h[0]!] !== x.dtype || h[1] !== H || h[2] !== j) {
          throw new DeepEPShapeError(op, 'message', `rank ${r} returned ${h[2]} ${CODE_DTYPE[h[0]!]}[${h[1]}] rows, expected ${j} ${x.dtype}[${H}]: topkIdx differs from the dispatch's?`);
        }
        views.push(dataView(x.dtype, msgs[r]!, HEADER_WORDS * 4, j * H) as Float32Array | Uint16Array);
      }
      const row = new Float32Array(H);
      for (let t = 0; t < T; t++) {
        for (let k = 0; k < K; k++) {
          const p = t * K + k;
          if (pairMsg[p]! < 0) continue;
          const v = views[pairMsg[p]!]!;
          const r0 = pairRow[p]! * H;
          const src = x.dtype === 'f32' ? (v as Float32Array).subarray(r0, r0 + H) : bf16RowToF32(v as Uint16Array, r0, row);
          addScaled(out, t * H, src, topkWeights[p]!);
        }
      }
    };
    return { parts: allParts, finish, out };
  }

  /**
   * Starts an all-to-all of parts[d] -> rank d under a fresh tag: every send is issued before this
   * returns (rotated order rank+1, rank+2, ... so that not everybody writes to rank 0 first).
   */
  #startAsync(parts: Uint8Array[][], op: string): () => Promise<Uint8Array[]> {
    const R = this.comm.size;
    const tag = this.comm.nextTag();
    const arrived = this.comm.recvAll(Array.from({ length: R }, (_, i) => i), tag, op);
    const sends: Promise<void>[] = [];
    for (let i = 1; i <= R; i++) {
      const d = (this.rank + i) % R;
      sends.push(this.comm.send(d, tag, parts[d]!, op));
    }
    const both = Promise.all([arrived, Promise.all(sends)]).then(([msgs]) => msgs);
    both.catch(() => undefined);
    return () => both;
  }

  #startSync(parts: Uint8Array[][], op: string): () => Uint8Array[] {
    const comm = this.#syncComm(op);
    const R = comm.size;
    const tag = comm.nextTag();
    for (let i = 1; i <= R; i++) {
      const d = (this.rank + i) % R;
      comm.isend(d, tag, parts[d]!, op);
    }
    return () => comm.waitAll(Array.from({ length: R }, (_, i) => i), tag, op);
  }

  #syncComm(op: string): SyncCommunicator {
    if (!isSyncCommunicator(this.comm)) throw new DeepEPShapeError(op, 'comm', 'the synchronous API needs a SyncCommunicator (SyncThreadCommunicator)');
    return this.comm;
  }
}

interface Plan<T> {
  /** parts[d]: the message for rank d. */
  parts: Uint8Array[][];
  finish(msgs: Uint8Array[]): T;
}

/** A synchronous receive hook: the first call blocks until the data is in; later calls return at once. */
export type LowLatencySyncResult<R extends { hook(): Promise<void> }> = Omit<R, 'hook'> & { hook(): void };

function once(wait: () => Uint8Array[], finish: (m: Uint8Array[]) => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    finish(wait());
    done = true;
  };
}

/** Rows idx (ascending) of x as views, one per run of consecutive tokens (no gather copy). */
function rowRuns(x: Tokens, idx: Int32Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < idx.length;) {
    let j = i + 1;
    while (j < idx.length && idx[j] === idx[j - 1]! + 1) j++;
    out.push(rowBytes(x, idx[i]!, idx[j - 1]! + 1));
    i = j;
  }
  return out;
}

/** out[o..o+n) += w · src (f32 accumulation); monomorphic so the loop stays fast. */
function addScaled(out: Float32Array, o: number, src: Float32Array, w: number): void {
  const n = src.length;
  if (w === 1) for (let c = 0; c < n; c++) out[o + c] += src[c]!;
  else for (let c = 0; c < n; c++) out[o + c] += w * src[c]!;
}

/** bf16 bits src[off..off+row.length) -> row (f32 bits = u16 << 16, written through a Uint32 view). */
function bf16RowToF32(src: Uint16Array, off: number, row: Float32Array): Float32Array {
  decodeBf16(src.subarray(off, off + row.length), row as Float32Array<ArrayBuffer>);
  return row;
}

/** bucket[e] = pair indices t·K + k routed to expert e, in increasing order (token-major). */
function expertBuckets(topkIdx: Int32Array, T: number, K: number, E: number): number[][] {
  const b: number[][] = Array.from({ length: E }, () => []);
  for (let p = 0; p < T * K; p++) {
    const e = topkIdx[p]!;
    if (e >= 0) b[e]!.push(p);
  }
  return b;
}

/** Bytes of one FP8 row with its scales (for byte accounting). */
export function fp8RowBytes(hidden: number): number {
  return hidden + 4 * scaleCols(hidden);
}
