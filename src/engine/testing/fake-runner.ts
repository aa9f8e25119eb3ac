// A deterministic model double for engine tests. It keeps a real paged "KV cache" (the token id
// stored at each slot of each block) and computes each sequence's logits from the whole history it
// reads back through the block table, so a wrong block table, a wrong prefix-cache hit or a stale
// block changes the logits, exactly as it would with the real model.
import { BLOCK_SIZE, type DraftRequest, type ModelRunner, type RunnerBatch } from '../contracts.ts';

/** A drafter double for speculative decoding: proposes the true greedy continuation, wrong where `wrong` says. */
export interface FakeDrafter {
  /** Drafts per step at most. */
  k: number;
  /** Whether the draft for `position` (given the true greedy token there) is made wrong. Default: never. */
  wrong?: (position: number, token: number) => boolean;
}

export class FakeRunner implements ModelRunner {
  readonly slots: Int32Array;
  /** The drafter's own "cache": at position p, the token it was told follows p (-1: never written). */
  readonly draftSlots: Int32Array;
  readonly maxDraftTokens: number;
  forwards = 0;
  /** Batch sizes (sequences per forward), for tests of batching. */
  batchSizes: number[] = [];
  /** Draft calls, and positions the drafter found unrecorded or inconsistent with the main cache. */
  drafts = 0;
  drafterMismatches = 0;
  #last: RunnerBatch | null = null;

  constructor(readonly vocabSize: number, readonly numBlocks: number, readonly delayMs = 0, readonly drafter: FakeDrafter | null = null) {
    this.slots = new Int32Array(numBlocks * BLOCK_SIZE).fill(-1);
    this.draftSlots = new Int32Array(numBlocks * BLOCK_SIZE).fill(-1);
    this.maxDraftTokens = drafter?.k ?? 0;
  }

  /** The logits the fake model gives after `history` (the whole sequence, every position). */
  static logitsFor(history: ArrayLike<number>, vocab: number): Float32Array {
    let h = 0x811c9dc5;
    for (let i = 0; i < history.length; i++) {
      h = Math.imul(h ^ (history[i]! + 1), 0x01000193);
      h = Math.imul(h ^ (i + 7), 0x5bd1e995);
    }
    const out = new Float32Array(vocab);
    let s = h >>> 0;
    for (let v = 0; v < vocab; v++) {
      s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + v) >>> 0;
      out[v] = ((s % 2000) - 1000) / 250; // [-4, 4)
    }
    return out;
  }

  #slot(blockTable: Int32Array, pos: number): number {
    const block = blockTable[Math.floor(pos / BLOCK_SIZE)];
    if (block === undefined) throw new RangeError(`position ${pos} has no block`);
    return block * BLOCK_SIZE + (pos % BLOCK_SIZE);
  }

  #history(blockTable: Int32Array, len: number): Int32Array {
    const hist = new Int32Array(len);
    for (let pos = 0; pos < len; pos++) hist[pos] = this.slots[this.#slot(blockTable, pos)]!;
    return hist;
  }

  async forward(batch: RunnerBatch): Promise<Float32Array> {
    this.forwards++;
    this.batchSizes.push(batch.seqs.length);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const V = this.vocabSize;
    let rows = 0;
    for (const s of batch.seqs) rows += s.logitRows ?? 1;
    const out = new Float32Array(rows * V);
    let off = 0, row = 0;
    for (const s of batch.seqs) {
      for (let j = 0; j < s.numNew; j++) this.slots[this.#slot(s.blockTable, s.numCached + j)] = batch.tokens[off + j]!;
      off += s.numNew;
      const len = s.numCached + s.numNew;
      const hist = this.#history(s.blockTable, len);
      const r = s.logitRows ?? 1;
      for (let q = len - r; q < len; q++) out.set(FakeRunner.logitsFor(hist.subarray(0, q + 1), V), row++ * V);
    }
    this.#last = batch;
    return out;
  }

  draft(reqs: readonly DraftRequest[]): number[][] {
    const last = this.#last;
    if (!this.drafter || !last) throw new Error('FakeRunner.draft: no drafter or no forward');
    this.drafts++;
    return reqs.map((r) => {
      const s = last.seqs[r.index]!;
      const end = s.numCached + r.numValid; // positions [0, end) are valid; the token at `end` is known
      for (let j = 0; j < r.numValid; j++) this.draftSlots[this.#slot(s.blockTable, s.numCached + j)] = r.nextTokens[j]!;
      // The drafter's cache must hold, at every valid position p, the token at p + 1.
      const hist = [...this.#history(s.blockTable, end), r.nextTokens[r.numValid - 1]!];
      for (let p = 0; p < end; p++) if (this.draftSlots[this.#slot(s.blockTable, p)] !== hist[p + 1]) this.drafterMismatches++;
      const out: number[] = [];
      for (let k = 0; k < r.numDrafts; k++) {
        const l = FakeRunner.logitsFor(hist, this.vocabSize);
        let best = 0;
        for (let v = 1; v < this.vocabSize; v++) if (l[v]! > l[best]!) best = v;
        const pos = end + 1 + k;
        const d = this.drafter!.wrong?.(pos, best) ? (best + 1) % this.vocabSize : best;
        out.push(d);
        hist.push(d);
      }
      return out;
    });
  }
}

/** Greedy continuation computed without any cache: the ground truth for engine tests. */
export function greedyReference(prompt: number[], steps: number, vocab: number, stopIds: Set<number> = new Set()): number[] {
  const hist = prompt.slice();
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const l = FakeRunner.logitsFor(hist, vocab);
    let best = 0;
    for (let v = 1; v < vocab; v++) if (l[v]! > l[best]!) best = v;
    out.push(best);
    hist.push(best);
    if (stopIds.has(best)) break;
  }
  return out;
}

/** A byte-level decoder double: token id t < 256 is the byte t; larger ids are the text "<t>". */
export const byteDecoder = {
  eosTokenIds: [] as number[],
  tokenBytes(id: number): Uint8Array {
    return id < 256 ? Uint8Array.of(id) : new TextEncoder().encode(`<${id}>`);
  },
  tokenText(id: number): string {
    return id < 256 ? String.fromCharCode(id) : `<${id}>`;
  },
  decode(ids: number[]): string {
    return Buffer.concat(ids.map((i) => this.tokenBytes(i))).toString('utf8');
  },
};
