// Plain-data contracts between the engine's parts: sampling parameters, the scheduler's output, the
// model runner the engine drives, and the deltas a request yields. No behaviour lives here.

/** KV cache block size (tokens per block), fixed by the model's paged latent cache. */
export const BLOCK_SIZE = 64;

/** Per-request sampling parameters, already validated (the server maps OpenAI fields onto these). */
export interface SamplingParams {
  /** 0 = greedy (argmax, ties to the lower id). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 = off. */
  topP: number;
  /** Keep the k most likely tokens; 0 = off. */
  topK: number;
  /** Drop tokens whose probability is below minP × the top probability; 0 = off. */
  minP: number;
  /** Seed of the request's own PRNG; null = a random seed. Choice i of n uses seed + i. */
  seed: number | null;
  /** Output cap in tokens. */
  maxTokens: number;
  /** Stop strings: generation ends before them, and they are not returned. */
  stop: string[];
  /** Token ids that end generation (EOS is added unless ignoreEos). The stop token is not returned. */
  stopTokenIds: number[];
  ignoreEos: boolean;
  presencePenalty: number;
  frequencyPenalty: number;
  /** vLLM semantics: logits of tokens seen in prompt or output are divided (if > 0) or multiplied by it; 1 = off. */
  repetitionPenalty: number;
  /** null = no logprobs; k >= 0 = logprob of the sampled token plus the top k alternatives. */
  logprobs: number | null;
  /** Number of choices. */
  n: number;
  /** OpenAI logit_bias: [token id < vocab, bias] added to the logits before penalties and sampling (logprobs stay raw). */
  logitBias?: readonly (readonly [number, number])[];
  /** Guided decoding: each choice gets its own constraint; tokens outside its mask are never sampled. */
  guided?: ConstraintFactory;
}

/**
 * One sequence's grammar state (guided decoding): which tokens may come next, as a bitmask (bit t & 31 of
 * word t >> 5; EOS is allowed once the grammar is complete), and the sampled token fed back.
 */
export interface TokenConstraint {
  mask(): Int32Array | Promise<Int32Array>;
  /** false: the token breaks the grammar (cannot happen for a token inside the mask). */
  accept(token: number): boolean;
  /** The grammar has ended (its stop token was accepted). */
  readonly done: boolean;
  dispose(): void;
}

export interface ConstraintFactory {
  create(): Promise<TokenConstraint>;
}

export function defaultSamplingParams(over: Partial<SamplingParams> = {}): SamplingParams {
  return {
    temperature: 1, topP: 1, topK: 0, minP: 0, seed: null, maxTokens: 16, stop: [], stopTokenIds: [],
    ignoreEos: false, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1, logprobs: null, n: 1,
    ...over,
  };
}

/** One sequence's share of a scheduler step: compute tokens [numCached, numCached + numNew). */
export interface ScheduledSeq {
  seqId: number;
  /** Tokens already in the KV cache for this sequence (computed before, or prefix-cache hits). */
  numCached: number;
  numNew: number;
  /** The numNew token ids to compute. */
  tokens: number[];
  /** Block ids covering positions 0 .. numCached + numNew - 1 (block b holds positions b*64 .. b*64+63). */
  blockTable: number[];
  /** True when this chunk reaches the end of the known tokens, so its last logits are sampled. */
  sample: boolean;
  /**
   * Speculative decoding: the last numDraft of `tokens` are draft tokens to verify (positions past the
   * known tokens); the step then needs logits of its last 1 + numDraft positions. 0 without drafts.
   */
  numDraft: number;
}

export interface SchedulerOutput {
  seqs: ScheduledSeq[];
  /** Sequences preempted (blocks freed, to be recomputed later) while building this step. */
  preempted: number[];
  /** Sum of numNew over seqs (<= the token budget). */
  numBatchedTokens: number;
}

/** What the engine needs from a model: one varlen forward over a batch, against the runner's paged cache. */
export interface RunnerBatch {
  /** Token ids of all sequences, concatenated in seqs order. */
  tokens: Int32Array;
  /** logitRows: logits of the sequence's last logitRows new positions (default 1; 1 + drafts when verifying). */
  seqs: { blockTable: Int32Array; numCached: number; numNew: number; logitRows?: number }[];
}

/**
 * After a forward and its sampling, what the drafter (speculative decoding) reads of one of that
 * forward's sequences: its first numValid new positions (all of a prefill chunk; 1 + the accepted drafts
 * of a verify step), the token that follows each of them, and how many drafts to propose after them.
 */
export interface DraftRequest {
  /** Index of the sequence in the last forward's batch. */
  index: number;
  numValid: number;
  /** [numValid]: the token at position numCached + j + 1 for each valid position numCached + j. */
  nextTokens: Int32Array;
  /** Drafts wanted (0: the drafter only records these positions in its own cache). */
  numDrafts: number;
}

export interface ModelRunner {
  readonly vocabSize: number;
  /** KV blocks in the runner's cache; block ids are 0 .. numBlocks - 1. */
  readonly numBlocks: number;
  /**
   * Logits of each sequence's last logitRows (default 1) new tokens, in order: [sum of logitRows, vocabSize].
   * Must not depend on batch composition.
   */
  forward(batch: RunnerBatch): Float32Array | Promise<Float32Array>;
  /** Speculative decoding: drafts per step the runner proposes at most (absent or 0: it does not draft). */
  readonly maxDraftTokens?: number;
  /**
   * Runs the drafter over the last forward's valid positions (every sequence of that forward that is still
   * live gets a request, in the forward's order) and returns each request's drafts (numDrafts tokens).
   */
  draft?(reqs: readonly DraftRequest[]): number[][] | Promise<number[][]>;
  dispose?(): Promise<void> | void;
}

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'abort';

export interface TokenLogprob {
  token: string;
  tokenId: number;
  logprob: number;
  bytes: number[];
  top: { token: string; tokenId: number; logprob: number; bytes: number[] }[];
}

/** What a request yields as it runs; `index` is the choice (0 .. n-1). */
export type Delta =
  | { type: 'queued'; index: number }
  | {
      type: 'text';
      index: number;
      /** New visible text (stop strings held back and removed). */
      text: string;
      tokenIds: number[];
      logprobs?: TokenLogprob[];
    }
  | {
      type: 'finish';
      index: number;
      reason: FinishReason;
      /** Which stop string or stop token id ended it, if any. */
      stopReason?: string | number;
      usage: Usage;
    };

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens served from the prefix cache (DeepSeek's prompt_cache_hit_tokens). */
  cachedTokens: number;
}
