// A serving load generator in the manner of vLLM's `vllm bench serve` (benchmarks/benchmark_serving.py):
// closed-loop clients at a fixed concurrency stream /v1/completions requests (ignore_eos, fixed output
// length) and record TTFT, ITL (gaps between streamed chunks), TPOT = (e2e - ttft) / (out - 1) and E2EL.
//
// For soaks it also runs for a time instead of a request count (durationS), aborts a random fraction of
// requests mid-stream (abortRate: the client cancels the body after a random number of chunks, or after
// a random delay for non-streamed requests), and draws random request parameters (randomSampling:
// endpoint, stream, temperature, top_p, top_k, max_tokens, stop, seed, logit_bias, penalties, n).
// Outcomes are kept apart: completed, aborted (by us), rejected (429/503: overload or drain, which a
// server may answer by design) and failed (anything else: what a soak must not see).
import { Rng } from '../engine/rng.ts';

export interface LoadConfig {
  url: string;
  model?: string;
  apiKey?: string | null;
  concurrency: number;
  /** Requests in all; ignored when durationS is set. */
  numPrompts: number;
  inputWords: number;
  outputLen: number;
  seed: number;
  /** Run for this many seconds instead of numPrompts requests: no request starts later; those in flight finish. */
  durationS?: number;
  /** Fraction (0..1) of requests the client aborts mid-stream. */
  abortRate?: number;
  /** Random request parameters per request (see randomRequest); outputLen is then the mean max_tokens. */
  randomSampling?: boolean;
  /**
   * Guided decoding in fixed mode (vLLM's structured-output parameters on /v1/completions): 'json' =
   * guided_json with GUIDED_BENCH_SCHEMA (one free string: the model runs to max_tokens in it), 'regex' =
   * guided_regex GUIDED_BENCH_REGEX, 'choice' = guided_choice of GUIDED_BENCH_CHOICES (a few tokens each).
   */
  guided?: GuidedBenchKind | null;
  /** A request that has not finished after this long fails as a timeout (default 300 s). */
  requestTimeoutMs?: number;
}

export interface Percentiles { mean: number; p50: number; p90: number; p99: number }

export interface LoadResult {
  concurrency: number;
  /** Requests sent (completed + aborted + rejected + failed). */
  sent: number;
  completed: number;
  /** Requests the client aborted on purpose (abortRate). */
  aborted: number;
  /** 429 / 503 answers (overload, drain): by design, not failures. */
  rejected: number;
  /** Everything else that went wrong: HTTP errors, error events, broken streams, timeouts. */
  failed: number;
  durationS: number;
  inputTokens: number;
  outputTokens: number;
  requestThroughput: number;
  outputThroughput: number;
  totalThroughput: number;
  ttftMs: Percentiles;
  tpotMs: Percentiles;
  itlMs: Percentiles;
  e2elMs: Percentiles;
  /** Distinct failure messages (at most 10). */
  errors: string[];
}

const WORDS = ('the a of to and in is it you that he was for on are with as I his they be at one have this from or had by hot word but what some we can out other were all there when up use your how said an each she which do their time if will way about many then them write would like so these her long make thing see him two has look more day could go come did number sound no most people my over know water than call first who may down side been now find').split(' ');

/** Deterministic prompt text of `n` words for request `i`. */
export function promptText(seed: number, i: number, n: number): string {
  let s = (seed * 7919 + i * 104729) >>> 0;
  const out: string[] = [];
  for (let k = 0; k < n; k++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(WORDS[s % WORDS.length]!);
  }
  return out.join(' ');
}

export function percentiles(xs: number[]): Percentiles {
  if (xs.length === 0) return { mean: 0, p50: 0, p90: 0, p99: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => {
    const r = (p / 100) * (s.length - 1);
    const lo = Math.floor(r), hi = Math.ceil(r);
    return s[lo]! + (s[hi]! - s[lo]!) * (r - lo);
  };
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p50: q(50), p90: q(90), p99: q(99) };
}

/** One request as the load generator sends it. */
export interface PlannedRequest {
  endpoint: '/v1/completions' | '/v1/chat/completions';
  body: Record<string, unknown>;
  stream: boolean;
  /** Abort after this many streamed content chunks (0: before the first), or null: never. */
  abortAfterChunks: number | null;
  /** For a non-streamed request that is aborted: after this many ms. */
  abortAfterMs: number;
}

export type GuidedBenchKind = 'json' | 'regex' | 'choice';
export const GUIDED_BENCH_KINDS: readonly GuidedBenchKind[] = ['json', 'regex', 'choice'];
export const GUIDED_BENCH_SCHEMA = { type: 'object', properties: { text: { type: 'string' } }, required: ['text'], additionalProperties: false };
export const GUIDED_BENCH_REGEX = '([a-z]+ )*[a-z]+\\.';
export const GUIDED_BENCH_CHOICES = ['positive', 'negative', 'neutral'];

function guidedParams(kind: GuidedBenchKind | null | undefined): Record<string, unknown> {
  if (kind === 'json') return { guided_json: GUIDED_BENCH_SCHEMA };
  if (kind === 'regex') return { guided_regex: GUIDED_BENCH_REGEX };
  if (kind === 'choice') return { guided_choice: GUIDED_BENCH_CHOICES };
  return {};
}

/**
 * Request `i` of a run. Fixed mode: a streamed /v1/completions of outputLen tokens (ignore_eos, greedy).
 * Random mode: drawn from (seed, i): chat or completions, streamed 85%, temperature 0 (20%) or U(0.05, 1.5),
 * top_p, top_k, min_p, seed, stop words, logit_bias over ids < 2048, penalties, n = 2 (10%), ignore_eos,
 * max_tokens in 1..2 x outputLen.
 */
export function planRequest(cfg: Pick<LoadConfig, 'seed' | 'inputWords' | 'outputLen' | 'abortRate' | 'randomSampling' | 'model' | 'guided'>, i: number): PlannedRequest {
  const rng = new Rng(cfg.seed * 1_000_003 + i);
  const u = () => rng.next();
  const int = (lo: number, hi: number) => lo + Math.floor(u() * (hi - lo + 1));
  const model = cfg.model ? { model: cfg.model } : {};
  const abort = (cfg.abortRate ?? 0) > 0 && u() < cfg.abortRate!;
  if (!cfg.randomSampling) {
    return {
      endpoint: '/v1/completions', stream: true,
      body: {
        ...model, prompt: promptText(cfg.seed, i, cfg.inputWords), max_tokens: cfg.outputLen, ignore_eos: true, temperature: 0, stream: true, stream_options: { include_usage: true },
        ...guidedParams(cfg.guided),
      },
      abortAfterChunks: abort ? int(0, Math.max(0, cfg.outputLen - 1)) : null, abortAfterMs: 0,
    };
  }
  const maxTokens = int(1, Math.max(1, 2 * cfg.outputLen));
  const stream = u() < 0.85;
  const words = int(Math.max(1, Math.floor(cfg.inputWords / 4)), Math.max(1, cfg.inputWords * 2));
  const body: Record<string, unknown> = { ...model, max_tokens: maxTokens, stream };
  if (stream) body.stream_options = { include_usage: u() < 0.8 };
  body.temperature = u() < 0.2 ? 0 : 0.05 + u() * 1.45;
  if (u() < 0.5) body.top_p = 0.3 + u() * 0.7;
  if (u() < 0.5) body.top_k = u() < 0.2 ? -1 : int(1, 64);
  if (u() < 0.2) body.min_p = u() * 0.2;
  if (u() < 0.5) body.seed = int(0, 2 ** 31 - 1);
  if (u() < 0.3) body.stop = Array.from({ length: int(1, 3) }, () => ` ${WORDS[int(0, WORDS.length - 1)]!}`);
  if (u() < 0.3) {
    const bias: Record<string, number> = {};
    for (let k = int(1, 5); k > 0; k--) bias[String(int(0, 2047))] = Math.round(-100 + u() * 200);
    body.logit_bias = bias;
  }
  if (u() < 0.2) body.presence_penalty = -1 + u() * 2;
  if (u() < 0.2) body.frequency_penalty = -1 + u() * 2;
  if (u() < 0.1) body.n = 2;
  if (u() < 0.5) body.ignore_eos = true;
  const prompt = promptText(cfg.seed, i, words);
  const chat = u() < 0.5;
  if (chat) body.messages = [{ role: 'user', content: prompt }];
  else body.prompt = prompt;
  return {
    endpoint: chat ? '/v1/chat/completions' : '/v1/completions', body, stream,
    abortAfterChunks: abort ? int(0, maxTokens) : null, abortAfterMs: int(0, 2000),
  };
}

type Outcome = 'ok' | 'aborted' | 'rejected' | 'failed';
interface One { outcome: Outcome; error?: string; stream: boolean; ttft: number; e2e: number; itl: number[]; inTok: number; outTok: number }

interface StreamChunk {
  error?: { message: string };
  usage?: { prompt_tokens: number; completion_tokens: number } | null;
  choices?: { text?: string; delta?: { content?: string | null; reasoning_content?: string | null; tool_calls?: unknown }; finish_reason?: string | null }[];
}

async function oneRequest(cfg: LoadConfig, i: number): Promise<One> {
  const plan = planRequest(cfg, i);
  const t0 = performance.now();
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (cfg.apiKey) headers.authorization = `Bearer ${cfg.apiKey}`;
  const ac = new AbortController();
  let abortedByUs = false;
  const abortNow = () => { abortedByUs = true; ac.abort(); };
  const timeoutMs = cfg.requestTimeoutMs ?? 300_000;
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; ac.abort(); }, timeoutMs);
  const base: One = { outcome: 'failed', stream: plan.stream, ttft: 0, e2e: 0, itl: [], inTok: 0, outTok: 0 };
  let nsTimer: NodeJS.Timeout | null = null;
  try {
    if (!plan.stream && plan.abortAfterChunks !== null) nsTimer = setTimeout(abortNow, plan.abortAfterMs);
    const res = await fetch(`${cfg.url}${plan.endpoint}`, { method: 'POST', headers, body: JSON.stringify(plan.body), signal: ac.signal });
    if (!res.ok || !res.body) {
      const text = (await res.text()).slice(0, 200);
      const outcome: Outcome = res.status === 429 || res.status === 503 ? 'rejected' : 'failed';
      return { ...base, outcome, error: `HTTP ${res.status}: ${text}`, e2e: performance.now() - t0 };
    }
    if (!plan.stream) {
      const j = await res.json() as { usage?: { prompt_tokens: number; completion_tokens: number }; choices?: unknown[] };
      const e2e = performance.now() - t0;
      if (!Array.isArray(j.choices) || j.choices.length === 0 || !j.usage) return { ...base, error: `malformed response: ${JSON.stringify(j).slice(0, 200)}`, e2e };
      return { ...base, outcome: 'ok', ttft: e2e, e2e, inTok: j.usage.prompt_tokens, outTok: j.usage.completion_tokens };
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let ttft = -1;
    let last = 0;
    const itl: number[] = [];
    let inTok = 0, outTok = 0;
    let chunks = 0;
    let finishes = 0;
    let done = false;
    let error: string | undefined;
    for (;;) {
      // Checked before each read: 0 chunks aborts right after the headers (queued or in prefill).
      if (plan.abortAfterChunks !== null && chunks >= plan.abortAfterChunks && !done) {
        abortNow();
        await reader.cancel().catch(() => {});
        return { ...base, outcome: 'aborted', e2e: performance.now() - t0 };
      }
      const r = await reader.read();
      if (r.done) break;
      buf += dec.decode(r.value, { stream: true });
      let k;
      while ((k = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, k);
        buf = buf.slice(k + 2);
        if (!ev.startsWith('data: ')) continue;
        if (ev === 'data: [DONE]') { done = true; continue; }
        const j = JSON.parse(ev.slice(6)) as StreamChunk;
        if (j.error) { error = j.error.message; continue; }
        if (j.usage) { inTok = j.usage.prompt_tokens; outTok = j.usage.completion_tokens; }
        for (const ch of j.choices ?? []) {
          if (ch.finish_reason) finishes++;
          const text = ch.text ?? ch.delta?.content ?? ch.delta?.reasoning_content ?? '';
          if (text || ch.delta?.tool_calls) {
            const t = performance.now();
            if (ttft < 0) ttft = t - t0;
            else itl.push(t - last);
            last = t;
            chunks++;
          }
        }
      }
    }
    const e2e = performance.now() - t0;
    if (error) return { ...base, error: `error event: ${error}`, e2e };
    if (!done) return { ...base, error: 'stream ended without [DONE]', e2e };
    const n = typeof plan.body.n === 'number' ? plan.body.n : 1;
    if (finishes !== n) return { ...base, error: `${finishes} finish_reason chunks for n=${n}`, e2e };
    // Fixed mode asks for outputLen tokens with ignore_eos: none at all is a failure there.
    if (!cfg.randomSampling && ttft < 0) return { ...base, error: 'no tokens', e2e };
    return { outcome: 'ok', stream: true, ttft: ttft < 0 ? e2e : ttft, e2e, itl, inTok, outTok };
  } catch (e) {
    if (abortedByUs) return { ...base, outcome: 'aborted', e2e: performance.now() - t0 };
    if (timedOut) return { ...base, error: `timeout after ${timeoutMs} ms`, e2e: performance.now() - t0 };
    const err = e as Error & { cause?: { code?: string } };
    return { ...base, error: `${err.name}: ${err.message}${err.cause?.code ? ` (${err.cause.code})` : ''}`, e2e: performance.now() - t0 };
  } finally {
    clearTimeout(timer);
    if (nsTimer) clearTimeout(nsTimer);
  }
}

export async function runLoad(cfg: LoadConfig): Promise<LoadResult> {
  if (cfg.abortRate !== undefined && !(cfg.abortRate >= 0 && cfg.abortRate <= 1)) throw new RangeError(`abortRate must be in [0, 1], got ${cfg.abortRate}`);
  if (cfg.durationS !== undefined && !(cfg.durationS > 0)) throw new RangeError(`durationS must be > 0, got ${cfg.durationS}`);
  let next = 0;
  const results: One[] = [];
  const t0 = performance.now();
  const deadline = cfg.durationS !== undefined ? t0 + cfg.durationS * 1000 : Infinity;
  const more = (i: number) => (cfg.durationS !== undefined ? performance.now() < deadline : i < cfg.numPrompts);
  const worker = async () => {
    for (;;) {
      const i = next;
      if (!more(i)) return;
      next++;
      results.push(await oneRequest(cfg, i));
    }
  };
  await Promise.all(Array.from({ length: cfg.concurrency }, worker));
  const dur = (performance.now() - t0) / 1000;
  const ok = results.filter((r) => r.outcome === 'ok');
  const streamed = ok.filter((r) => r.stream);
  const count = (o: Outcome) => results.filter((r) => r.outcome === o).length;
  const inputTokens = ok.reduce((a, r) => a + r.inTok, 0);
  const outputTokens = ok.reduce((a, r) => a + r.outTok, 0);
  return {
    concurrency: cfg.concurrency,
    sent: results.length,
    completed: ok.length,
    aborted: count('aborted'),
    rejected: count('rejected'),
    failed: count('failed'),
    durationS: dur,
    inputTokens,
    outputTokens,
    requestThroughput: ok.length / dur,
    outputThroughput: outputTokens / dur,
    totalThroughput: (inputTokens + outputTokens) / dur,
    ttftMs: percentiles(streamed.map((r) => r.ttft)),
    tpotMs: percentiles(streamed.filter((r) => r.outTok > 1).map((r) => (r.e2e - r.ttft) / (r.outTok - 1))),
    itlMs: percentiles(streamed.flatMap((r) => r.itl)),
    e2elMs: percentiles(ok.map((r) => r.e2e)),
    errors: [...new Set(results.filter((r) => r.outcome === 'failed').map((r) => r.error!))].slice(0, 10),
  };
}
