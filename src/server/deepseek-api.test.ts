// DeepSeek's API extras and vLLM's tokenizer routes: `thinking: {type}`, guided decoding after </think>,
// /tokenize and /detokenize, /beta/completions, logprobs/top_logprobs (up to 20) streamed and not.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import type { ConstraintFactory, TokenConstraint } from '../engine/contracts.ts';
import { afterReasoning } from './reasoning-gate.ts';
import { startFakeServer } from './testing.ts';

const srv = await startFakeServer({ delayMs: 0 });
const keyed = await startFakeServer({ apiKey: 'k3y' });
const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });
after(async () => { await srv.shutdown(1000); await keyed.shutdown(1000); });

const post = async (path: string, body: unknown, base = srv.url, headers: Record<string, string> = {}) => {
  const r = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: r.status, json: (await r.json()) as any };
};
async function sse(path: string, body: unknown): Promise<any[]> {
  const r = await fetch(`${srv.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body as object, stream: true }) });
  const text = await r.text();
  return text.split('\n').filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]').map((l) => JSON.parse(l.slice(6)));
}
const thinkEnd = srv.llm.tokenizer.idOf('</think>')!;
const user = [{ role: 'user', content: 'Why is the sky blue?' }];

test('thinking {type: enabled} opens reasoning like chat_template_kwargs.thinking; disabled does not', async () => {
  const tokOn = await post('/tokenize', { messages: user, chat_template_kwargs: { thinking: true } });
  const r = await post('/v1/chat/completions', { messages: user, max_tokens: 4, temperature: 0, ignore_eos: true, thinking: { type: 'enabled' } });
  assert.equal(r.status, 200);
  assert.equal(r.json.usage.prompt_tokens, tokOn.json.count);
  assert.ok(r.json.choices[0].message.reasoning_content.length > 0);
  assert.equal(r.json.choices[0].message.content, '');
  const kw = await post('/v1/chat/completions', { messages: user, max_tokens: 4, temperature: 0, ignore_eos: true, chat_template_kwargs: { thinking: true } });
  assert.deepEqual(kw.json.choices[0].message, r.json.choices[0].message);
  const off = await post('/v1/chat/completions', { messages: user, max_tokens: 4, temperature: 0, ignore_eos: true, thinking: { type: 'disabled' }, chat_template_kwargs: { thinking: true } });
  const plain = await post('/tokenize', { messages: user });
  assert.equal(off.json.usage.prompt_tokens, plain.json.count);
  assert.ok(!(await post('/detokenize', { tokens: plain.json.tokens })).json.prompt.includes('<think>'));
  const chunks = await sse('/v1/chat/completions', { messages: user, max_tokens: 4, temperature: 0, ignore_eos: true, thinking: { type: 'enabled' } });
  const streamed = chunks.flatMap((c) => c.choices.map((ch: any) => ch.delta.reasoning_content ?? '')).join('');
  assert.equal(streamed, r.json.choices[0].message.reasoning_content);
  assert.equal((await post('/v1/chat/completions', { messages: user, thinking: { type: 'maybe' } })).json.error.param, 'thinking.type');
});

test("assistant history's reasoning_content is left out of the rendered prompt", async () => {
  const hist = (extra: object) => [...user, { role: 'assistant', content: 'Rayleigh scattering.', ...extra }, { role: 'user', content: 'More?' }];
  const withR = await post('/tokenize', { messages: hist({ reasoning_content: 'SECRET-CHAIN of thought' }), chat_template_kwargs: { thinking: true } });
  const without = await post('/tokenize', { messages: hist({}), chat_template_kwargs: { thinking: true } });
  assert.deepEqual(withR.json.tokens, without.json.tokens);
  const text = (await post('/detokenize', { tokens: withR.json.tokens })).json.prompt as string;
  assert.ok(text.includes('Rayleigh scattering.') && !text.includes('SECRET'), text);
  const chat = await post('/v1/chat/completions', { messages: hist({ reasoning_content: 'SECRET-CHAIN of thought' }), max_tokens: 1, thinking: { type: 'enabled' } });
  assert.equal(chat.json.usage.prompt_tokens, withR.json.count);
});

test('guided decoding with thinking: the grammar applies after </think>, reasoning comes back', async () => {
  // logit_bias makes </think> the first token; after it the grammar masks it (control tokens are outside grammars).
  const body = { messages: user, max_tokens: 40, temperature: 0, thinking: { type: 'enabled' }, logit_bias: { [thinkEnd]: 100 }, response_format: { type: 'json_object' } };
  const r = await post('/v1/chat/completions', body);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const msg = r.json.choices[0].message;
  assert.equal(msg.reasoning_content, '');
  if (r.json.choices[0].finish_reason === 'stop') JSON.parse(msg.content);
  else assert.match(msg.content, /^\s*\{/);
  // Without thinking the grammar applies from the first token and there is no reasoning part.
  const noThink = await post('/v1/chat/completions', { ...body, thinking: { type: 'disabled' } });
  assert.equal(noThink.json.choices[0].message.reasoning_content, undefined);
  assert.match(noThink.json.choices[0].message.content, /^\s*\{/);
  // With thinking and no bias the reasoning part is free text (the fake model never ends it here).
  const free = await post('/v1/chat/completions', { ...body, logit_bias: undefined, max_tokens: 8, ignore_eos: true });
  assert.ok(free.json.choices[0].message.reasoning_content.length > 0);
});

test('afterReasoning: every token until </think>, then the inner constraint', async () => {
  const seen: number[] = [];
  const inner: TokenConstraint = { mask: () => Int32Array.of(0b100), accept: (t) => { seen.push(t); return t === 2; }, get done() { return seen.length > 0; }, dispose() {} };
  const f: ConstraintFactory = { create: async () => inner };
  const c = await afterReasoning(f, 7, 40).create();
  const m = await c.mask();
  assert.equal(m.length, 2);
  assert.equal(m[0], -1);
  assert.equal(m[1], 0xff);
  assert.ok(c.accept(5) && c.accept(1) && !c.done);
  assert.ok(c.accept(7));
  assert.deepEqual(Array.from(await c.mask()), [4]);
  assert.ok(c.accept(2) && c.done);
  assert.deepEqual(seen, [2]);
});

test('/tokenize and /detokenize: prompt and messages, special tokens, round trip, validation, model check', async () => {
  const t = await post('/tokenize', { model: 'seekd-test', prompt: 'Hello world' });
  assert.equal(t.status, 200);
  assert.equal(t.json.max_model_len, 1024);
  assert.equal(t.json.count, t.json.tokens.length);
  const plain = await post('/tokenize', { prompt: 'Hello world', add_special_tokens: false });
  assert.deepEqual(plain.json.tokens, srv.llm.tokenizer.encodePlain('Hello world'));
  assert.equal((await post('/detokenize', { tokens: plain.json.tokens })).json.prompt, 'Hello world');
  const noGen = await post('/tokenize', { messages: user, add_generation_prompt: false });
  const gen = await post('/tokenize', { messages: user });
  assert.ok(gen.json.count > noGen.json.count);
  assert.equal((await post('/tokenize', { prompt: 'x', messages: user })).status, 400);
  assert.equal((await post('/tokenize', {})).status, 400);
  assert.equal((await post('/tokenize', { prompt: 'x', model: 'nope' })).status, 404);
  const big = await post('/detokenize', { tokens: [1, 99999] });
  assert.equal(big.status, 400);
  assert.equal(big.json.error.param, 'tokens');
  assert.equal((await post('/detokenize', { tokens: [-1] })).json.error.param, 'tokens.0');
  assert.equal((await post('/detokenize', { tokens: 'abc' })).status, 400);
  // Bounded by the context like the other routes (max_model_len 1024 here).
  for (const body of [{ prompt: 'word '.repeat(5000) }, { prompt: 'x'.repeat(200_000) }, { messages: [{ role: 'user', content: 'word '.repeat(5000) }] }]) {
    const r = await post('/tokenize', body);
    assert.equal(r.status, 400);
    assert.equal(r.json.error.code, 'context_length_exceeded');
  }
});

test('guided decoding with thinking, streamed, and a forced tool call after </think>', async () => {
  const base = { messages: user, max_tokens: 60, temperature: 0, thinking: { type: 'enabled' }, logit_bias: { [thinkEnd]: 100 } };
  const chunks = await sse('/v1/chat/completions', { ...base, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'], additionalProperties: false } } } });
  const content = chunks.flatMap((c) => c.choices.map((ch: any) => ch.delta.content ?? '')).join('');
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  assert.equal(typeof JSON.parse(content).a, 'number');
  const tools = [{ type: 'function', function: { name: 'get', parameters: { type: 'object', properties: { q: { type: 'string', maxLength: 8 } }, required: ['q'] } } }];
  const r = await post('/v1/chat/completions', { ...base, tools, tool_choice: 'required' });
  assert.equal(r.json.choices[0].finish_reason, 'tool_calls', JSON.stringify(r.json));
  assert.equal(r.json.choices[0].message.tool_calls[0].function.name, 'get');
  assert.equal(typeof JSON.parse(r.json.choices[0].message.tool_calls[0].function.arguments).q, 'string');
  assert.equal(r.json.choices[0].message.reasoning_content, '');
});

test('/tokenize, /detokenize and /beta/completions are behind the API key', async () => {
  for (const path of ['/tokenize', '/detokenize', '/beta/completions']) {
    const body = path === '/detokenize' ? { tokens: [5] } : { prompt: 'hi', max_tokens: 1 };
    assert.equal((await post(path, body, keyed.url)).status, 401, path);
    assert.equal((await post(path, body, keyed.url, { authorization: 'Bearer k3y' })).status, 200, path);
  }
});

test('/beta/completions is /v1/completions: FIM with suffix, same output', async () => {
  const body = { prompt: 'def f(', suffix: '\n    return x', max_tokens: 4, temperature: 0, ignore_eos: true };
  const beta = await post('/beta/completions', body);
  const v1 = await post('/v1/completions', body);
  assert.equal(beta.status, 200);
  assert.equal(beta.json.object, 'text_completion');
  assert.equal(beta.json.choices[0].text, v1.json.choices[0].text);
  assert.equal(beta.json.usage.prompt_tokens, v1.json.usage.prompt_tokens);
});

test('logprobs with top_logprobs 20: chat and completions, streamed and not; 21 is a 400', async () => {
  const chat = await client.chat.completions.create({ model: 'seekd-test', messages: user as never, max_tokens: 3, ignore_eos: true, logprobs: true, top_logprobs: 20 } as never) as any;
  assert.equal(chat.choices[0].logprobs.content.length, 3);
  for (const e of chat.choices[0].logprobs.content) assert.equal(e.top_logprobs.length, 20);
  const cs = await sse('/v1/chat/completions', { messages: user, max_tokens: 3, ignore_eos: true, logprobs: true, top_logprobs: 20 });
  const clp = cs.flatMap((c) => c.choices.flatMap((ch: any) => ch.logprobs?.content ?? []));
  assert.equal(clp.length, 3);
  for (const e of clp) { assert.equal(e.top_logprobs.length, 20); assert.ok(e.logprob <= 0 && Array.isArray(e.bytes)); }
  const comp = await post('/v1/completions', { prompt: 'Once', max_tokens: 3, ignore_eos: true, logprobs: 20 });
  assert.equal(comp.json.choices[0].logprobs.tokens.length, 3);
  assert.equal(Object.keys(comp.json.choices[0].logprobs.top_logprobs[0]).length > 0, true);
  const ps = await sse('/beta/completions', { prompt: 'Once', max_tokens: 3, ignore_eos: true, logprobs: 20 });
  const toks = ps.flatMap((c) => c.choices.flatMap((ch: any) => ch.logprobs?.tokens ?? []));
  assert.equal(toks.length, 3);
  assert.equal((await post('/v1/chat/completions', { messages: user, logprobs: true, top_logprobs: 21 })).json.error.param, 'top_logprobs');
  assert.equal((await post('/v1/completions', { prompt: 'x', logprobs: 21 })).json.error.param, 'logprobs');
});
