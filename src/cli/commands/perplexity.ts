// `seekd perplexity`: how well a model predicts a text file. The text is tokenized with the model's
// tokenizer (as plain text: special-token strings stay text), preceded by BOS when the tokenizer has
// one, and every token after the first position is scored: nll = mean over scored tokens of
// −ln p(token | the tokens before it), ppl = e^nll. Texts longer than --context are cut into windows
// of --context positions that overlap by one token, so each token is scored exactly once, from the
// tokens of its own window (like lm-evaluation-harness's rolling log-likelihood with no extra context).
import { readFileSync, statSync } from 'node:fs';
import type { Command } from 'commander';
import { builtinModelDir } from '../../engine/builtin/builtin.ts';
import { ChatTokenizer, TokenizerLoadError } from '../../engine/tokenizer.ts';
import type { DeepseekModel } from '../../model/deepseek.ts';
import { LatentCache } from '../../model/latent-cache.ts';
import { UsageError } from '../errors.ts';
import { defaultBackend, openModel, parseAttn, positiveInt } from '../model-args.ts';
import { backendNames } from '../../kernels/index.ts';

interface PerplexityOptions {
  model?: string; file: string; json?: boolean; context?: string; backend?: string; threads?: string; attn?: string;
}

export interface PerplexityResult {
  /** Tokens scored. */
  tokens: number;
  /** Mean negative log-likelihood per scored token, in nats. */
  nll: number;
  /** e^nll. */
  ppl: number;
  /** The text's token ids (without the BOS put in front). */
  ids: number[];
}

/**
 * Σ −ln p(seq[p] | seq[a..p)) over p ≥ 1, in windows [a, a + context) that overlap by one position.
 * Returns the sum and the number of scored positions (seq.length − 1).
 */
export function sequenceNll(model: DeepseekModel, seq: readonly number[], context: number, attn: 'absorb' | 'naive' = 'absorb'): { sum: number; count: number } {
  if (context < 2) throw new RangeError('context must be at least 2 positions');
  const V = model.config.vocab_size;
  const cache = model.createCache(LatentCache.blocksFor(Math.min(context, seq.length)));
  const blockTable = Int32Array.from({ length: cache.numBlocks }, (_, i) => i);
  let sum = 0, count = 0;
  for (let a = 0; a + 1 < seq.length; a += context - 1) {
    const end = Math.min(a + context, seq.length);
    const n = end - a;
    const logits = model.forward({ tokens: Int32Array.from(seq.slice(a, end)), seqs: [{ blockTable, numCached: 0, numNew: n }] }, cache, { attn, allPositions: true });
    for (let i = 0; i + 1 < n; i++) {
      // −log_softmax(row i)[next], in double.
      const row = logits.subarray(i * V, (i + 1) * V);
      let mx = -Infinity;
      for (let v = 0; v < V; v++) mx = Math.max(mx, row[v]!);
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(row[v]! - mx);
      sum += mx + Math.log(z) - row[seq[a + i + 1]!]!;
      count++;
    }
  }
  return { sum, count };
}

/** Tokenizes `text` and scores it (see the file comment). */
export function perplexity(model: DeepseekModel, tokenizer: ChatTokenizer, text: string, context: number, attn: 'absorb' | 'naive' = 'absorb'): PerplexityResult {
  const ids = tokenizer.encodePlain(text);
  const seq = tokenizer.bosId !== null ? [tokenizer.bosId, ...ids] : ids;
  if (seq.length < 2) throw new UsageError(`the text has ${ids.length} token(s): nothing to score (need at least ${tokenizer.bosId !== null ? 1 : 2})`);
  for (const id of seq) if (id >= model.config.vocab_size) throw new UsageError(`token id ${id} from the tokenizer is outside the model's vocabulary [0, ${model.config.vocab_size})`);
  const { sum, count } = sequenceNll(model, seq, context, attn);
  const nll = sum / count;
  return { tokens: count, nll, ppl: Math.exp(nll), ids };
}

export function register(program: Command): void {
  program.command('perplexity').description('perplexity of a model on a text file (mean negative log-likelihood per token)')
    .requiredOption('--file <path>', 'UTF-8 text to score')
    .option('--model <dir>', 'model directory (HF layout, with tokenizer.json); default: the built-in model')
    .option('--context <n>', 'positions per window (default: min(max_position_embeddings, 2048))')
    .option('--backend <name>', `kernel backend (${backendNames().join(', ')})`, defaultBackend())
    .option('--threads <n>', 'worker threads for the backend', '1')
    .option('--attn <form>', 'MLA form: absorb (default) or naive', 'absorb')
    .option('--json', 'print {"tokens", "nll", "ppl", "ids"}')
    .action(async (opts: PerplexityOptions) => {
      const attn = parseAttn(opts.attn);
      let text: string;
      try {
        if (!statSync(opts.file).isFile()) throw new Error('not a file');
        text = readFileSync(opts.file, 'utf8');
      } catch {
        throw new UsageError(`--file '${opts.file}' cannot be read`);
      }
      const dir = opts.model ?? builtinModelDir();
      let tokenizer: ChatTokenizer;
      try {
        tokenizer = ChatTokenizer.load(dir);
      } catch (e) {
        if (e instanceof TokenizerLoadError) throw new UsageError(e.message);
        throw e;
      }
      const { model, kernels } = await openModel({ model: dir, backend: opts.backend, threads: opts.threads, attn: opts.attn }, { mtp: false });
      try {
        const context = opts.context === undefined ? Math.min(model.config.max_position_embeddings, 2048) : positiveInt('context', opts.context);
        if (context < 2) throw new UsageError('--context must be at least 2');
        const r = perplexity(model, tokenizer, text, context, attn);
        if (opts.json) process.stdout.write(JSON.stringify(r) + '\n');
        else process.stdout.write(`tokens ${r.tokens}  nll ${r.nll.toFixed(4)}  ppl ${r.ppl.toFixed(3)}\n`);
      } finally {
        model.close();
        await kernels.dispose();
      }
    });
}
