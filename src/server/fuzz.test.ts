// Issue #14: property-based fuzzing of the HTTP API (fast-check) against the fake-model server:
// valid requests, mutated ones (fields dropped, replaced by random JSON, numbers pushed to extremes),
// random bytes and deep nesting. Every answer is 200 or a 4xx in OpenAI's error shape (never a 5xx,
// never a mid-stream error event), and the server is alive and leak-free afterwards. Then clients
// that send slowly or vanish mid-body and mid-stream, while other clients are served correctly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request, type IncomingHttpHeaders } from 'node:http';
import { connect, type Socket } from 'node:net';
import fc from 'fast-check';
import { startFakeServer } from './testing.ts';

type Srv = Awaited<ReturnType<typeof startFakeServer>>;
let srv: Srv;
before(async () => { srv = await startFakeServer({ engine: { maxModelLen: 256, maxNumSeqs: 8, maxWaiting: 4096 }, maxBodyBytes: 64 * 1024 }); });
after(async () => { await srv.shutdown(1000); });

const SEED = Number(process.env.SEEKD_FUZZ_SEED ?? 14);
const RUNS = Number(process.env.SEEKD_FUZZ_RUNS ?? 600);

/** One request on its own connection (the server may close a connection after a 413 without reading the body). */
function post(path: string, body: string | Uint8Array, contentType: string): Promise<{ status: number; headers: IncomingHttpHeaders; text: string }> {
  const u = new URL(srv.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'POST', agent: false, headers: { 'content-type': contentType, 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function send(path: string, body: string | Uint8Array, contentType = 'application/json'): Promise<void> {
  const r = await post(path, body, contentType);
  const text = r.text;
  const ctx = `${path} ${r.status} <- ${typeof body === 'string' ? body.slice(0, 300) : `${body.length} bytes`}\n-> ${text.slice(0, 300)}`;
  assert.ok(r.status === 200 || (r.status >= 400 && r.status < 500), ctx);
  if (r.status !== 200) {
    const e = (JSON.parse(text) as { error: Record<string, unknown> }).error;
    assert.equal(typeof e.message, 'string', ctx);
    assert.equal(typeof e.type, 'string', ctx);
    assert.ok('param' in e && 'code' in e, ctx);
  } else if (r.headers['content-type']?.startsWith('text/event-stream')) {
    assert.ok(text.endsWith('data: [DONE]\n\n'), ctx);
    assert.doesNotMatch(text, /"error":/, ctx);
  } else {
    JSON.parse(text);
  }
}

// ---- generators
const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.constantFrom('<｜User｜>', '<think>', '</think>', '<｜tool▁calls▁begin｜>', '\u0000', '\uD800', '{{ x }}', '{% for %}'));
const content = fc.oneof(text, fc.array(fc.record({ type: fc.constant('text'), text }), { minLength: 0, maxLength: 3 }));
const message = fc.oneof(
  fc.record({ role: fc.constantFrom('system', 'user', 'developer'), content }),
  fc.record({ role: fc.constant('assistant'), content: fc.option(content) }, { requiredKeys: ['role'] }),
  fc.record({ role: fc.constant('assistant'), content: fc.constant(null), tool_calls: fc.array(fc.record({ id: fc.string({ maxLength: 8 }), type: fc.constant('function'), function: fc.record({ name: fc.string({ minLength: 1, maxLength: 8 }), arguments: fc.json({ maxDepth: 2 }) }) }), { minLength: 1, maxLength: 2 }) }),
  fc.record({ role: fc.constant('tool'), content, tool_call_id: fc.string({ minLength: 1, maxLength: 8 }) }),
);
const tool = fc.record({ type: fc.constant('function'), function: fc.record({ name: fc.string({ minLength: 1, maxLength: 16 }), description: text, parameters: fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }) }, { requiredKeys: ['name'] }) });
const sampling = {
  model: fc.constantFrom('seekd-test', 'nope'),
  temperature: fc.double({ min: 0, max: 2, noNaN: true }),
  top_p: fc.double({ min: 0.01, max: 1, noNaN: true }),
  top_k: fc.integer({ min: -1, max: 3000 }),
  min_p: fc.double({ min: 0, max: 1, noNaN: true }),
  max_tokens: fc.integer({ min: 1, max: 12 }),
  n: fc.integer({ min: 1, max: 3 }),
  stop: fc.oneof(text, fc.array(text, { maxLength: 3 })),
  stop_token_ids: fc.array(fc.integer({ min: 0, max: 2100 }), { maxLength: 3 }),
  ignore_eos: fc.boolean(),
  seed: fc.integer(),
  presence_penalty: fc.double({ min: -2, max: 2, noNaN: true }),
  frequency_penalty: fc.double({ min: -2, max: 2, noNaN: true }),
  repetition_penalty: fc.double({ min: 0.5, max: 2, noNaN: true }),
  logit_bias: fc.dictionary(fc.integer({ min: 0, max: 2100 }).map(String), fc.integer({ min: -100, max: 100 }), { maxKeys: 3 }),
  stream: fc.boolean(),
  stream_options: fc.record({ include_usage: fc.boolean() }),
};
const chatRequest = fc.record({
  ...sampling,
  messages: fc.array(message, { minLength: 1, maxLength: 4 }),
  logprobs: fc.boolean(),
  top_logprobs: fc.integer({ min: 0, max: 5 }),
  tools: fc.array(tool, { maxLength: 2 }),
  tool_choice: fc.constantFrom('none', 'auto'),
  chat_template_kwargs: fc.record({ thinking: fc.boolean() }),
}, { requiredKeys: ['messages'] });
const completionRequest = fc.record({
  ...sampling,
  prompt: fc.oneof(text, fc.array(fc.integer({ min: 0, max: 2100 }), { minLength: 1, maxLength: 20 }), fc.array(text, { minLength: 1, maxLength: 1 })),
  suffix: text,
  echo: fc.boolean(),
  logprobs: fc.integer({ min: 0, max: 5 }),
}, { requiredKeys: ['prompt'] });

/** Replaces or deletes one value somewhere inside `v` (chosen by `pick`), or returns a replacement for the root. */
const extreme = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom(-1, 0, 1e308, -1e308, 2 ** 53, 2 ** 31, 0.5, '', 'x'.repeat(5000), [], {}, null, true));
function mutate(v: unknown, pick: number, repl: unknown, del: boolean): unknown {
  const nodes: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const stack: unknown[] = [v];
  while (stack.length) {
    const x = stack.pop();
    if (x === null || typeof x !== 'object') continue;
    for (const [k, c] of Object.entries(x)) {
      nodes.push({ parent: x as Record<string, unknown>, key: Array.isArray(x) ? Number(k) : k });
      stack.push(c);
    }
  }
  if (nodes.length === 0) return repl;
  const { parent, key } = nodes[pick % nodes.length]!;
  if (del) {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete parent[key as string];
  } else (parent as Record<string | number, unknown>)[key] = repl;
  return v;
}

const ROUTES = ['/v1/chat/completions', '/v1/completions'] as const;

test('fuzz: valid and mutated requests, random bytes, deep nesting: 200 or 4xx, never 5xx', { timeout: 120_000 }, async () => {
  const t0 = performance.now();
  const lap = (what: string) => console.log(`fuzz: ${what} done at ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  await fc.assert(fc.asyncProperty(chatRequest, async (b) => send('/v1/chat/completions', JSON.stringify(b))), { seed: SEED, numRuns: RUNS });
  lap('phase');
  await fc.assert(fc.asyncProperty(completionRequest, async (b) => send('/v1/completions', JSON.stringify(b))), { seed: SEED, numRuns: RUNS / 2 });
  lap('phase');
  await fc.assert(fc.asyncProperty(fc.oneof(chatRequest, completionRequest), fc.nat(), extreme, fc.boolean(), fc.constantFrom(...ROUTES), async (b, pick, repl, del, route) => {
    await send(route, JSON.stringify(mutate(b, pick, repl, del)));
  }), { seed: SEED, numRuns: RUNS * 2 });
  lap('phase');
  await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), fc.constantFrom(...ROUTES), fc.constantFrom('application/json', 'text/plain', 'application/octet-stream'), async (bytes, route, ct) => {
    await send(route, bytes, ct);
  }), { seed: SEED, numRuns: RUNS / 2 });
  lap('phase');
  await fc.assert(fc.asyncProperty(fc.integer({ min: 1, max: 20_000 }), fc.constantFrom('[', '{"a":', '{"messages":['), fc.boolean(), fc.constantFrom(...ROUTES), async (depth, open, closed, route) => {
    const close = open === '[' ? ']' : open === '{"a":' ? '}' : ']}';
    await send(route, open.repeat(depth) + (open === '[' ? '' : '1') + (closed ? close.repeat(depth) : ''));
  }), { seed: SEED, numRuns: RUNS / 5 });
  lap('phase');
  // Still alive and leak-free.
  for (let i = 0; i < 200 && srv.llm.engine.numLive > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(srv.llm.engine.numLive, 0);
  assert.equal(srv.llm.engine.kvUsage(), 0);
  assert.equal((await fetch(srv.url + '/health')).status, 200);
  const ok = await fetch(srv.url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 }) });
  assert.equal(ok.status, 200);
  console.log(`fuzz: ${Math.round(RUNS * 4.2)} cases in ${((performance.now() - t0) / 1000).toFixed(1)} s (seed ${SEED})`);
});

// ---------------------------------------------------------------- slow and vanishing clients

function sock(url: string): Promise<Socket> {
  const u = new URL(url);
  return new Promise((resolve, reject) => { const s = connect(Number(u.port), u.hostname, () => resolve(s)); s.on('error', reject); });
}
/** Resolves with what the server sent when it closes the connection. */
const closed = (s: Socket) => new Promise<string>((resolve) => { let d = ''; s.setEncoding('utf8'); s.on('data', (x) => { d += x; }); s.on('close', () => resolve(d)); s.on('error', () => undefined); });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('slow and vanishing clients (mid-headers, mid-body, mid-stream) do not disturb the others', { timeout: 60_000 }, async () => {
  const s2 = await startFakeServer({ headersTimeoutMs: 400, requestTimeoutMs: 800, delayMs: 2, engine: { maxNumSeqs: 4 } });
  try {
    const body = (stream: boolean) => JSON.stringify({ prompt: [5, 6, 7], max_tokens: 24, temperature: 0, ignore_eos: true, stream });
    const post = (stream: boolean) => fetch(s2.url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: body(stream) });
    const reference = ((await (await post(false)).json()) as { choices: { text: string }[] }).choices[0]!.text;
    assert.ok(reference.length > 0);

    // Slowloris on the headers, a trickling body, a body cut off and a socket gone mid-body.
    const slowHead = await sock(s2.url);
    const slowHeadDone = closed(slowHead);
    let headTimer: NodeJS.Timeout | null = setInterval(() => { if (!slowHead.destroyed) slowHead.write('X'); }, 50);
    slowHead.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const slowBody = await sock(s2.url);
    const slowBodyDone = closed(slowBody);
    const full = body(false);
    slowBody.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${full.length}\r\n\r\n`);
    let bodyTimer: NodeJS.Timeout | null = setInterval(() => { if (!slowBody.destroyed) slowBody.write(' '); }, 100);
    const cut = await sock(s2.url);
    const cutDone = closed(cut);
    cut.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"messages": [`);
    const gone = await sock(s2.url);
    gone.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"messages": [{"role": "user", "content": "hi`);
    await sleep(20);
    gone.destroy();

    // Streams abandoned after their first chunk, with well-behaved clients alongside.
    const abandon = async () => {
      const r = await post(true);
      const rd = r.body!.getReader();
      await rd.read();
      await rd.cancel();
    };
    const good = async (stream: boolean) => {
      const r = await post(stream);
      assert.equal(r.status, 200);
      if (!stream) return ((await r.json()) as { choices: { text: string }[] }).choices[0]!.text;
      let out = '';
      for (const line of (await r.text()).split('\n')) {
        if (!line.startsWith('data: {')) continue;
        out += (JSON.parse(line.slice(6)) as { choices: { text?: string }[] }).choices[0]?.text ?? '';
      }
      return out;
    };
    const results = await Promise.all([abandon(), good(false), abandon(), good(true), abandon(), good(false), good(true)]);
    for (const t of results) if (typeof t === 'string') assert.equal(t, reference);

    // The slow ones are cut off by the server's deadlines (408), without taking anyone down.
    const [h, b] = await Promise.all([slowHeadDone, slowBodyDone]);
    clearInterval(headTimer); headTimer = null;
    clearInterval(bodyTimer); bodyTimer = null;
    assert.ok(h === '' || /^HTTP\/1\.1 408/.test(h), h.slice(0, 80));
    assert.ok(b === '' || /^HTTP\/1\.1 408/.test(b), b.slice(0, 80));
    const c = await cutDone;
    assert.ok(c === '' || /^HTTP\/1\.1 (408|400)/.test(c), c.slice(0, 80));
    assert.equal(await good(false), reference);
    for (let i = 0; i < 200 && s2.llm.engine.numLive > 0; i++) await sleep(10);
    assert.equal(s2.llm.engine.numLive, 0);
    assert.equal(s2.llm.engine.kvUsage(), 0);
  } finally {
    await s2.shutdown(1000);
  }
});
