// API key, queue cap (429), drain (503 then exit) and keep-alive comments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startFakeServer } from './testing.ts';

test('--api-key guards every route except /health', async () => {
  const srv = await startFakeServer({ apiKey: 'sekrit' });
  try {
    for (const [method, path] of [['GET', '/v1/models'], ['GET', '/metrics'], ['POST', '/v1/chat/completions'], ['POST', '/v1/completions'], ['GET', '/v1/models/seekd-test'], ['GET', '/nope']]) {
      const r = await fetch(`${srv.url}${path}`, { method, headers: { authorization: 'Bearer wrong' }, ...(method === 'POST' ? { body: '{}' } : {}) });
      assert.equal(r.status, 401, `${method} ${path}`);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'invalid_api_key');
    }
    assert.equal((await fetch(`${srv.url}/health`)).status, 200);
    const good = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'sekrit', maxRetries: 0 });
    assert.equal((await good.models.list()).data.length, 1);
    const bad = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'nope', maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError);
  } finally {
    await srv.shutdown(1000);
  }
});

test('past the queue cap: 429 at once; queued requests complete', async () => {
  const srv = await startFakeServer({ engine: { maxNumSeqs: 1, maxWaiting: 2 }, delayMs: 5 });
  try {
    const req = () => fetch(`${srv.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'a', max_tokens: 5 }) });
    const rs = await Promise.all(Array.from({ length: 8 }, req));
    const codes = rs.map((r) => r.status).sort();
    assert.ok(codes.includes(429), String(codes));
    assert.ok(codes.filter((c) => c === 200).length >= 2, String(codes));
    for (const r of rs) if (r.status === 429) assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'overloaded');
    else await r.text();
    assert.equal(srv.llm.engine.kvUsage(), 0);
  } finally {
    await srv.shutdown(1000);
  }
});

test('drain: in-flight streams finish, new requests get 503, shutdown resolves', async () => {
  const srv = await startFakeServer({ delayMs: 3, keepAliveMs: 5 });
  const inflight = fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 40, ignore_eos: true, stream: true }) });
  const res = await inflight;
  const reader = res.body!.getReader();
  await reader.read();
  const done = srv.shutdown(10_000);
  const refused = await fetch(`${srv.url}/v1/models`).catch(() => null);
  if (refused) assert.equal(refused.status, 503);
  let text = '';
  for (;;) { const { value, done: d } = await reader.read(); if (d) break; text += new TextDecoder().decode(value); }
  assert.match(text, /"finish_reason":"length"/);
  assert.match(text, /data: \[DONE\]/);
  await done;
  assert.equal(srv.llm.engine.kvUsage(), 0);
});

test('keep-alive comments while a streamed request waits', async () => {
  const srv = await startFakeServer({ keepAliveMs: 5, delayMs: 30, engine: { maxNumSeqs: 1 } });
  try {
    const body = (n: number) => JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: n, ignore_eos: true, stream: true });
    const first = fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body(4) });
    const second = await fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body(2) });
    const t = await second.text();
    assert.match(t, /^: keep-alive$/m);
    await (await first).text();
  } finally {
    await srv.shutdown(1000);
  }
});
