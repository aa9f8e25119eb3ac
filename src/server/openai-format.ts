// Builders for OpenAI response objects (chat.completion, chat.completion.chunk, text_completion) and
// usage with DeepSeek's prompt_cache_hit_tokens / prompt_cache_miss_tokens.
import { randomUUID } from 'node:crypto';
import type { FinishReason, TokenLogprob, Usage } from '../engine/contracts.ts';

export function newId(prefix: string): string {
  return `${prefix}-${randomUUID().replace(/-/g, '')}`;
}

export interface UsageJson {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
  prompt_cache_hit_tokens: number;
  prompt_cache_miss_tokens: number;
}

/** Usage of a request: the prompt counted once, completions summed over choices. */
export function usageJson(prompt: number, completion: number, cached: number): UsageJson {
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
    prompt_cache_hit_tokens: cached,
    prompt_cache_miss_tokens: prompt - cached,
  };
}

export function sumUsage(prompt: number, per: (Usage | undefined)[]): UsageJson {
  let completion = 0;
  for (const u of per) completion += u?.completionTokens ?? 0;
  return usageJson(prompt, completion, per[0]?.cachedTokens ?? 0);
}

/** OpenAI has no 'abort' finish reason; an aborted request is never answered anyway. */
export function finishReasonJson(r: FinishReason | null): string | null {
  return r === 'abort' ? 'stop' : r;
}

export function chatLogprobs(lps: TokenLogprob[]) {
  return {
    content: lps.map((l) => ({
      token: l.token, logprob: l.logprob, bytes: l.bytes,
      top_logprobs: l.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
    })),
  };
}

export function completionLogprobs(lps: TokenLogprob[], textOffset0: number) {
  let off = textOffset0;
  const text_offset: number[] = [];
  for (const l of lps) { text_offset.push(off); off += l.token.length; }
  return {
    tokens: lps.map((l) => l.token),
    token_logprobs: lps.map((l) => l.logprob),
    top_logprobs: lps.map((l) => Object.fromEntries(l.top.map((t) => [t.token, t.logprob]))),
    text_offset,
  };
}
