// The HTTP API driven by the official `openai` client (and raw fetch where the wire format matters).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startFakeServer } from './testing.ts';

const srv = await startFakeServer({ delayMs: 1 });
const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });
after(() => srv.shutdown(1000));

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${srv.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

test('models: list, retrieve, unknown id is 404 with OpenAI error shape', async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), ['seekd-test']);
  assert.equal((await client.models.retrieve('seekd-test')).object, 'model');
  await assert.rejects(client.models.retrieve('nope'), (e: unknown) => e instanceof OpenAI.NotFoundError);
  const r = await post('/v1/chat/completions', { model: 'gpt-9', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.status, 404);
  assert.deepEqual(await r.json(), { error: { message: 'The model `gpt-9` does not exist.', type: 'invalid_request_error', param: 'model', code: 'model_not_found' } });
});

test('chat completion: shape, usage with DeepSeek cache fields, max_tokens, unknown fields ignored', async () => {
  const body = { model: 'seekd-test', messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 5, temperature: 0, some_future_field: { x: 1 } } as never;
  const r = await client.chat.completions.create(body);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0]!.message.role, 'assistant');
  assert.equal(typeof r.choices[0]!.message.content, 'string');
  assert.ok(['length', 'stop'].includes(r.choices[0]!.finish_reason));
  const u = r.usage as unknown as Record<string, number>;
  assert.ok(u.completion_tokens! <= 5 && u.completion_tokens! >= 1);
  assert.equal(u.prompt_cache_hit_tokens! + u.prompt_cache_miss_tokens!, u.prompt_tokens);
  assert.equal(u.total_tokens, u.prompt_tokens! + u.completion_tokens!);
  // Same request again: greedy output is identical.
  const r2 = await client.chat.completions.create(body);
  assert.equal(r2.choices[0]!.message.content, r.choices[0]!.message.content);
});

test('streaming: role chunk first, deltas, finish_reason chunk, usage chunk with choices [], [DONE]', async () => {
  const res = await post('/v1/chat/completions', { model: 'seekd-test', messages: [{ role: 'user', content: 'Stream please' }], max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
  const text = await res.text();
  const events = text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  assert.equal(events.at(-1), '[DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  assert.deepEqual(chunks[0].choices, [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
  assert.equal(chunks[0].usage, null);
  const usage = chunks.at(-1);
  assert.deepEqual(usage.choices, []);
  assert.equal(usage.usage.completion_tokens, 6);
  const fin = chunks.at(-2);
  assert.equal(fin.choices[0].finish_reason, 'length');
  for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
  // The SDK parses the same stream.
  const stream = await client.chat.completions.create({ model: 'seekd-test', messages: [{ role: 'user', content: 'Stream please' }], max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let content = '';
  let sawUsage = false;
  for await (const ch of stream) {
    content += ch.choices[0]?.delta.content ?? '';
    if (ch.usage) sawUsage = true;
  }
  assert.ok(sawUsage);
  const nonStream = await client.chat.completions.create({ model: 'seekd-test', messages: [{ role: 'user', content: 'Stream please' }], max_tokens: 6, temperature: 0 });
  assert.equal(content, nonStream.choices[0]!.message.content);
});

test('400s: bad parameter (with param), malformed JSON, context_length_exceeded (OpenAI text), n and top_logprobs', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'seekd-test', messages: [{ role: 'user', content: 'x' }], temperature: 3 }), (e: unknown) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal((e.error as { param: string }).param, 'temperature');
    return true;
  });
  const bad = await post('/v1/chat/completions', '{"model": "seekd-test", "messages": [');
  assert.equal(bad.status, 400);
  assert.equal(((await bad.json()) as { error: { code: string } }).error.code, 'invalid_json');
  const long = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], max_tokens: 5000 });
  assert.equal(long.status, 400);
  const err = ((await long.json()) as { error: { message: string; code: string; param: string } }).error;
  assert.equal(err.code, 'context_length_exceeded');
  assert.match(err.message, /^This model's maximum context length is 1024 tokens\. However, you requested \d+ tokens \(\d+ in the messages, 5000 in the completion\)\./);
  assert.equal(srv.runner.forwards > 0, true);
  const before = srv.runner.forwards;
  await post('/v1/completions', { prompt: 'x', max_tokens: 2000 });
  assert.equal(srv.runner.forwards, before, 'no compute for a rejected request');
  const nres = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], n: 0 });
  assert.equal(((await nres.json()) as { error: { param: string } }).error.param, 'n');
});

test('413 on an oversized body', async () => {
  const r = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x'.repeat(5 * 1024 * 1024) }] });
  assert.equal(r.status, 413);
  assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'request_too_large');
});

test('completions: text, n=2 with seed, logprobs, FIM suffix; unknown URL is a 404 error object', async () => {
  const r = await client.completions.create({ model: 'seekd-test', prompt: 'Once upon a time', max_tokens: 4, n: 2, seed: 7, temperature: 1, logprobs: 2 });
  assert.equal(r.choices.length, 2);
  const lp = r.choices[0]!.logprobs!;
  assert.equal(lp.tokens!.length, 4);
  assert.equal(lp.top_logprobs![0] && Object.keys(lp.top_logprobs![0]).length <= 2, true);
  assert.ok(lp.token_logprobs!.every((x) => x <= 0));
  const again = await client.completions.create({ model: 'seekd-test', prompt: 'Once upon a time', max_tokens: 4, n: 2, seed: 7, temperature: 1 });
  assert.deepEqual(again.choices.map((c) => c.text), r.choices.map((c) => c.text));
  const fim = await client.completions.create({ model: 'seekd-test', prompt: 'def f(', suffix: '\n    return x', max_tokens: 3 });
  assert.equal(fim.choices.length, 1);
  const nf = await fetch(`${srv.url}/v1/nothing`);
  assert.equal(nf.status, 404);
  assert.equal(((await nf.json()) as { error: { code: string } }).error.code, 'unknown_url');
});

test('chat logprobs and reasoning split with chat_template_kwargs.thinking', async () => {
  const r = await client.chat.completions.create({ model: 'seekd-test', messages: [{ role: 'user', content: 'think' }], max_tokens: 4, logprobs: true, top_logprobs: 3, chat_template_kwargs: { thinking: true } } as never);
  const ch = r.choices[0]!;
  assert.equal(ch.logprobs!.content!.length, 4);
  assert.equal(ch.logprobs!.content![0]!.top_logprobs.length, 3);
  // Without </think> in the output, everything so far is reasoning.
  const msg = ch.message as unknown as { content: string; reasoning_content: string };
  assert.equal(msg.content, '');
  assert.ok(msg.reasoning_content.length > 0);
});

test('a client that disconnects mid-stream aborts its request and frees its KV blocks', async () => {
  const ac = new AbortController();
  const res = await fetch(`${srv.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, signal: ac.signal,
    body: JSON.stringify({ messages: [{ role: 'user', content: 'long' }], max_tokens: 900, ignore_eos: true, stream: true }),
  });
  const reader = res.body!.getReader();
  let got = 0;
  while (got < 5) { const { value } = await reader.read(); got += (new TextDecoder().decode(value).match(/data: /g) ?? []).length; }
  assert.ok(srv.llm.engine.kvUsage() > 0);
  ac.abort();
  for (let i = 0; i < 100 && srv.llm.engine.numLive > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(srv.llm.engine.numLive, 0);
  assert.equal(srv.llm.engine.kvUsage(), 0);
});

test('metrics expose vLLM names with model_name', async () => {
  const t = await (await fetch(`${srv.url}/metrics`)).text();
  for (const name of ['vllm:time_to_first_token_seconds_bucket', 'vllm:inter_token_latency_seconds_count', 'vllm:e2e_request_latency_seconds_sum', 'vllm:request_queue_time_seconds_count',
    'vllm:num_requests_running', 'vllm:num_requests_waiting', 'vllm:kv_cache_usage_perc', 'vllm:prefix_cache_queries_total', 'vllm:prefix_cache_hits_total',
    'vllm:num_preemptions_total', 'vllm:prompt_tokens_total', 'vllm:generation_tokens_total']) {
    assert.match(t, new RegExp(`^${name}\\{[^}]*model_name="seekd-test"`, 'm'), name);
  }
  assert.match(t, /^vllm:kv_cache_usage_perc\{model_name="seekd-test"\} 0$/m);
});
