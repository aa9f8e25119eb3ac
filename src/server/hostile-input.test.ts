// Issue #14, "hostile input at every door": every request field is bounded before tokenization or
// template rendering, oversized prompts are 400 context_length_exceeded before the heavy work, ids
// outside the vocabulary are refused, body and header limits hold, and the server stays up.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { LIMITS } from './schemas.ts';
import { startFakeServer } from './testing.ts';

type Srv = Awaited<ReturnType<typeof startFakeServer>>;
let srv: Srv;
before(async () => { srv = await startFakeServer(); });
after(async () => { await srv.shutdown(1000); });

interface ErrBody { error: { message: string; type: string; param: string | null; code: string | null } }

async function post(path: string, body: unknown): Promise<{ status: number; json: unknown; ms: number }> {
  const t0 = performance.now();
  const r = await fetch(srv.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const json = await r.json();
  return { status: r.status, json, ms: performance.now() - t0 };
}

async function bad(path: string, body: unknown, param: string | null, code?: string): Promise<ErrBody> {
  const r = await post(path, body);
  assert.equal(r.status, 400, `${String(param)}: ${JSON.stringify(r.json).slice(0, 200)}`);
  const e = r.json as ErrBody;
  assert.equal(e.error.type, 'invalid_request_error');
  assert.equal(e.error.param, param, e.error.message);
  if (code) assert.equal(e.error.code, code, e.error.message);
  return e;
}

const chat = (over: Record<string, unknown> = {}) => ({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, ...over });

test('an 800 KB message is 400 context_length_exceeded, before tokenizing (no stack overflow, no 500)', async () => {
  for (const content of ['x '.repeat(400_000), 'x'.repeat(800_000), '<｜User｜>'.repeat(80_000)]) {
    const r = await post('/v1/chat/completions', chat({ messages: [{ role: 'user', content }] }));
    assert.equal(r.status, 400, JSON.stringify(r.json).slice(0, 300));
    const e = (r.json as ErrBody).error;
    assert.equal(e.code, 'context_length_exceeded');
    assert.equal(e.param, 'messages');
    assert.match(e.message, /^This model's maximum context length is 1024 tokens\. However, you requested at least \d+ tokens/);
    // Tokenizing 800 KB takes seconds here; the byte bound answers in well under one.
    assert.ok(r.ms < 1500, `${r.ms} ms`);
  }
  // Just past the budget but under the byte bound: tokenized, and refused with the exact count.
  const e = await bad('/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'ab '.repeat(1100) }] }), 'messages', 'context_length_exceeded');
  assert.match(e.error.message, /you requested \d+ tokens \(\d+ in the messages, 2 in the completion\)/);
  const ok = await post('/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'ab '.repeat(100) }] }));
  assert.equal(ok.status, 200);
});

test('completions: an 800 KB prompt and too many token ids are 400 before encoding', async () => {
  const r = await post('/v1/completions', { prompt: 'y '.repeat(400_000), max_tokens: 2 });
  assert.equal(r.status, 400);
  assert.equal((r.json as ErrBody).error.code, 'context_length_exceeded');
  assert.ok(r.ms < 1500, `${r.ms} ms`);
  const s = await bad('/v1/completions', { prompt: 'y', suffix: 'z '.repeat(400_000), max_tokens: 2 }, 'prompt', 'context_length_exceeded');
  assert.match(s.error.message, /at least/);
  const ids = await bad('/v1/completions', { prompt: Array.from({ length: 5000 }, (_, i) => 3 + (i % 200)), max_tokens: 2 }, 'prompt', 'context_length_exceeded');
  assert.match(ids.error.message, /you requested 5002 tokens \(5000 in the prompt, 2 in the completion\)/);
});

test('tools: a 1 MB schema, a deep schema, too many tools are 400 with their param', async () => {
  const props: Record<string, unknown> = {};
  for (let i = 0; i < 20_000; i++) props[`p${i}`] = { type: 'string', description: 'y'.repeat(30) };
  const big = { type: 'function', function: { name: 'f', parameters: { type: 'object', properties: props } } };
  await bad('/v1/chat/completions', chat({ tools: [big] }), 'tools', 'invalid_value');
  let deep: Record<string, unknown> = { type: 'string' };
  for (let i = 0; i < LIMITS.toolSchemaDepth; i++) deep = { a: deep }; // depth limit + 1, inside the body's limit
  await bad('/v1/chat/completions', chat({ tools: [{ type: 'function', function: { name: 'f', parameters: deep } }] }), 'tools.0.function.parameters', 'invalid_value');
  const many = Array.from({ length: LIMITS.tools + 1 }, (_, i) => ({ type: 'function', function: { name: `f${i}` } }));
  await bad('/v1/chat/completions', chat({ tools: many }), 'tools');
  // Within the bounds: rendered and served.
  const fine = await post('/v1/chat/completions', chat({ tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }] }));
  assert.equal(fine.status, 200);
});

test('nesting: a body deeper than the limit, deep or large chat_template_kwargs are 400 (no recursion on input)', async () => {
  const n = 1_000_000;
  await bad('/v1/chat/completions', `{"messages":${'['.repeat(n)}${']'.repeat(n)}}`, null, 'invalid_json');
  await bad('/v1/chat/completions', `{"messages":[{"role":"user","content":"hi"}],"x":${'{"a":'.repeat(100)}1${'}'.repeat(100)}}`, null, 'invalid_json');
  let kw: unknown = 1;
  for (let i = 0; i < LIMITS.templateKwargsDepth + 1; i++) kw = [kw];
  await bad('/v1/chat/completions', chat({ chat_template_kwargs: { x: kw } }), 'chat_template_kwargs');
  await bad('/v1/chat/completions', chat({ chat_template_kwargs: { x: 'k'.repeat(LIMITS.templateKwargsBytes) } }), 'chat_template_kwargs');
});

test('logit_bias: ids outside the vocabulary, negative or non-numeric keys, out-of-range values are 400; valid bias steers sampling', async () => {
  const vocab = srv.llm.runner.vocabSize;
  for (const key of [String(vocab), '99999999999', '-1', 'abc', '1.5', '01', ' 7']) {
    for (const path of ['/v1/chat/completions', '/v1/completions']) {
      const body = path === '/v1/completions' ? { prompt: 'hi', max_tokens: 2, logit_bias: { [key]: 1 } } : chat({ logit_bias: { [key]: 1 } });
      const e = await post(path, body);
      assert.equal(e.status, 400, `${path} ${key}`);
      assert.match((e.json as ErrBody).error.param ?? '', /^logit_bias/, `${path} ${key}`);
    }
  }
  await bad('/v1/chat/completions', chat({ logit_bias: { 5: 100.5 } }), 'logit_bias.5');
  await bad('/v1/chat/completions', chat({ logit_bias: Object.fromEntries(Array.from({ length: LIMITS.logitBias + 1 }, (_, i) => [String(i), 1])) }), 'logit_bias');
  // +100 on one token outweighs the fake model's logits ([-4, 4)): greedy output is that token only.
  const tok = 150;
  const r = await post('/v1/completions', { prompt: [10, 11, 12], max_tokens: 4, temperature: 0, ignore_eos: true, logit_bias: { [tok]: 100 } });
  assert.equal(r.status, 200);
  assert.equal((r.json as { choices: { text: string }[] }).choices[0]!.text, srv.llm.tokenizer.decode([tok, tok, tok, tok]));
  const neg = await post('/v1/completions', { prompt: [10, 11, 12], max_tokens: 1, temperature: 0, ignore_eos: true, logprobs: 1, logit_bias: { [tok]: -100 } });
  assert.equal(neg.status, 200);
});

test('stop_token_ids outside the vocabulary, tool message without tool_call_id, oversized fields are 400', async () => {
  const vocab = srv.llm.runner.vocabSize;
  await bad('/v1/chat/completions', chat({ stop_token_ids: [vocab] }), 'stop_token_ids');
  await bad('/v1/completions', { prompt: 'a', stop_token_ids: [vocab + 5] }, 'stop_token_ids');
  await bad('/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'hi' }, { role: 'tool', content: '18C' }] }), 'messages.1.tool_call_id');
  await bad('/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'hi' }, { role: 'tool', content: '18C', tool_call_id: '' }] }), 'messages.1.tool_call_id');
  await bad('/v1/chat/completions', chat({ messages: [{ role: 'user', content: Array.from({ length: LIMITS.contentParts + 1 }, () => ({ type: 'text', text: 'a' })) }] }), 'messages.0.content');
  await bad('/v1/chat/completions', chat({ messages: Array.from({ length: LIMITS.messages + 1 }, () => ({ role: 'user', content: 'a' })) }), 'messages');
  await bad('/v1/chat/completions', chat({ stop: 's'.repeat(LIMITS.stopChars + 1) }), 'stop');
  await bad('/v1/chat/completions', chat({ stop: Array.from({ length: LIMITS.stop + 1 }, (_, i) => `s${i}`) }), 'stop');
  await bad('/v1/chat/completions', chat({ n: LIMITS.n + 1 }), 'n');
  await bad('/v1/chat/completions', chat({ max_tokens: LIMITS.maxTokens + 1 }), 'max_tokens');
  await bad('/v1/chat/completions', chat({ max_tokens: 1e300 }), 'max_tokens');
  await bad('/v1/chat/completions', chat({ seed: 1e20 }), 'seed');
  await bad('/v1/chat/completions', chat({ seed: 1.5 }), 'seed');
  await bad('/v1/chat/completions', '{"messages":[{"role":"user","content":"hi"}],"temperature":1e999}', 'temperature'); // parses to Infinity
  await bad('/v1/chat/completions', '{"messages":[{"role":"user","content":"hi"}],"max_tokens":-1e999}', 'max_tokens');
  await bad('/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'hi', name: 'n'.repeat(LIMITS.name + 1) }] }), 'messages.0.name');
  await bad('/v1/chat/completions', chat({ messages: [] }), 'messages');
  await bad('/v1/chat/completions', '[]', null);
  await bad('/v1/chat/completions', 'null', null);
  for (const seed of [-5, 0, Number.MAX_SAFE_INTEGER]) assert.equal((await post('/v1/chat/completions', chat({ seed }))).status, 200, String(seed));
  assert.equal((await post('/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] }, { role: 'tool', content: '18C', tool_call_id: 'c1' }] }))).status, 200);
});

/** A raw request through node:http (fetch cannot send some of these). */
function raw(opts: { path?: string; method?: string; headers?: Record<string, string>; body?: Buffer | string; chunked?: boolean }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(srv.url);
    const req = request({ host: u.hostname, port: u.port, path: opts.path ?? '/v1/chat/completions', method: opts.method ?? 'POST', headers: opts.headers ?? {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode!, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (opts.body !== undefined) {
      if (opts.chunked) {
        const b = Buffer.from(opts.body);
        for (let i = 0; i < b.length; i += 65536) req.write(b.subarray(i, i + 65536));
      } else req.write(opts.body);
    }
    req.end();
  });
}

test('body limit: 413 by content-length and by counting a chunked body; header limit: 431; server stays up', async () => {
  const limited = await startFakeServer({ maxBodyBytes: 1000 });
  try {
    const body = JSON.stringify(chat({ messages: [{ role: 'user', content: 'z'.repeat(2000) }] }));
    const byLength = await fetch(limited.url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    assert.equal(byLength.status, 413);
    assert.equal(((await byLength.json()) as ErrBody).error.code, 'request_too_large');
    const u = new URL(limited.url);
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = request({ host: u.hostname, port: u.port, path: '/v1/chat/completions', method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => { res.resume(); resolve(res.statusCode!); });
      req.on('error', reject);
      for (let i = 0; i < 10; i++) req.write(body.slice(i * 200, (i + 1) * 200));
      req.end();
    });
    assert.equal(chunked, 413);
    // Any path: the limit is not only on /v1.
    assert.equal((await fetch(limited.url + '/nope', { method: 'POST', body })).status, 413);
  } finally {
    await limited.shutdown(500);
  }
  const huge = await raw({ method: 'GET', path: '/v1/models', headers: { 'x-pad': 'p'.repeat(20_000) } }).catch((e: Error) => ({ status: -1, body: e.message }));
  assert.equal(huge.status, 431);
  const many = await raw({ method: 'GET', path: '/v1/models', headers: Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`x-h${i}`, 'vvvvvvvvvv'])) }).catch((e: Error) => ({ status: -1, body: e.message }));
  assert.equal(many.status, 431);
  assert.equal((await fetch(srv.url + '/health')).status, 200);
  // A 3 MB body within the default 4 MB limit, sent in chunks: an ordinary 400 (context), not a 500.
  const big = await raw({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(chat({ messages: [{ role: 'user', content: 'w '.repeat(1_500_000) }] })), chunked: true });
  assert.equal(big.status, 400, big.body.slice(0, 200));
});
