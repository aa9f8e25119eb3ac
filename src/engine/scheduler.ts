// The scheduler: pure, synchronous, no I/O. One accounting for every sequence, as in vLLM v1
// (vllm/v1/core/sched/scheduler.py): each step, a sequence's computed tokens catch up with its known
// tokens (prompt + sampled output) under a per-step token budget, so a long prompt is prefilled in
// chunks and decode is simply "one known token not yet computed"; there are no prefill/decode modes.
//
// Order: running sequences first (oldest first), then waiting ones (FCFS). When a running sequence
// needs a block and none is free, the newest running sequence is preempted by recompute: its blocks
// are released (full ones stay in the prefix cache) and it returns to the head of the waiting queue.
import { BlockManager, blockHashes } from './block-manager.ts';
import { BLOCK_SIZE, type ScheduledSeq, type SchedulerOutput } from './contracts.ts';

export interface SchedulerConfig {
  numBlocks: number;
  /** Running sequences at most (vLLM --max-num-seqs). */
  maxNumSeqs: number;
  /** Tokens computed per step at most (vLLM --max-num-batched-tokens). */
  maxNumBatchedTokens: number;
  blockSize?: number;
  prefixCaching?: boolean;
}

export type SeqStatus = 'waiting' | 'running' | 'finished';

export interface SeqState {
  readonly seqId: number;
  /** Prompt then output tokens: the known tokens. */
  readonly tokens: number[];
  readonly promptLen: number;
  numComputed: number;
  blocks: number[];
  /** Chained hashes of the full blocks of `tokens` (grown lazily). */
  hashes: string[];
  /** Blocks of this sequence already registered in the prefix cache. */
  numRegistered: number;
  /** Prompt tokens found in the prefix cache at first admission (null until admitted). */
  cachedPromptTokens: number | null;
  status: SeqStatus;
  numPreemptions: number;
  /** Speculative decoding: draft tokens proposed after the last known token, verified at the next step. */
  drafts: number[];
}

export class SchedulerError extends Error {
  override name = 'SchedulerError';
}

export class Scheduler {
  readonly blocks: BlockManager;
  readonly blockSize: number;
  private readonly seqs = new Map<number, SeqState>();
  private waiting: SeqState[] = [];
  private running: SeqState[] = [];
  numPreemptions = 0;

  constructor(readonly config: SchedulerConfig) {
    this.blockSize = config.blockSize ?? BLOCK_SIZE;
    this.blocks = new BlockManager(config.numBlocks, this.blockSize, config.prefixCaching ?? true);
    if (config.maxNumSeqs < 1 || config.maxNumBatchedTokens < 1) throw new RangeError('maxNumSeqs and maxNumBatchedTokens must be >= 1');
  }

  /** Tokens one sequence may hold at most (all blocks). */
  get capacityTokens(): number {
    return this.config.numBlocks * this.blockSize;
  }

  get numWaiting(): number {
    return this.waiting.length;
  }

  get numRunning(): number {
    return this.running.length;
  }

  has(seqId: number): boolean {
    return this.seqs.has(seqId);
  }

  get(seqId: number): SeqState {
    const s = this.seqs.get(seqId);
    if (!s) throw new SchedulerError(`unknown sequence ${seqId}`);
    return s;
  }

  /** Queues a sequence. Its prompt must fit the cache with one more token (checked by the caller's context limit). */
  add(seqId: number, prompt: readonly number[]): void {
    if (this.seqs.has(seqId)) throw new SchedulerError(`sequence ${seqId} already added`);
    if (prompt.length === 0) throw new SchedulerError('empty prompt');
    if (prompt.length + 1 > this.capacityTokens) throw new SchedulerError(`prompt of ${prompt.length} tokens cannot fit ${this.config.numBlocks} KV blocks`);
    const s: SeqState = {
      seqId, tokens: prompt.slice(), promptLen: prompt.length, numComputed: 0, blocks: [], hashes: [],
      numRegistered: 0, cachedPromptTokens: null, status: 'waiting', numPreemptions: 0, drafts: [],
    };
    this.seqs.set(seqId, s);
    this.waiting.push(s);
  }

  hasWork(): boolean {
    return this.running.length > 0 || this.waiting.length > 0;
  }

  schedule(): SchedulerOutput {
    const B = this.blockSize;
    let budget = this.config.maxNumBatchedTokens;
    const out: ScheduledSeq[] = [];
    const preempted: number[] = [];

    for (let i = 0; i < this.running.length && budget > 0; ) {
      const s = this.running[i]!;
      // At the decode frontier with drafts: the last token and as many drafts as the budget allows.
      const known = s.tokens.length - s.numComputed;
      const numNew = Math.min(known === 1 ? 1 + s.drafts.length : known, budget);
      if (numNew <= 0) { i++; continue; }
      const need = Math.ceil((s.numComputed + numNew) / B) - s.blocks.length;
      let selfPreempted = false;
      while (need > this.blocks.numFree) {
        const victim = this.running[this.running.length - 1]!;
        this.preempt(victim);
        preempted.push(victim.seqId);
        if (victim === s) { selfPreempted = true; break; }
      }
      if (selfPreempted) break;
      if (need > 0) s.blocks.push(...this.blocks.allocate(need));
      out.push(this.slice(s, numNew, known === 1 ? numNew - 1 : 0));
      budget -= numNew;
      i++;
    }

    while (preempted.length === 0 && budget > 0 && this.waiting.length > 0 && this.running.length < this.config.maxNumSeqs) {
      const s = this.waiting[0]!;
      let hit: number[] = [];
      if (s.numComputed === 0 && s.blocks.length === 0) {
        // At least the last known token must be computed to get logits, so cap hits below it.
        s.hashes = blockHashes(s.tokens, B, s.hashes);
        const maxHit = Math.floor((s.tokens.length - 1) / B);
        hit = this.blocks.lookup(s.hashes.slice(0, maxHit));
      }
      const start = s.numComputed + hit.length * B;
      const numNew = Math.min(s.tokens.length - start, budget);
      const need = Math.ceil((start + numNew) / B) - s.blocks.length - hit.length;
      if (need + this.blocks.freeNeededFor(hit) > this.blocks.numFree) break;
      this.blocks.acquire(hit);
      s.blocks.push(...hit);
      if (need > 0) s.blocks.push(...this.blocks.allocate(need));
      s.numComputed = start;
      s.numRegistered = Math.max(s.numRegistered, hit.length);
      if (s.cachedPromptTokens === null) s.cachedPromptTokens = hit.length * B;
      this.waiting.shift();
      s.status = 'running';
      this.running.push(s);
      out.push(this.slice(s, numNew));
      budget -= numNew;
    }
    return { seqs: out, preempted, numBatchedTokens: this.config.maxNumBatchedTokens - budget };
  }

  /**
   * Applies a finished step: each scheduled sequence's computed count advances by its numNew less the
   * drafts rejected (`accepted[i]` of its numDraft were accepted; default 0), newly full blocks enter the
   * prefix cache, and for seqs with `sample` the tokens `sampled[i]` (one id, or the accepted drafts and
   * the model's own next token) are appended. Drafts are consumed by the step (see setDrafts).
   */
  update(step: SchedulerOutput, sampled: readonly (number | readonly number[] | null)[], accepted?: readonly number[]): void {
    step.seqs.forEach((sch, i) => {
      const s = this.seqs.get(sch.seqId);
      if (!s || s.status !== 'running') return; // finished or aborted meanwhile
      const a = accepted?.[i] ?? 0;
      if (a < 0 || a > sch.numDraft) throw new SchedulerError(`sequence ${sch.seqId}: ${a} of ${sch.numDraft} drafts accepted`);
      s.numComputed = sch.numCached + sch.numNew - sch.numDraft + a;
      s.drafts = [];
      const t = sampled[i];
      if (sch.sample && t !== null && t !== undefined) {
        if (typeof t === 'number') s.tokens.push(t);
        else s.tokens.push(...t);
      }
      this.registerFull(s);
    });
  }

  /**
   * Speculative decoding: the drafts to verify at this sequence's next step (after its last known token).
   * Ignored unless the sequence is running with exactly its last token left to compute.
   */
  setDrafts(seqId: number, drafts: readonly number[]): void {
    const s = this.seqs.get(seqId);
    if (!s || s.status !== 'running' || s.numComputed !== s.tokens.length - 1) return;
    s.drafts = drafts.slice();
  }

  /** Ends a sequence (finished or aborted), releasing its blocks. Unknown ids are ignored. */
  finish(seqId: number): void {
    const s = this.seqs.get(seqId);
    if (!s) return;
    this.seqs.delete(seqId);
    if (s.status === 'waiting') this.waiting = this.waiting.filter((x) => x !== s);
    else if (s.status === 'running') this.running = this.running.filter((x) => x !== s);
    this.blocks.release(s.blocks);
    s.blocks = [];
    s.status = 'finished';
  }

  private preempt(s: SeqState): void {
    this.running = this.running.filter((x) => x !== s);
    this.blocks.release(s.blocks);
    s.blocks = [];
    s.numComputed = 0;
    s.numRegistered = 0;
    s.drafts = [];
    s.status = 'waiting';
    s.numPreemptions++;
    this.numPreemptions++;
    this.waiting.unshift(s);
  }

  private registerFull(s: SeqState): void {
    if (!this.blocks.prefixCaching) return;
    const full = Math.floor(s.numComputed / this.blockSize);
    if (full <= s.numRegistered) return;
    s.hashes = blockHashes(s.tokens, this.blockSize, s.hashes);
    for (let b = s.numRegistered; b < full; b++) this.blocks.register(s.blocks[b]!, s.hashes[b]!);
    s.numRegistered = full;
  }

  private slice(s: SeqState, numNew: number, numDraft = 0): ScheduledSeq {
    const numKnown = numNew - numDraft;
    return {
      seqId: s.seqId,
      numCached: s.numComputed,
      numNew,
      tokens: numDraft > 0 ? [...s.tokens.slice(s.numComputed, s.numComputed + numKnown), ...s.drafts.slice(0, numDraft)] : s.tokens.slice(s.numComputed, s.numComputed + numNew),
      blockTable: s.blocks.slice(),
      sample: s.numComputed + numKnown === s.tokens.length,
      numDraft,
    };
  }
}
