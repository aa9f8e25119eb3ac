// Guided decoding end to end: the fake model's logits are pseudo-random, so only the grammar's mask
// makes its output valid. Every schema is sampled 20 times at temperature 1 (two requests of n = 10,
// one streamed) and each output is checked with a real JSON-schema validator (ajv).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Ajv } from 'ajv';
import { startFakeServer, builtinTokenizer } from '../../server/testing.ts';
import { applyMask } from '../sampler.ts';
import { guidedDecoderFor, neverUtf8 } from './guided.ts';

const srv = await startFakeServer();
after(() => srv.shutdown(1000));
const ajv = new Ajv({ strict: false });

const post = async (path: string, body: unknown) => {
  const r = await fetch(`${srv.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, json: (await r.json()) as any };
};
const msgs = [{ role: 'user', content: 'Answer in JSON.' }];

/** Streams a chat request; returns per choice the content, tool calls and finish reason. */
async function stream(body: Record<string, unknown>) {
  const r = await fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
  assert.equal(r.status, 200);
  const text = await r.text();
  const out = new Map<number, { content: string; tools: any[]; finish: string | null }>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
    const ev = JSON.parse(line.slice(6));
    assert.equal(ev.error, undefined, JSON.stringify(ev));
    for (const c of ev.choices) {
      const o = out.get(c.index) ?? { content: '', tools: [], finish: null };
      out.set(c.index, o);
      if (c.delta.content) o.content += c.delta.content;
      if (c.delta.tool_calls) o.tools.push(...c.delta.tool_calls);
      if (c.finish_reason) o.finish = c.finish_reason;
    }
  }
  return [...out.entries()].sort((a, b) => a[0] - b[0]).map(([, v]) => v);
}

/** 20 samples of a constraint (n = 10 plain, n = 10 streamed), each { content, finish }. */
async function samples(extra: Record<string, unknown>, maxTokens = 120) {
  const base = { messages: msgs, temperature: 1, max_tokens: maxTokens, n: 10, ...extra };
  const plain = await post('/v1/chat/completions', { ...base, seed: 1 });
  assert.equal(plain.status, 200, JSON.stringify(plain.json));
  const a = plain.json.choices.map((c: any) => ({ content: c.message.content as string, finish: c.finish_reason as string, tools: c.message.tool_calls }));
  const b = (await stream({ ...base, seed: 2 })).map((c) => ({ content: c.content, finish: c.finish!, tools: c.tools }));
  assert.equal(a.length + b.length, 20);
  return [...a, ...b];
}

const SCHEMAS: Record<string, unknown> = {
  nested: {
    type: 'object',
    properties: {
      user: { type: 'object', properties: { id: { type: 'integer', minimum: 1, maximum: 999 }, tag: { type: 'string', pattern: '^[a-z]{1,4}$' } }, required: ['id', 'tag'], additionalProperties: false },
      ok: { type: 'boolean' },
    },
    required: ['user', 'ok'],
    additionalProperties: false,
  },
  array: { type: 'array', items: { enum: ['a', 'b', 'c'] }, minItems: 1, maxItems: 3 },
  enums: { type: 'object', properties: { color: { enum: ['red', 'green', 3, null] }, kind: { const: 'k' } }, required: ['color', 'kind'], additionalProperties: false },
  numbers: {
    type: 'object',
    properties: { n: { type: 'integer', minimum: -5, maximum: 5 }, m: { type: 'integer', exclusiveMinimum: 0, exclusiveMaximum: 100 } },
    required: ['n', 'm'],
    additionalProperties: false,
  },
  optional: {
    type: 'object',
    properties: { a: { type: 'string', maxLength: 3 }, b: { type: 'integer', minimum: 0, maximum: 100 }, c: { type: 'boolean' } },
    required: ['a'],
    additionalProperties: false,
  },
  shortStrings: {
    type: 'object',
    properties: { s: { type: 'string', minLength: 1, maxLength: 2 }, t: { type: 'string', pattern: '^[a-z ]{0,3}$' } },
    required: ['s', 't'],
    additionalProperties: false,
  },
  patterns: {
    type: 'object',
    properties: { zip: { type: 'string', pattern: '^[0-9]{5}$' }, code: { type: 'string', pattern: '^[A-Z]{2}-[0-9]{2}$' } },
    required: ['zip', 'code'],
    additionalProperties: false,
  },
  arrayOfObjects: {
    type: 'array',
    items: { type: 'object', properties: { k: { enum: ['x', 'y'] }, v: { type: 'array', items: { type: 'boolean' }, maxItems: 2 } }, required: ['k', 'v'], additionalProperties: false },
    minItems: 1,
    maxItems: 2,
  },
};

for (const [name, schema] of Object.entries(SCHEMAS)) {
  test(`response_format json_schema (${name}): 20 samples at temperature 1 all validate`, async () => {
    const validate = ajv.compile(schema as object);
    const out = await samples({ response_format: { type: 'json_schema', json_schema: { name, schema, strict: true } } });
    for (const o of out) {
      assert.equal(o.finish, 'stop', `${name}: ${o.content}`);
      const v = JSON.parse(o.content);
      assert.ok(validate(v), `${name}: ${o.content}: ${ajv.errorsText(validate.errors)}`);
    }
    // Different samples (the mask constrains, the draw still samples).
    assert.ok(new Set(out.map((o) => o.content)).size > 1 || name === 'enums');
  });
}

/** Free JSON from a random model: strings end soon (a bias on the quote) and so do objects. */
function shortJsonBias(): Record<string, number> {
  const tok = builtinTokenizer();
  const [quote] = tok.encodePlain('"');
  const [close] = tok.encodePlain('}');
  return { [quote!]: 8, [close!]: 4 };
}

test('response_format json_object: parseable JSON objects (strings kept short with a logit bias on the quote)', async () => {
  const out = await samples({ response_format: { type: 'json_object' }, logit_bias: shortJsonBias() }, 200);
  for (const o of out) {
    assert.equal(o.finish, 'stop', o.content);
    const v = JSON.parse(o.content);
    assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v), o.content);
  }
});

const TOOLS = [
  { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { enum: ['Paris', 'Oslo'] }, days: { type: 'integer', minimum: 1, maximum: 7 } }, required: ['city', 'days'], additionalProperties: false } } },
  { type: 'function', function: { name: 'lookup', parameters: { type: 'object', properties: { id: { type: 'string', pattern: '^[0-9]{3}$' } }, required: ['id'], additionalProperties: false } } },
];

test('tool_choice "required": every choice is a tool call to one of the tools, arguments valid against its schema', async () => {
  const validators = new Map(TOOLS.map((t) => [t.function.name, ajv.compile(t.function.parameters)]));
  const out = await samples({ tools: TOOLS, tool_choice: 'required' });
  for (const o of out) {
    assert.equal(o.finish, 'tool_calls', JSON.stringify(o));
    assert.equal(o.tools.length, 1);
    const f = o.tools[0].function;
    const validate = validators.get(f.name)!;
    assert.ok(validate, f.name);
    assert.ok(validate(JSON.parse(f.arguments)), `${f.name}(${f.arguments}): ${ajv.errorsText(validate.errors)}`);
    assert.ok(!o.content, 'no content beside a forced tool call');
  }
});

test('tool_choice naming a function: always that function, arguments valid', async () => {
  const validate = ajv.compile(TOOLS[1]!.function.parameters);
  const out = await samples({ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'lookup' } } });
  for (const o of out) {
    assert.equal(o.finish, 'tool_calls');
    assert.equal(o.tools[0].function.name, 'lookup');
    assert.ok(validate(JSON.parse(o.tools[0].function.arguments)), o.tools[0].function.arguments);
  }
  // A tool without a parameters schema: any JSON object.
  const free = await samples({ tools: [{ type: 'function', function: { name: 'ping' } }], tool_choice: 'required', logit_bias: shortJsonBias() }, 200);
  for (const o of free) {
    assert.equal(o.tools[0].function.name, 'ping');
    const v = JSON.parse(o.tools[0].function.arguments);
    assert.equal(typeof v, 'object');
  }
});

test("vLLM's guided_regex / guided_choice / guided_json and structured_outputs", async () => {
  for (const extra of [{ guided_regex: '[0-9]{3}-[a-z]{2}' }, { structured_outputs: { regex: '(cat|dog)s? [0-9]' } }]) {
    const re = new RegExp(`^(?:${(extra as any).guided_regex ?? (extra as any).structured_outputs.regex})$`);
    for (const o of await samples(extra, 40)) assert.match(o.content, re);
  }
  for (const extra of [{ guided_choice: ['yes', 'no', 'maybe not'] }, { structured_outputs: { choice: ['α', 'β γ'] } }]) {
    const choices: string[] = (extra as any).guided_choice ?? (extra as any).structured_outputs.choice;
    const got = new Set<string>();
    for (const o of await samples(extra, 40)) { assert.ok(choices.includes(o.content), o.content); got.add(o.content); }
    assert.ok(got.size > 1);
  }
  const schema = SCHEMAS.patterns as object;
  const validate = ajv.compile(schema);
  for (const extra of [{ guided_json: schema }, { guided_json: JSON.stringify(schema) }, { structured_outputs: { json: schema } }]) {
    for (const o of await samples(extra)) assert.ok(validate(JSON.parse(o.content)), o.content);
  }
  // /v1/completions takes vLLM's parameters too.
  const r = await post('/v1/completions', { prompt: 'Pick:', max_tokens: 20, n: 8, temperature: 1, guided_choice: ['left', 'right'] });
  assert.equal(r.status, 200);
  for (const c of r.json.choices) assert.ok(['left', 'right'].includes(c.text), c.text);
});

test('a grammar that cannot be compiled is a 400 naming the parameter; conflicting constraints are 400s', async () => {
  const bad = async (body: Record<string, unknown>, param: string, re: RegExp) => {
    const r = await post('/v1/chat/completions', { messages: msgs, max_tokens: 8, ...body });
    assert.equal(r.status, 400, JSON.stringify(r.json));
    assert.equal(r.json.error.param, param);
    assert.equal(r.json.error.type, 'invalid_request_error');
    assert.match(r.json.error.message, re);
  };
  await bad({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'bogus' } } } }, 'response_format', /bogus/);
  await bad({ response_format: { type: 'json_schema', json_schema: { name: 'x' } } }, 'response_format', /schema is required/);
  await bad({ guided_regex: '[0-9' }, 'guided_regex', /cannot compile.*Unclosed/);
  await bad({ guided_json: '{not json' }, 'guided_json', /not valid JSON/);
  await bad({ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice', /not in tools/);
  await bad({ tool_choice: 'required' }, 'tool_choice', /needs tools/);
  await bad({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'wat' } } } } }], tool_choice: 'required' }, 'tools', /wat/);
  await bad({ response_format: { type: 'json_object' }, guided_regex: 'a' }, 'guided_regex', /Only one/);
  await bad({ guided_choice: [] }, 'guided_choice', /./);
  // Concurrent failing compiles: each names its own problem, and stderr's writer is restored after.
  const write = process.stderr.write;
  await Promise.all([
    bad({ guided_json: { type: 'object', properties: { a: { type: 'nope1' } } } }, 'guided_json', /nope1/),
    bad({ guided_regex: '(ab' }, 'guided_regex', /./),
    bad({ structured_outputs: { json: { type: 'nope2' } } }, 'structured_outputs.json', /nope2/),
  ]);
  assert.equal(process.stderr.write, write);
  // The server still serves after the compile errors.
  const ok = await post('/v1/chat/completions', { messages: msgs, max_tokens: 8, guided_choice: ['fine'] });
  assert.equal(ok.json.choices[0].message.content, 'fine');
});

test('compiled grammars are cached per schema; masks: -inf outside, untouched inside', async () => {
  const dec = await guidedDecoderFor(builtinTokenizer(), 2048);
  const before = dec.stats.compiled;
  const schema = { type: 'object', properties: { q: { type: 'boolean' } }, required: ['q'], additionalProperties: false };
  await post('/v1/chat/completions', { messages: msgs, max_tokens: 20, response_format: { type: 'json_schema', json_schema: { name: 'q', schema } } });
  await post('/v1/chat/completions', { messages: msgs, max_tokens: 20, response_format: { type: 'json_schema', json_schema: { name: 'q', schema } } });
  assert.equal(dec.stats.compiled, before + 1);
  const x = Float32Array.from({ length: 70 }, (_, i) => i);
  const mask = new Int32Array(3);
  mask[0] = 1 | (1 << 31);
  mask[2] = 1 << 5;
  applyMask(x, mask);
  for (let i = 0; i < 70; i++) assert.equal(x[i], i === 0 || i === 31 || i === 69 ? i : -Infinity, String(i));
});

test('strings of bounded length stay valid UTF-8: 160 samples at temperature 1.5 (overlong forms and surrogates masked)', async () => {
  const schema = { type: 'object', properties: { a: { type: 'string', maxLength: 3 }, b: { type: 'string', minLength: 2, maxLength: 4 } }, required: ['a', 'b'], additionalProperties: false };
  const validate = ajv.compile(schema);
  for (let seed = 0; seed < 10; seed++) {
    const r = await post('/v1/chat/completions', { messages: [{ role: 'user', content: `Answer ${seed}` }], max_tokens: 60, n: 16, seed, temperature: 1.5, response_format: { type: 'json_schema', json_schema: { name: 'o', schema } } });
    for (const c of r.json.choices) {
      const s: string = c.message.content;
      assert.ok(!s.includes('\ufffd'), s);
      assert.ok(validate(JSON.parse(s)), `${s}: ${ajv.errorsText(validate.errors)}`);
    }
  }
  const t = (a: number[]) => neverUtf8(Uint8Array.from(a));
  for (const ok of [[0x41], [0xc3, 0xa9], [0xc3], [0xa9, 0x41], [0xe4, 0xb8], [0x80, 0x80, 0x80], [0xe0], [0xe0, 0xa0], [0xed, 0x9f], [0xf0, 0x90], [0xf4, 0x8f]]) assert.equal(t(ok), false, String(ok));
  for (const bad of [[0x80, 0x80, 0x80, 0x80], [0xc1, 0xac], [0xe0, 0x80], [0xed, 0xa0, 0x80], [0xc3, 0x41], [0xf5], [0xf0, 0x80], [0x41, 0xe0, 0x80]]) assert.equal(t(bad), true, String(bad));
});
