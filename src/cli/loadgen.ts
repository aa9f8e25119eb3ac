// A serving load generator in the manner of vLLM's `vllm bench serve` (benchmarks/benchmark_serving.py):
// closed-loop clients at a fixed concurrency stream /v1/completions requests (ignore_eos, fixed output
// length) and record TTFT, ITL (gaps between streamed chunks), TPOT = (e2e - ttft) / (out - 1) and E2EL.

export interface LoadConfig {
  url: string;
  model?: string;
  apiKey?: string | null;
  concurrency: number;
  numPrompts: number;
  inputWords: number;
  outputLen: number;
  seed: number;
}

export interface Percentiles { mean: number; p50: number; p90: number; p99: number }

export interface LoadResult {
  concurrency: number;
  completed: number;
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

interface One { ok: boolean; error?: string; ttft: number; e2e: number; itl: number[]; inTok: number; outTok: number }

async function oneRequest(cfg: LoadConfig, i: number): Promise<One> {
  const t0 = performance.now();
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (cfg.apiKey) headers.authorization = `Bearer ${cfg.apiKey}`;
  const res = await fetch(`${cfg.url}/v1/completions`, {
    method: 'POST', headers,
    body: JSON.stringify({
      ...(cfg.model ? { model: cfg.model } : {}), prompt: promptText(cfg.seed, i, cfg.inputWords), max_tokens: cfg.outputLen,
      ignore_eos: true, temperature: 0, stream: true, stream_options: { include_usage: true },
    }),
  });
  if (!res.ok || !res.body) return { ok: false, error: `HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`, ttft: 0, e2e: 0, itl: [], inTok: 0, outTok: 0 };
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let ttft = -1;
  let last = 0;
  const itl: number[] = [];
  let inTok = 0, outTok = 0;
  let error: string | undefined;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const j = JSON.parse(ev.slice(6)) as { error?: { message: string }; usage?: { prompt_tokens: number; completion_tokens: number } | null; choices: { text: string }[] };
      if (j.error) { error = j.error.message; continue; }
      if (j.usage) { inTok = j.usage.prompt_tokens; outTok = j.usage.completion_tokens; }
      if (j.choices.length > 0 && j.choices[0]!.text) {
        const t = performance.now();
        if (ttft < 0) ttft = t - t0;
        else itl.push(t - last);
        last = t;
      }
    }
  }
  const e2e = performance.now() - t0;
  if (error || ttft < 0) return { ok: false, error: error ?? 'no tokens', ttft: 0, e2e, itl: [], inTok, outTok };
  return { ok: true, ttft, e2e, itl, inTok, outTok };
}

export async function runLoad(cfg: LoadConfig): Promise<LoadResult> {
  let next = 0;
  const results: One[] = [];
  const t0 = performance.now();
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= cfg.numPrompts) return;
      try {
        results.push(await oneRequest(cfg, i));
      } catch (e) {
        results.push({ ok: false, error: (e as Error).message, ttft: 0, e2e: 0, itl: [], inTok: 0, outTok: 0 });
      }
    }
  };
  await Promise.all(Array.from({ length: cfg.concurrency }, worker));
  const dur = (performance.now() - t0) / 1000;
  const ok = results.filter((r) => r.ok);
  const inputTokens = ok.reduce((a, r) => a + r.inTok, 0);
  const outputTokens = ok.reduce((a, r) => a + r.outTok, 0);
  return {
    concurrency: cfg.concurrency,
    completed: ok.length,
    failed: results.length - ok.length,
    durationS: dur,
    inputTokens,
    outputTokens,
    requestThroughput: ok.length / dur,
    outputThroughput: outputTokens / dur,
    totalThroughput: (inputTokens + outputTokens) / dur,
    ttftMs: percentiles(ok.map((r) => r.ttft)),
    tpotMs: percentiles(ok.filter((r) => r.outTok > 1).map((r) => (r.e2e - r.ttft) / (r.outTok - 1))),
    itlMs: percentiles(ok.flatMap((r) => r.itl)),
    e2elMs: percentiles(ok.map((r) => r.e2e)),
    errors: [...new Set(results.filter((r) => !r.ok).map((r) => r.error!))].slice(0, 5),
  };
}
