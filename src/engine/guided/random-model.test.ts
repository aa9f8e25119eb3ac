// Guided decoding on a real DeepSeek model (the random-weight test model, random-model.ts), in continuous batching: samples at
// temperature 1 validate against their schema, forced tool calls parse and validate, and guided greedy
// requests batched together equal the same requests run one at a time. Small schemas, a few seconds.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Ajv } from 'ajv';
import { Llm } from '../llm.ts';
import { ensureRandomModel } from '../builtin/random-model.ts';
import { backendNames } from '../../kernels/index.ts';
import { startServer } from '../../server/http.ts';

const backend = backendNames().includes('wasm') ? 'wasm' : 'ref';
const llm = await Llm.load({ model: ensureRandomModel(), modelId: 'seekd-random', backend, maxNumSeqs: 16, maxModelLen: 512 });
const srv = await startServer({ port: 0, webDir: null }, llm);
after(async () => { await srv.shutdown(1000); await llm.close(); });
const ajv = new Ajv({ strict: false });

const chat = async (body: Record<string, unknown>) => {
  const r = await fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: 'Describe a point.' }], ...body }) });
  assert.equal(r.status, 200);
  return (await r.json()) as any;
};

const POINT = {
  type: 'object',
  properties: { x: { type: 'integer', minimum: -9, maximum: 9 }, y: { type: 'integer', minimum: -9, maximum: 9 }, label: { enum: ['a', 'b'] }, tags: { type: 'array', items: { type: 'boolean' }, maxItems: 2 } },
  required: ['x', 'y', 'label'],
  additionalProperties: false,
};

test('json_schema at temperature 1 on the random model: 16 samples validate', async () => {
  const validate = ajv.compile(POINT);
  const r = await chat({ temperature: 1, n: 16, max_tokens: 64, seed: 3, response_format: { type: 'json_schema', json_schema: { name: 'point', schema: POINT, strict: true } } });
  for (const c of r.choices) {
    assert.equal(c.finish_reason, 'stop', c.message.content);
    assert.ok(validate(JSON.parse(c.message.content)), `${c.message.content}: ${ajv.errorsText(validate.errors)}`);
  }
  assert.equal(llm.engine.kvUsage(), 0);
});

test('tool_choice required on the random model: tool_calls with valid arguments', async () => {
  const tools = [{ type: 'function', function: { name: 'move', parameters: POINT } }];
  const validate = ajv.compile(POINT);
  const r = await chat({ temperature: 1, n: 8, max_tokens: 80, seed: 4, tools, tool_choice: 'required' });
  for (const c of r.choices) {
    assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c.message));
    assert.equal(c.message.tool_calls[0].function.name, 'move');
    assert.ok(validate(JSON.parse(c.message.tool_calls[0].function.arguments)), c.message.tool_calls[0].function.arguments);
  }
});

test('guided greedy requests batched together equal the same requests alone', async () => {
  const reqs = Array.from({ length: 6 }, (_, i) => ({
    temperature: 0, max_tokens: 64,
    messages: [{ role: 'user', content: `Point number ${i}.${' Again.'.repeat(i)}` }],
    ...(i % 2 === 0 ? { response_format: { type: 'json_schema', json_schema: { name: 'p', schema: POINT } } } : { guided_choice: ['north', 'south', 'east', 'west'] }),
  }));
  const alone: string[] = [];
  for (const q of reqs) alone.push((await chat(q)).choices[0].message.content);
  const together = await Promise.all(reqs.map(async (q) => (await chat(q)).choices[0].message.content as string));
  assert.deepEqual(together, alone);
});
