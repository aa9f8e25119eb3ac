// The engine as the server and CLI see it: a model directory (or the built-in model) loaded into a
// runner, its tokenizer and chat template, and the Engine that schedules requests over them.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BLOCK_SIZE, type ModelRunner } from './contracts.ts';
import { Engine, type EngineConfig, type EngineRecovery } from './engine.ts';
import { BUILTIN_MODEL_ID, builtinModelDir } from './builtin/builtin.ts';
import { DeepseekRunner, type RoutedExpertsHost } from './model-runner.ts';
import { GpuDeepseekRunner } from './gpu-runner.ts';
import { fittingKvBlocks, MemoryPlanError, planForDir } from '../model/memory-plan.ts';
import { ChatTokenizer, type ChatMessage, type ChatTool, type RenderedPrompt } from './tokenizer.ts';

export interface LlmOptions {
  /** Model directory; omitted = the built-in model (generated on first use). */
  model?: string;
  /** Served model id (default: the directory name, or "seekd-builtin"). */
  modelId?: string;
  backend?: string;
  threads?: number;
  /** Context limit (default: min(config max_position_embeddings, 4096)). */
  maxModelLen?: number;
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  maxWaiting?: number;
  /**
   * KV blocks (default: enough for maxNumSeqs sequences of maxModelLen, capped at 4096 blocks, and
   * lowered to what the memory plan leaves room for, never below one sequence of maxModelLen).
   */
  numBlocks?: number;
  /** Quantize BF16/F16/F32 linear weights to FP8 while loading. */
  quantize?: 'fp8';
  /**
   * MTP speculative decoding (--speculative mtp): the checkpoint's MTP module drafts up to this many
   * tokens per step and the model verifies them (0 or absent: off).
   */
  numSpeculativeTokens?: number;
  /**
   * Starts the holder of the routed experts for a model directory (expert parallelism: the CLI's --ep
   * starts ExpertParallel ranks); the model is loaded without them. A rebuilt runner starts a fresh one.
   */
  routedExperts?: (dir: string) => Promise<RoutedExpertsHost>;
  onStatus?: (msg: string) => void;
  onProgress?: (done: number, total: number) => void;
}

export class Llm {
  private constructor(
    readonly modelId: string,
    readonly modelDir: string,
    readonly engine: Engine,
    readonly tokenizer: ChatTokenizer,
  ) {}

  /** The engine's current runner (a rebuilt one after a runner failure). */
  get runner(): ModelRunner {
    return this.engine.runner;
  }

  get maxModelLen(): number {
    return this.engine.config.maxModelLen;
  }

  static async load(opts: LlmOptions = {}): Promise<Llm> {
    const dir = opts.model ? resolve(opts.model) : builtinModelDir();
    const modelId = opts.modelId ?? (opts.model ? dir.split(/[\\/]/).filter(Boolean).pop()! : BUILTIN_MODEL_ID);
    const tokenizer = ChatTokenizer.load(dir);
    let maxPos = 4096;
    try {
      const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { max_position_embeddings?: number };
      if (typeof cfg.max_position_embeddings === 'number') maxPos = cfg.max_position_embeddings;
    } catch {
      // the model loader reports a missing or bad config.json with its own typed error
    }
    const maxModelLen = opts.maxModelLen ?? Math.min(maxPos, 4096);
    const maxNumSeqs = opts.maxNumSeqs ?? 32;
    const perSeq = Math.ceil(maxModelLen / BLOCK_SIZE);
    const maxNumBatchedTokens = opts.maxNumBatchedTokens ?? 512;
    // The memory plan, before any weight is read: a model that cannot fit stops here with its numbers.
    const spec = (opts.numSpeculativeTokens ?? 0) > 0;
    // Drafts count against the step's token budget like any token; the MTP module adds its weights and cache.
    const planOpts = { quantize: opts.quantize, maxModelLen, maxNumSeqs, maxBatchTokens: maxNumBatchedTokens, mtp: spec, mtpCache: spec };
    const wanted = opts.numBlocks ?? Math.max(perSeq, Math.min(4096, perSeq * maxNumSeqs));
    let plan = planForDir(dir, { ...planOpts, kvBlocks: wanted });
    let numBlocks = wanted;
    if (!plan.fits && opts.numBlocks === undefined) {
      numBlocks = Math.max(perSeq, fittingKvBlocks(plan, wanted));
      plan = planForDir(dir, { ...planOpts, kvBlocks: numBlocks }, plan.available);
      if (plan.fits) opts.onStatus?.(`KV cache lowered to ${numBlocks * BLOCK_SIZE} tokens (${numBlocks} blocks) to fit the memory plan`);
    }
    if (!plan.fits) throw new MemoryPlanError(plan);
    const runnerOpts = { backend: opts.backend, threads: opts.threads, numBlocks, quantize: opts.quantize, routedExperts: opts.routedExperts, numSpeculativeTokens: opts.numSpeculativeTokens };
    // --backend webgpu: the GPU-resident forward and cache (gpu-runner.ts); the CPU backends: DeepseekRunner.
    const Runner = opts.backend === 'webgpu' ? GpuDeepseekRunner : DeepseekRunner;
    const runner = await Runner.load(dir, { ...runnerOpts, onProgress: opts.onProgress });
    const config: EngineConfig = {
      maxModelLen,
      maxNumSeqs,
      maxNumBatchedTokens,
      maxWaiting: opts.maxWaiting ?? 256,
    };
    // A forward that throws (a wasm worker died, a read error...) fails the requests in flight; the engine
    // then loads a fresh runner from the same directory and serves again (or, if that fails, is 'failed').
    const recovery = {
      rebuildRunner: async (cause: Error) => {
        opts.onStatus?.(`model runner failed (${cause.name}: ${cause.message}); reloading ${dir}`);
        return Runner.load(dir, runnerOpts);
      },
    };
    return new Llm(modelId, dir, new Engine(runner, tokenizer, config, recovery), tokenizer);
  }

  /** For tests: an Llm over any runner and tokenizer. */
  static fromParts(modelId: string, runner: ModelRunner, tokenizer: ChatTokenizer, config: EngineConfig, recovery?: EngineRecovery): Llm {
    return new Llm(modelId, '', new Engine(runner, tokenizer, config, recovery), tokenizer);
  }

  /** `maxTokens`: the prompt's token budget (TokenBudgetError past it, found as early as possible). */
  renderChat(messages: ChatMessage[], tools?: ChatTool[], extra?: Record<string, unknown>, maxTokens?: number): RenderedPrompt {
    return this.tokenizer.applyChatTemplate(messages, { tools, addGenerationPrompt: true, extra, maxTokens });
  }

  /** A /v1/completions prompt: text (BOS added per tokenizer_config) or token ids as given; FIM when a suffix is given. */
  encodeCompletion(prompt: string | number[], suffix?: string): number[] {
    if (Array.isArray(prompt)) return prompt;
    if (suffix !== undefined) {
      const t = this.tokenizer;
      const [b, h, e] = ['<｜fim▁begin｜>', '<｜fim▁hole｜>', '<｜fim▁end｜>'].map((s) => t.idOf(s));
      if (b === undefined || h === undefined || e === undefined) throw new FimUnsupportedError();
      const ids = [b, ...t.encodePlain(prompt), h, ...t.encodePlain(suffix), e];
      return t.addBos ? [t.bosId!, ...ids] : ids;
    }
    return this.tokenizer.encodePrompt(prompt);
  }

  async close(): Promise<void> {
    await this.runner.dispose?.();
  }
}

export class FimUnsupportedError extends Error {
  override name = 'FimUnsupportedError';
  constructor() {
    super('this model has no fill-in-the-middle tokens, so `suffix` is not supported');
  }
}

export function modelDirExists(dir: string): boolean {
  return existsSync(join(dir, 'config.json'));
}
