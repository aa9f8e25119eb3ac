// The engine loop: requests in, deltas out. Each step asks the (pure) scheduler what to compute,
// runs one varlen forward over the whole batch, samples the sequences whose chunk reached their last
// known token, and turns new tokens into text deltas (streaming detokenizer, stop strings/ids,
// max_tokens). Logits are computed per sequence exactly as alone, so batching changes no token.
import { AsyncQueue } from './async-queue.ts';
import type { Delta, DraftRequest, FinishReason, ModelRunner, SamplingParams, SchedulerOutput, TokenConstraint, TokenLogprob, Usage } from './contracts.ts';
import { StopMatcher, StreamingDetokenizer, type TokenDecoder } from './detokenizer.ts';
import { Rng } from './rng.ts';
import { sample, sampleWithDraft, type Counts } from './sampler.ts';
import { Scheduler } from './scheduler.ts';

export interface EngineConfig {
  /** Longest sequence (prompt + output) a request may reach. */
  maxModelLen: number;
  maxNumSeqs: number;
  /** Per-step token budget (chunked prefill). */
  maxNumBatchedTokens: number;
  /** Waiting requests beyond which new ones are refused (EngineOverloadedError). */
  maxWaiting: number;
  prefixCaching?: boolean;
}

export interface EngineRequest {
  prompt: number[];
  params: SamplingParams;
  signal?: AbortSignal;
}

export interface EngineTokenizer extends TokenDecoder {
  /** Token ids that end generation unless ignore_eos. */
  readonly eosTokenIds: readonly number[];
  /** Text of one token for logprobs (may show U+FFFD for partial characters). */
  tokenText(id: number): string;
}

/** Refused because too many requests are waiting. */
export class EngineOverloadedError extends Error {
  override name = 'EngineOverloadedError';
  constructor(readonly waiting: number) {
    super(`too many requests waiting (${waiting})`);
  }
}

/** Refused because the engine is shutting down. */
export class EngineClosedError extends Error {
  override name = 'EngineClosedError';
}

/** A request whose prompt cannot be served (too long for the context or the KV cache). */
export class PromptTooLongError extends Error {
  override name = 'PromptTooLongError';
  constructor(readonly promptTokens: number, readonly maxTokens: number, readonly limit: number) {
    super(`prompt of ${promptTokens} tokens plus ${maxTokens} output tokens exceeds ${limit}`);
  }
}

/**
 * The model runner failed (a forward threw: a wasm worker died, an expert rank failed, a read error...).
 * Every request that was live at that moment ends with this error (its delta stream throws it after the
 * deltas already produced); `cause` is the runner's own typed error.
 */
export class EngineFailedError extends Error {
  override name = 'EngineFailedError';
  constructor(override readonly cause: Error, readonly recovering: boolean) {
    super(`the model failed while computing this request: ${cause.name}: ${cause.message}`);
  }
}

/** Refused because the runner failed and is being rebuilt ('recovering') or could not be ('failed'). */
export class EngineUnavailableError extends Error {
  override name = 'EngineUnavailableError';
  constructor(readonly health: 'recovering' | 'failed', override readonly cause: Error | null) {
    super(health === 'recovering'
      ? `the model runner failed${cause ? ` (${cause.name}: ${cause.message})` : ''} and is being restarted; retry shortly`
      : `the model runner failed${cause ? ` (${cause.name}: ${cause.message})` : ''} and could not be restarted`);
  }
}

/** 'ok': serving; 'recovering': the runner failed and a new one is being built; 'failed': no runner (terminal). */
export type EngineHealth = 'ok' | 'recovering' | 'failed';

export interface EngineRecovery {
  /**
   * Builds a fresh runner after `failed` threw `cause` (the failed one is disposed first). Its vocabulary
   * and block count must equal the old one's. Absent: a runner failure is terminal ('failed').
   */
  rebuildRunner?: (cause: Error) => Promise<ModelRunner>;
  /** Failures in a row (no successful step between) after which the engine stops rebuilding (default 3). */
  maxConsecutiveFailures?: number;
}

/** Timings (ms, monotonic) and counts of one finished sequence, for metrics. */
export interface SeqStats {
  arrival: number;
  firstScheduled: number | null;
  firstToken: number | null;
  finished: number;
  /** Gaps between consecutive output tokens, ms. */
  interTokenMs: number[];
  promptTokens: number;
  outputTokens: number;
  cachedTokens: number;
  /** Speculative decoding: draft tokens verified for this sequence, and how many were accepted. */
  draftTokens: number;
  acceptedTokens: number;
  reason: FinishReason;
}

/** One step's speculative verification, over the sequences that had drafts. */
export interface SpecStepStats {
  /** Sequences verified with at least one draft. */
  seqs: number;
  drafted: number;
  accepted: number;
  /** perPos[j]: drafts accepted at draft position j (0-based). */
  perPos: number[];
}

export interface EngineObserver {
  onStep?(out: SchedulerOutput, ms: number): void;
  onSeqFinished?(s: SeqStats): void;
  onSpec?(s: SpecStepStats): void;
}

interface Live {
  seqId: number;
  index: number;
  params: SamplingParams;
  queue: AsyncQueue<Delta>;
  rng: Rng;
  promptSeen: Set<number>;
  counts: Counts;
  detok: StreamingDetokenizer;
  stops: StopMatcher;
  stopIds: Set<number>;
  output: number[];
  stats: SeqStats;
  lastTokenAt: number | null;
  /** Guided decoding: the sequence's own grammar state (created at admission, resolved on first use). */
  guided: Promise<TokenConstraint> | null;
  constraint: TokenConstraint | null;
}

const now = () => performance.now();

export class Engine {
  readonly scheduler: Scheduler;
  #runner: ModelRunner;
  #health: EngineHealth = 'ok';
  #consecutiveFailures = 0;
  readonly #healthListeners = new Set<(h: EngineHealth, err: Error | null) => void>();
  /** Runners rebuilt after failures. */
  recoveries = 0;
  private readonly live = new Map<number, Live>();
  private nextSeqId = 1;
  private running = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  observer: EngineObserver = {};
  /** Last step's failure, if the runner threw (every live request is failed with it). */
  lastError: Error | null = null;

  constructor(runner: ModelRunner, readonly tokenizer: EngineTokenizer, readonly config: EngineConfig, readonly recovery: EngineRecovery = {}) {
    this.#runner = runner;
    this.scheduler = new Scheduler({
      numBlocks: runner.numBlocks,
      maxNumSeqs: config.maxNumSeqs,
      maxNumBatchedTokens: config.maxNumBatchedTokens,
      prefixCaching: config.prefixCaching ?? true,
    });
    const cap = this.scheduler.capacityTokens;
    if (config.maxModelLen > cap) throw new RangeError(`maxModelLen ${config.maxModelLen} exceeds the KV cache (${cap} tokens)`);
  }

  /** The current model runner (a new one after a recovery). */
  get runner(): ModelRunner {
    return this.#runner;
  }

  get health(): EngineHealth {
    return this.#health;
  }

  /** Calls `fn` on every health change (with the failure that caused it, if any); returns an unsubscribe. */
  onHealthChange(fn: (h: EngineHealth, err: Error | null) => void): () => void {
    this.#healthListeners.add(fn);
    return () => this.#healthListeners.delete(fn);
  }

  #setHealth(h: EngineHealth, err: Error | null): void {
    if (h === this.#health) return;
    this.#health = h;
    for (const fn of [...this.#healthListeners]) fn(h, err);
  }

  get numRunning(): number {
    return this.scheduler.numRunning;
  }

  get numWaiting(): number {
    return this.scheduler.numWaiting;
  }

  /** Live sequences (waiting + running). */
  get numLive(): number {
    return this.live.size;
  }

  kvUsage(): number {
    return this.scheduler.blocks.usage();
  }

  /** Checks a request against the context limit without queueing it. */
  checkLength(promptTokens: number, maxTokens: number): void {
    if (promptTokens + maxTokens > this.config.maxModelLen) throw new PromptTooLongError(promptTokens, maxTokens, this.config.maxModelLen);
  }

  /** Stops admitting requests; resolves when every live request has finished. */
  async drain(): Promise<void> {
    this.closed = true;
    if (this.live.size === 0) return;
    await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Queues a request (throws at once on refusal) and returns its deltas. With params.n > 1 the deltas
   * of all choices interleave, told apart by `index`. Aborting the signal frees its blocks at the next
   * step boundary and ends the stream with a 'finish' delta of reason 'abort'.
   */
  generate(req: EngineRequest): AsyncIterable<Delta> {
    if (this.closed) throw new EngineClosedError('engine is shutting down');
    if (this.#health !== 'ok') throw new EngineUnavailableError(this.#health, this.lastError);
    const p = req.params;
    this.checkLength(req.prompt.length, p.maxTokens);
    if (this.scheduler.numWaiting >= this.config.maxWaiting) throw new EngineOverloadedError(this.scheduler.numWaiting);
    const queue = new AsyncQueue<Delta>();
    const ids: number[] = [];
    const arrival = now();
    const promptSeen = new Set(req.prompt);
    let open = p.n;
    const baseSeed = p.seed ?? Math.floor(Math.random() * 2 ** 52);
    const stopIds = new Set(p.stopTokenIds);
    if (!p.ignoreEos) for (const e of this.tokenizer.eosTokenIds) stopIds.add(e);
    for (let i = 0; i < p.n; i++) {
      const seqId = this.nextSeqId++;
      ids.push(seqId);
      const sub = new AsyncQueue<Delta>();
      const live: Live = {
        seqId, index: i, params: p, queue: sub, rng: new Rng(baseSeed + i), promptSeen, counts: new Map(),
        detok: new StreamingDetokenizer(this.tokenizer), stops: new StopMatcher(p.stop), stopIds, output: [],
        stats: {
          arrival, firstScheduled: null, firstToken: null, finished: 0, interTokenMs: [], promptTokens: req.prompt.length,
          outputTokens: 0, cachedTokens: 0, draftTokens: 0, acceptedTokens: 0, reason: 'stop',
        },
        lastTokenAt: null,
        guided: null,
        constraint: null,
      };
      if (p.guided) {
        live.guided = p.guided.create();
        live.guided.catch(() => {}); // reported where it is awaited (maskOf)
      }
      // Forward every choice's deltas into the request's queue; close it after the last choice ends.
      void (async () => {
        try {
          for await (const d of sub) queue.push(d);
        } catch (e) {
          queue.fail(e as Error);
          return;
        }
        if (--open === 0) queue.close();
      })();
      this.live.set(seqId, live);
      this.scheduler.add(seqId, req.prompt);
    }
    if (req.signal) {
      const onAbort = () => { for (const id of ids) this.finishSeq(id, 'abort'); };
      if (req.signal.aborted) onAbort();
      else req.signal.addEventListener('abort', onAbort, { once: true });
    }
    this.kick();
    return queue;
  }

  /** Aborts every live request (used after a drain deadline). */
  abortAll(): void {
    for (const id of [...this.live.keys()]) this.finishSeq(id, 'abort');
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    setImmediate(() => void this.loop());
  }

  private async loop(): Promise<void> {
    try {
      while (this.scheduler.hasWork()) {
        const t0 = now();
        const out = this.scheduler.schedule();
        if (out.seqs.length === 0) throw new Error('scheduler made no progress with work queued');
        await this.step(out);
        this.observer.onStep?.(out, now() - t0);
        // Let I/O (new requests, aborts, socket writes) run between steps.
        await new Promise<void>((r) => setImmediate(r));
      }
    } catch (err) {
      this.#onRunnerFailure(err instanceof Error ? err : new Error(String(err)));
    } finally {
      this.running = false;
      if (this.scheduler.hasWork()) this.kick();
      else if (this.live.size === 0) this.notifyIdle();
    }
  }

  /**
   * A forward threw: the runner's state is unknown (a dead worker, a lost rank, half-written cache), so
   * every live request fails with EngineFailedError, new requests are refused (EngineUnavailableError)
   * and, when a rebuild is configured, a fresh runner replaces this one; otherwise the engine is 'failed'.
   */
  #onRunnerFailure(cause: Error): void {
    this.lastError = cause;
    this.#consecutiveFailures++;
    const canRebuild = this.recovery.rebuildRunner !== undefined && this.#consecutiveFailures <= (this.recovery.maxConsecutiveFailures ?? 3);
    const failure = new EngineFailedError(cause, canRebuild);
    for (const [id, l] of [...this.live]) {
      l.queue.fail(failure);
      this.finishSeq(id, null);
    }
    this.#setHealth(canRebuild ? 'recovering' : 'failed', cause);
    if (canRebuild) void this.#rebuild(cause);
  }

  async #rebuild(cause: Error): Promise<void> {
    const old = this.#runner;
    try {
      try {
        await old.dispose?.();
      } catch {
        // the failed runner may not release cleanly (a dead worker); its replacement does not depend on it
      }
      const next = await this.recovery.rebuildRunner!(cause);
      if (next.vocabSize !== old.vocabSize || next.numBlocks !== old.numBlocks) {
        await next.dispose?.();
        throw new Error(`rebuilt runner differs (vocab ${next.vocabSize}, ${next.numBlocks} blocks; was ${old.vocabSize}, ${old.numBlocks})`);
      }
      this.#runner = next;
      // The cached prefixes' KV lived in the old runner's cache.
      this.scheduler.blocks.resetPrefixCache();
      this.recoveries++;
      this.#setHealth('ok', null);
    } catch (e) {
      this.lastError = e instanceof Error ? e : new Error(String(e));
      this.#setHealth('failed', this.lastError);
    }
  }

  private async step(out: SchedulerOutput): Promise<void> {
    const t = now();
    let total = 0;
    for (const s of out.seqs) total += s.numNew;
    const tokens = new Int32Array(total);
    let off = 0;
    const seqs = out.seqs.map((s) => {
      tokens.set(s.tokens, off);
      off += s.numNew;
      const l = this.live.get(s.seqId);
      if (l && l.stats.firstScheduled === null) l.stats.firstScheduled = t;
      return { blockTable: Int32Array.from(s.blockTable), numCached: s.numCached, numNew: s.numNew, ...(s.numDraft > 0 ? { logitRows: 1 + s.numDraft } : {}) };
    });
    // Guided sequences' bitmasks (for their first sampled position) are computed while the forward runs.
    const maskPs = out.seqs.some((s) => s.sample && this.live.get(s.seqId)?.guided) ? out.seqs.map((s) => (s.sample ? this.maskOf(s.seqId) : null)) : null;
    const runner = this.#runner;
    const logits = await runner.forward({ tokens, seqs });
    this.#consecutiveFailures = 0;
    const masks = maskPs ? await Promise.all(maskPs) : null;
    const V = runner.vocabSize;
    const appended: (number[] | null)[] = [];
    const accepted: number[] = [];
    const results: ({ l: Live; tokens: { token: number; lp?: TokenLogprob }[] } | null)[] = [];
    const spec = { seqs: 0, drafted: 0, accepted: 0, perPos: [] as number[] };
    let row = 0;
    for (let i = 0; i < out.seqs.length; i++) {
      const s = out.seqs[i]!;
      const base = row;
      row += 1 + s.numDraft;
      const l = this.live.get(s.seqId);
      accepted.push(0);
      if (!s.sample || !l) { appended.push(null); results.push(null); continue; }
      // Position j's row decides the token after it: draft d_{j+1} (s.tokens[1 + j]) is kept while it
      // passes, else the row's own token ends the run; after every draft passed, the last row adds one more.
      const emitted: { token: number; lp?: TokenLogprob }[] = [];
      let a = 0;
      for (let j = 0; j <= s.numDraft; j++) {
        let mask: Int32Array | undefined;
        if (l.guided) {
          const m = j === 0 ? masks?.[i] : await this.maskOf(s.seqId);
          if (!m) break; // its constraint failed: finished
          mask = m;
        }
        const rowj = logits.subarray((base + j) * V, (base + j + 1) * V);
        const draft = j < s.numDraft ? s.tokens[1 + j]! : null;
        const r = draft === null
          ? sample(rowj, l.params, l.rng, l.promptSeen, l.counts, mask)
          : sampleWithDraft(rowj, l.params, l.rng, l.promptSeen, l.counts, mask, draft);
        l.constraint?.accept(r.token);
        let lp: TokenLogprob | undefined;
        if (r.logprob !== undefined) {
          lp = { ...this.tokenInfo(r.token), logprob: r.logprob, top: (r.top ?? []).map((x) => ({ ...this.tokenInfo(x.tokenId), logprob: x.logprob })) };
        }
        emitted.push({ token: r.token, lp });
        const ends = l.stopIds.has(r.token) || (l.constraint?.done ?? false);
        // Output counts (frequency/presence penalties) include the tokens emitted before each position.
        if (!ends) l.counts.set(r.token, (l.counts.get(r.token) ?? 0) + 1);
        const ok = draft !== null && r.token === draft;
        if (ok) {
          a++;
          spec.perPos[j] = (spec.perPos[j] ?? 0) + 1;
        }
        if (!ok || ends) break;
      }
      if (s.numDraft > 0) {
        spec.seqs++;
        spec.drafted += s.numDraft;
        spec.accepted += a;
        l.stats.draftTokens += s.numDraft;
        l.stats.acceptedTokens += a;
      }
      accepted[i] = a;
      appended.push(emitted.length > 0 && this.live.has(s.seqId) ? emitted.map((e) => e.token) : null);
      results.push(emitted.length > 0 ? { l, tokens: emitted } : null);
    }
    this.scheduler.update(out, appended, accepted);
    if (spec.seqs > 0) this.observer.onSpec?.(spec);
    const tt = now();
    for (const r of results) {
      if (!r) continue;
      for (const e of r.tokens) {
        if (!this.live.has(r.l.seqId)) break; // a stop ended it inside an accepted run
        this.onToken(r.l, e.token, e.lp, tt);
      }
    }
    if ((runner.maxDraftTokens ?? 0) > 0 && runner.draft && runner === this.#runner) await this.#draft(runner, out, appended, accepted);
  }

  /**
   * Speculative decoding: the drafter reads every position this step made valid (so its own cache stays
   * complete) and proposes the drafts that each sequence at the decode frontier verifies next step.
   */
  async #draft(runner: ModelRunner, out: SchedulerOutput, appended: readonly (number[] | null)[], accepted: readonly number[]): Promise<void> {
    const K = runner.maxDraftTokens!;
    const reqs: DraftRequest[] = [];
    const ids: number[] = [];
    out.seqs.forEach((s, i) => {
      const l = this.live.get(s.seqId);
      if (!l || !this.scheduler.has(s.seqId)) return;
      const st = this.scheduler.get(s.seqId);
      if (st.status !== 'running') return; // preempted meanwhile: recomputed (drafter included) later
      const numValid = s.numNew - s.numDraft + accepted[i]!;
      const after = appended[i];
      let next: number[];
      if (s.sample) {
        if (!after) return;
        next = [...s.tokens.slice(1, s.numNew - s.numDraft), ...after];
      } else {
        next = [...s.tokens.slice(1), st.tokens[s.numCached + s.numNew]!];
      }
      if (next.length !== numValid) throw new Error(`speculative bookkeeping: ${next.length} next tokens for ${numValid} positions`);
      let numDrafts = 0;
      if (s.sample) {
        const seqLen = l.stats.promptTokens + l.output.length;
        // Draft k + 1 is chained from the drafter at position numCached + numValid + k - 1, which must lie in
        // the blocks this step already holds (the next step allocates for what it verifies).
        const inBlocks = s.blockTable.length * this.scheduler.blockSize - (s.numCached + numValid) + 1;
        numDrafts = Math.max(0, Math.min(K, l.params.maxTokens - l.output.length - 1, this.config.maxModelLen - seqLen - 1, inBlocks));
      }
      reqs.push({ index: i, numValid, nextTokens: Int32Array.from(next), numDrafts });
      ids.push(s.seqId);
    });
    if (reqs.length === 0) return;
    const drafts = await runner.draft!(reqs);
    reqs.forEach((r, j) => { if (r.numDrafts > 0) this.scheduler.setDrafts(ids[j]!, drafts[j]!.slice(0, r.numDrafts)); });
  }

  /** The next-token bitmask of a guided sequence (null: not guided, gone, or its grammar failed, which finishes it). */
  private async maskOf(seqId: number): Promise<Int32Array | null> {
    const l = this.live.get(seqId);
    if (!l?.guided) return null;
    try {
      l.constraint ??= await l.guided;
      if (!this.live.has(seqId)) return null;
      return await l.constraint.mask();
    } catch (e) {
      if (this.live.has(seqId)) this.finishSeq(seqId, 'abort', `error: guided decoding: ${e instanceof Error ? e.message : String(e)}`);
      return null;
    }
  }

  private tokenInfo(id: number): { token: string; tokenId: number; bytes: number[] } {
    const b = this.tokenizer.tokenBytes(id);
    const token = this.tokenizer.tokenText(id);
    return { token, tokenId: id, bytes: b ? Array.from(b) : Array.from(Buffer.from(token, 'utf8')) };
  }

  private onToken(l: Live, token: number, lp: TokenLogprob | undefined, t: number): void {
    const st = l.stats;
    if (st.firstToken === null) st.firstToken = t;
    else if (l.lastTokenAt !== null) st.interTokenMs.push(t - l.lastTokenAt);
    l.lastTokenAt = t;
    const p = l.params;
    // A guided sequence also ends when its grammar does (its stop token accepted, even under ignore_eos).
    if (l.stopIds.has(token) || l.constraint?.done) {
      // The stop token itself is neither returned nor counted as text; it is counted as output.
      l.output.push(token);
      st.outputTokens++;
      const tail = l.stops.push(l.detok.flush());
      this.emitText(l, tail.emit + (tail.stop === null ? l.stops.flush() : ''), [], undefined);
      this.finishSeq(l.seqId, 'stop', token);
      return;
    }
    l.output.push(token);
    st.outputTokens++;
    const piece = l.detok.push(token);
    const { emit, stop } = l.stops.push(piece);
    const lps = lp ? [lp] : undefined;
    if (stop !== null) {
      this.emitText(l, emit, [token], lps);
      this.finishSeq(l.seqId, 'stop', stop);
      return;
    }
    const seqLen = st.promptTokens + l.output.length;
    if (l.output.length >= p.maxTokens || seqLen >= this.config.maxModelLen) {
      const rest = l.stops.push(l.detok.flush());
      this.emitText(l, emit + rest.emit + (rest.stop === null ? l.stops.flush() : ''), [token], lps);
      this.finishSeq(l.seqId, rest.stop !== null ? 'stop' : 'length', rest.stop ?? undefined);
      return;
    }
    this.emitText(l, emit, [token], lps);
  }

  private emitText(l: Live, text: string, tokenIds: number[], logprobs: TokenLogprob[] | undefined): void {
    if (text === '' && tokenIds.length === 0) return;
    l.queue.push({ type: 'text', index: l.index, text, tokenIds, ...(logprobs ? { logprobs } : {}) });
  }

  private usageOf(l: Live): Usage {
    const s = this.scheduler.has(l.seqId) ? this.scheduler.get(l.seqId) : null;
    const cached = s?.cachedPromptTokens ?? l.stats.cachedTokens;
    return { promptTokens: l.stats.promptTokens, completionTokens: l.output.length, cachedTokens: cached };
  }

  /** Ends a live sequence: frees its blocks, sends its finish delta (unless reason is null), records stats. */
  private finishSeq(seqId: number, reason: FinishReason | null, stopReason?: string | number): void {
    const l = this.live.get(seqId);
    if (!l) return;
    const usage = this.usageOf(l);
    l.stats.cachedTokens = usage.cachedTokens;
    this.scheduler.finish(seqId);
    this.live.delete(seqId);
    // After the current step's use of it (a mask may be in flight).
    if (l.guided) void l.guided.then((c) => setImmediate(() => c.dispose()), () => {});
    l.stats.finished = now();
    l.stats.reason = reason ?? 'abort';
    if (reason !== null) l.queue.push({ type: 'finish', index: l.index, reason, ...(stopReason !== undefined ? { stopReason } : {}), usage });
    l.queue.close();
    this.observer.onSeqFinished?.(l.stats);
    if (this.live.size === 0 && !this.running) this.notifyIdle();
  }

  private notifyIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const r of w) r();
  }
}
