// MTP drafting for a runner (speculative decoding), written once for the CPU and the GPU runner: after a
// forward and its verification, the MTP module runs over each request's valid positions of that forward
// (their final hidden states [T, H] and the next tokens) in one varlen batch, writing its own cache; each
// request's first draft is the argmax of its last position's draft logits, and further drafts chain the
// module on its own output hidden state, one position further each time (DeepSeek-V3 §2.2; vLLM's
// deepseek_mtp proposer drafts the argmax too). A coroutine: it yields each MTP step and receives its
// output, so the CPU runner drives it synchronously and the GPU runner with awaits.
import type { ForwardBatch, MtpOutput } from '../model/deepseek.ts';
import type { DraftRequest, RunnerBatch } from './contracts.ts';

/** One MTP module step the loop asks for; logitRows as in ForwardOptions (absent: one row per sequence). */
export interface MtpCall {
  batch: ForwardBatch;
  hidden: Float32Array;
  logitRows?: number[];
}

/** The drafts of each request, given the last forward's batch and final hidden states [T, H]. */
export function* draftLoop(last: { batch: RunnerBatch; hidden: Float32Array }, reqs: readonly DraftRequest[], H: number, V: number): Generator<MtpCall, number[][], MtpOutput> {
  const starts: number[] = [];
  let o = 0;
  for (const s of last.batch.seqs) { starts.push(o); o += s.numNew; }
  let T = 0;
  for (const r of reqs) {
    const s = last.batch.seqs[r.index];
    if (!s || r.numValid < 1 || r.numValid > s.numNew || r.nextTokens.length !== r.numValid) throw new RangeError(`draft: bad request for sequence ${r.index}`);
    T += r.numValid;
  }
  const tokens = new Int32Array(T);
  const hidden = new Float32Array(T * H);
  o = 0;
  for (const r of reqs) {
    tokens.set(r.nextTokens, o);
    hidden.set(last.hidden.subarray(starts[r.index]! * H, (starts[r.index]! + r.numValid) * H), o * H);
    o += r.numValid;
  }
  const seqOf = (r: DraftRequest) => last.batch.seqs[r.index]!;
  let out: MtpOutput = yield {
    batch: { tokens, seqs: reqs.map((r) => ({ blockTable: seqOf(r).blockTable, numCached: seqOf(r).numCached, numNew: r.numValid })) },
    hidden, logitRows: reqs.map((r) => (r.numDrafts > 0 ? 1 : 0)),
  };
  const drafts: number[][] = reqs.map(() => []);
  let active = reqs.flatMap((r, j) => (r.numDrafts > 0 ? [j] : []));
  for (let step = 0; active.length > 0; step++) {
    active.forEach((j, row) => drafts[j]!.push(argmaxRow(out.logits, row, V)));
    const next = active.filter((j) => reqs[j]!.numDrafts > step + 1);
    if (next.length === 0) break;
    const h = new Float32Array(next.length * H);
    next.forEach((j, n) => { const row = active.indexOf(j); h.set(out.hidden.subarray(row * H, (row + 1) * H), n * H); });
    // The module at the drafted token's position reads that token and its own previous output.
    out = yield {
      batch: {
        tokens: Int32Array.from(next, (j) => drafts[j]![step]!),
        seqs: next.map((j) => ({ blockTable: seqOf(reqs[j]!).blockTable, numCached: seqOf(reqs[j]!).numCached + reqs[j]!.numValid + step, numNew: 1 })),
      },
      hidden: h,
    };
    active = next;
  }
  return drafts;
}

/** Index of the largest logit of row `row` of a [rows, V] matrix (ties to the lower id). */
function argmaxRow(logits: Float32Array, row: number, V: number): number {
  let best = 0, bv = -Infinity;
  for (let v = 0; v < V; v++) {
    const x = logits[row * V + v]!;
    if (x > bv) { bv = x; best = v; }
  }
  return best;
}
