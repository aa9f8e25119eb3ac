// DeepEP's test semantics (tests/test_intranode.py, tests/test_low_latency.py of
// https://github.com/deepseek-ai/DeepEP) as one SPMD function every rank runs, on any Communicator.
// Expected values come from regenerating every rank's inputs (testing/data.ts), never from the code
// under test. Throws an AssertionError on the first mismatch; returns how many checks passed.
import assert from 'node:assert/strict';
import { bf16ToF32, f32ToBf16 } from '../../../tensor/dtypes.ts';
import { Buffer } from '../buffer.ts';
import type { Communicator } from '../comm.ts';
import { castToFp8, fp8ToF32, scaleCols } from '../fp8.ts';
import { f32ToTokens, tokensToF32, type Tokens } from '../tokens.ts';
import { calcDiff, randn, randomTopk, rng } from './data.ts';

export interface CheckParams {
  seed: number;
  /** Normal mode: tokens per rank, hidden, top-k, experts. */
  T: number;
  H: number;
  K: number;
  E: number;
  /** Low-latency mode: tokens per rank and maxTokensPerRank. */
  llT: number;
  llMaxT: number;
}

/** The plain reference for get_dispatch_layout: sets per token. */
function referenceLayout(idx: Int32Array, T: number, K: number, E: number, R: number) {
  const perRank = E / R;
  const perRankCount = new Array<number>(R).fill(0);
  const perExpert = new Array<number>(E).fill(0);
  const inRank: boolean[][] = [];
  for (let t = 0; t < T; t++) {
    const ranks = new Set<number>();
    for (let k = 0; k < K; k++) {
      const e = idx[t * K + k]!;
      if (e === -1) continue;
      perExpert[e]!++;
      ranks.add(Math.floor(e / perRank));
    }
    inRank.push(Array.from({ length: R }, (_, r) => ranks.has(r)));
    for (const r of ranks) perRankCount[r]!++;
  }
  return { perRankCount, perExpert, inRank };
}

function normalInputs(p: CheckParams, rank: number) {
  const rand = rng(p.seed * 7919 + rank);
  const x = randn(p.T * p.H, rand);
  const { idx, weights } = randomTopk(p.T, p.K, p.E, Math.floor(p.T / 4), rand);
  return { x, idx, weights };
}

function llInputs(p: CheckParams, rank: number) {
  // As test_low_latency.py: x = rank - 128 everywhere except the last 128 columns, which hold the token
  // index (so receivers can tell rows apart), then random -1 slots.
  const rand = rng(p.seed * 104729 + rank);
  const x = new Float32Array(p.llT * p.H).fill(rank - 128);
  for (let t = 0; t < p.llT; t++) for (let c = Math.max(0, p.H - 128); c < p.H; c++) x[t * p.H + c] = t;
  const { idx, weights } = randomTopk(p.llT, p.K, p.E, 10, rand);
  return { x, idx, weights };
}

/** With `sync`, the Buffer's blocking variants run instead (needs a SyncCommunicator). */
export async function runDeepEPChecks(comm: Communicator, p: CheckParams, sync = false): Promise<number> {
  const R = comm.size;
  const me = comm.rank;
  const perRank = p.E / R;
  const buf = new Buffer(comm);
  let checks = 0;
  const api = {
    dispatch: async (...a: Parameters<Buffer['dispatch']>) => (sync ? buf.dispatchSync(...a) : buf.dispatch(...a)),
    combine: async (...a: Parameters<Buffer['combine']>) => (sync ? buf.combineSync(...a) : buf.combine(...a)),
    llDispatch: async (...a: Parameters<Buffer['lowLatencyDispatch']>) => {
      if (!sync) return buf.lowLatencyDispatch(...a);
      const r = buf.lowLatencyDispatchSync(...a);
      return { ...r, hook: async () => r.hook() };
    },
    llCombine: async (...a: Parameters<Buffer['lowLatencyCombine']>) => {
      if (!sync) return buf.lowLatencyCombine(...a);
      const r = buf.lowLatencyCombineSync(...a);
      return { ...r, hook: async () => r.hook() };
    },
  };

  // ------------------------------------------------------------------ normal mode
  const inputs = Array.from({ length: R }, (_, r) => normalInputs(p, r));
  const mine = inputs[me]!;
  const layout = buf.getDispatchLayout(mine.idx, p.E, p.K);
  const ref = referenceLayout(mine.idx, p.T, p.K, p.E, R);
  assert.deepEqual([...layout.numTokensPerRank], ref.perRankCount, 'numTokensPerRank');
  assert.deepEqual([...layout.numTokensPerExpert], ref.perExpert, 'numTokensPerExpert');
  for (let t = 0; t < p.T; t++) for (let r = 0; r < R; r++) assert.equal(layout.isTokenInRank[t * R + r] === 1, ref.inRank[t]![r], `isTokenInRank[${t},${r}]`);
  checks += 3;

  // Receive counts against the all-gathered layouts ("all-reduce" in the original).
  const gatheredPerRank = await comm.allGatherInt32(layout.numTokensPerRank);
  const gatheredPerExpert = await comm.allGatherInt32(layout.numTokensPerExpert);

  for (const dtype of ['f32', 'bf16', 'fp8'] as const) {
    const asTokens = (x: Float32Array): Tokens => (dtype === 'fp8' ? { dtype, hidden: p.H, ...castToFp8(x, p.T, p.H) } : f32ToTokens(x, dtype, p.H));
    const sent = asTokens(mine.x);
    const res = await api.dispatch(sent, mine.idx, mine.weights, layout);
    const expectedRecv = gatheredPerRank.reduce((a, g) => a + g[me]!, 0);
    assert.equal(res.recvX.data.length / p.H, expectedRecv, `${dtype}: receive count`);
    for (let le = 0; le < perRank; le++) {
      const want = gatheredPerExpert.reduce((a, g) => a + g[me * perRank + le]!, 0);
      assert.equal(res.numRecvTokensPerExpert[le], want, `${dtype}: numRecvTokensPerExpert[${le}]`);
    }
    // Data ordered by source rank, then source token order; topk remapped; weights zeroed for -1.
    const recvF32 = tokensToF32(res.recvX);
    let row = 0;
    for (let s = 0; s < R; s++) {
      const src = inputs[s]!;
      const srcSent = asTokens(src.x);
      const srcF32 = tokensToF32(srcSent);
      for (let t = 0; t < p.T; t++) {
        let goes = false;
        for (let k = 0; k < p.K; k++) if (src.idx[t * p.K + k]! >= 0 && Math.floor(src.idx[t * p.K + k]! / perRank) === me) goes = true;
        if (!goes) continue;
        assert.equal(res.handle.recvSrcIdx[row], t, `${dtype}: row ${row} source index`);
        for (let c = 0; c < p.H; c++) {
          if (recvF32[row * p.H + c] !== srcF32[t * p.H + c]) assert.fail(`${dtype}: row ${row} (rank ${s} token ${t}) channel ${c}: ${recvF32[row * p.H + c]} != ${srcF32[t * p.H + c]}`);
        }
        for (let k = 0; k < p.K; k++) {
          const e = src.idx[t * p.K + k]!;
          const local = e >= 0 && Math.floor(e / perRank) === me;
          assert.equal(res.recvTopkIdx[row * p.K + k], local ? e - me * perRank : -1, `${dtype}: recvTopkIdx[${row},${k}]`);
          assert.equal(res.recvTopkWeights[row * p.K + k], local ? src.weights[t * p.K + k] : 0, `${dtype}: recvTopkWeights[${row},${k}]`);
        }
        row++;
      }
      assert.equal(res.handle.recvRankPrefix[s + 1], row, `${dtype}: rank prefix ${s}`);
    }
    assert.equal(row, expectedRecv);
    // Cached dispatch: new rows (x + 1) along the same routing arrive in the same order.
    const shifted = asTokens(mine.x.map((v) => v + 1));
    const cached = tokensToF32(sync ? buf.dispatchCachedSync(shifted, res.handle) : await buf.dispatchCached(shifted, res.handle));
    const expectShifted = new Float32Array(recvF32.length);
    row = 0;
    for (let s = 0; s < R; s++) {
      const srcF32 = tokensToF32(asTokens(inputs[s]!.x.map((v) => v + 1)));
      for (let i = res.handle.recvRankPrefix[s]!; i < res.handle.recvRankPrefix[s + 1]!; i++) {
        const t = res.handle.recvSrcIdx[i]!;
        expectShifted.set(srcF32.subarray(t * p.H, (t + 1) * p.H), i * p.H);
      }
    }
    assert.deepEqual(cached, expectShifted, `${dtype}: cached dispatch`);
    for (const e of res.recvTopkIdx) assert.ok(e >= -1 && e < perRank, 'recvTopkIdx range');
    checks += 5;

    if (dtype === 'fp8') {
      // FP8 payload within quantization error of the original x: |err| <= amax(block) / 28 (16/448).
      const S = scaleCols(p.H);
      const dq = fp8ToF32(sent.data as Uint8Array, (sent as { scales: Float32Array }).scales, p.T, p.H);
      for (let t = 0; t < p.T; t++) {
        for (let g = 0; g < S; g++) {
          let amax = 0;
          for (let c = g * 128; c < Math.min(p.H, g * 128 + 128); c++) amax = Math.max(amax, Math.abs(mine.x[t * p.H + c]!));
          for (let c = g * 128; c < Math.min(p.H, g * 128 + 128); c++) {
            assert.ok(Math.abs(dq[t * p.H + c]! - mine.x[t * p.H + c]!) <= amax / 28 + 1e-6, `fp8 quantization error at [${t},${c}]`);
          }
        }
      }
      checks++;
    }

    // combine(dispatch(x)) = x · (number of ranks that received the token); DeepEP feeds bf16 back.
    const back: Tokens = dtype === 'f32' ? res.recvX : f32ToTokens(recvF32, 'bf16', p.H);
    const combined = tokensToF32(await api.combine(back, res.handle));
    const sentF32 = tokensToF32(dtype === 'f32' ? sent : f32ToTokens(tokensToF32(sent), 'bf16', p.H));
    const want = new Float32Array(p.T * p.H);
    for (let t = 0; t < p.T; t++) {
      let n = 0;
      for (let r = 0; r < R; r++) n += layout.isTokenInRank[t * R + r]!;
      for (let c = 0; c < p.H; c++) want[t * p.H + c] = sentF32[t * p.H + c]! * n;
    }
    // As the original, +1 on both sides so all-zero rows (tokens sent nowhere) still count.
    const diff = calcDiff(combined.map((v) => v + 1), want.map((v) => v + 1));
    assert.ok(combined.every(Number.isFinite), `${dtype}: combine produced NaN/Inf`);
    assert.ok(diff < 5e-6, `${dtype}: combine calc_diff ${diff}`);
    if (dtype === 'f32') for (let i = 0; i < want.length; i++) assert.ok(Math.abs(combined[i]! - want[i]!) <= 1e-6 * Math.abs(want[i]!) + 1e-7, `f32 combine at ${i}`);
    checks += 2;
  }

  // ------------------------------------------------------------------ low-latency mode
  const ll = Array.from({ length: R }, (_, r) => llInputs(p, r));
  const llMine = ll[me]!;
  const xBf16 = f32ToTokens(llMine.x, 'bf16', p.H);
  for (const useFp8 of [true, false]) {
    for (const returnRecvHook of [false, true]) {
      const tag = `useFp8=${useFp8} hook=${returnRecvHook}`;
      const d = await api.llDispatch(xBf16, llMine.idx, p.llMaxT, p.E, { useFp8, returnRecvHook });
      if (returnRecvHook) {
        // Compute something unrelated while the transfer is in flight, then wait for it.
        let acc = 0;
        for (let i = 0; i < 20000; i++) acc += Math.sqrt(i);
        assert.ok(acc > 0);
        await d.hook();
      }
      const rowsPerExpert = p.llMaxT * R;
      const recvF32 = tokensToF32(d.recvX);
      for (let le = 0; le < perRank; le++) {
        const e = me * perRank + le;
        let want = 0;
        let sumRanges = 0;
        for (let s = 0; s < R; s++) {
          const expected: number[] = [];
          for (let pIdx = 0; pIdx < p.llT * p.K; pIdx++) if (ll[s]!.idx[pIdx] === e) expected.push(Math.floor(pIdx / p.K));
          want += expected.length;
          const begin = d.handle.layoutRange[(le * R + s) * 2]!;
          const count = d.handle.layoutRange[(le * R + s) * 2 + 1]!;
          assert.equal(count, expected.length, `${tag}: layoutRange count expert ${e} from rank ${s}`);
          sumRanges += count;
          for (let i = 0; i < count; i++) {
            const rowIdx = le * rowsPerExpert + begin + i;
            // The handle recovers each row's source token index.
            assert.equal(d.handle.srcInfo[rowIdx], expected[i], `${tag}: srcInfo expert ${e} row ${begin + i}`);
            const rowVals = recvF32.subarray(rowIdx * p.H, rowIdx * p.H + p.H);
            for (let c = 0; c < p.H; c++) {
              const wantV = c >= p.H - 128 ? expected[i]! : s - 128;
              // FP8 rows of a constant block come back as q·scale with the f32-rounded scale: within 1e-6.
              const tol = useFp8 ? 1e-6 * Math.abs(wantV) : 0;
              if (!(Math.abs(rowVals[c]! - wantV) <= tol)) assert.fail(`${tag}: expert ${e} row ${begin + i} channel ${c}: ${rowVals[c]} != ${wantV}`);
            }
          }
        }
        assert.equal(d.recvCount[le], want, `${tag}: recvCount[${le}]`);
        assert.equal(sumRanges, want, `${tag}: layout ranges sum`);
      }
      checks += 3;

      // Expert output = its (dequantized) input, sent back as bf16; combine weights it: x · Σw.
      const y = f32ToTokens(recvF32, 'bf16', p.H);
      const c = await api.llCombine(y, llMine.idx, llMine.weights, d.handle, { returnRecvHook });
      if (returnRecvHook) await c.hook();
      const want = new Float32Array(p.llT * p.H);
      for (let t = 0; t < p.llT; t++) {
        let sw = 0;
        for (let k = 0; k < p.K; k++) if (llMine.idx[t * p.K + k]! >= 0) sw += llMine.weights[t * p.K + k]!;
        for (let ch = 0; ch < p.H; ch++) want[t * p.H + ch] = bf16ToF32(f32ToBf16(llMine.x[t * p.H + ch]!)) * sw;
      }
      assert.ok(c.out.every(Number.isFinite), `${tag}: combine NaN`);
      const diff = calcDiff(c.out, want);
      assert.ok(diff < 1e-5, `${tag}: low-latency combine calc_diff ${diff}`);
      checks += 2;
    }
  }
  await comm.barrier('checks_done');
  return checks;
}
