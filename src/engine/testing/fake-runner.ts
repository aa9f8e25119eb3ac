// A deterministic model double for engine tests. It keeps a real paged "KV cache" (the token id
// stored at each slot of each block) and computes each sequence's logits from the whole history it
// reads back through the block table, so a wrong block table, a wrong prefix-cache hit or a stale
// block changes the logits, exactly as it would with the real model.
import { BLOCK_SIZE, type ModelRunner, type RunnerBatch } from '../contracts.ts';

export class FakeRunner implements ModelRunner {
  readonly slots: Int32Array;
  forwards = 0;
  /** Batch sizes (sequences per forward), for tests of batching. */
  batchSizes: number[] = [];

  constructor(readonly vocabSize: number, readonly numBlocks: number, readonly delayMs = 0) {
    this.slots = new Int32Array(numBlocks * BLOCK_SIZE).fill(-1);
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

  async forward(batch: RunnerBatch): Promise<Float32Array> {
    this.forwards++;
    this.batchSizes.push(batch.seqs.length);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const V = this.vocabSize;
    const out = new Float32Array(batch.seqs.length * V);
    let off = 0;
    batch.seqs.forEach((s, i) => {
      for (let j = 0; j < s.numNew; j++) {
        const pos = s.numCached + j;
        const block = s.blockTable[Math.floor(pos / BLOCK_SIZE)];
        if (block === undefined) throw new RangeError(`position ${pos} has no block`);
        this.slots[block * BLOCK_SIZE + (pos % BLOCK_SIZE)] = batch.tokens[off + j]!;
      }
      off += s.numNew;
      const len = s.numCached + s.numNew;
      const hist = new Int32Array(len);
      for (let pos = 0; pos < len; pos++) hist[pos] = this.slots[s.blockTable[Math.floor(pos / BLOCK_SIZE)]! * BLOCK_SIZE + (pos % BLOCK_SIZE)]!;
      out.set(FakeRunner.logitsFor(hist, V), i * V);
    });
    return out;
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
