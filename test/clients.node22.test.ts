// Real clients against a running `seekd serve` (the random-weight test model, whose greedy output is known to
// finish these forced calls within their token limits; the trained built-in model repeats digits there): the AI SDK (`ai` with
// `@ai-sdk/deepseek`) and LangChain's `@langchain/deepseek`. Both need Node >= 22, so scripts/test.mjs runs
// `*.node22.test.ts` files only there. Text, streaming, reasoning (DeepSeek's `thinking`), tools with a
// forced choice (required / named: the server's grammar makes the call) and structured output.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createDeepSeek } from '@ai-sdk/deepseek';
import { DeepSeekChatLanguageModel } from '@ai-sdk/deepseek/internal';
import { generateText, streamText, Output, tool } from 'ai';
import { ChatDeepSeek } from '@langchain/deepseek';
import { z } from 'zod';
import { spawnServer } from '../src/cli/commands/bench.ts';
import { ensureRandomModel } from '../src/engine/builtin/random-model.ts';

const srv = await spawnServer(['--model', ensureRandomModel(), '--host', '127.0.0.1', '--max-model-len', '512', '--api-key', 'test-key']);
after(() => srv.stop());
const modelId = ((await (await fetch(`${srv.url}/v1/models`, { headers: { authorization: 'Bearer test-key' } })).json()) as { data: { id: string }[] }).data[0]!.id;

const deepseek = createDeepSeek({ baseURL: `${srv.url}/v1`, apiKey: 'test-key' });
const model = deepseek(modelId);
const weather = {
  description: 'The weather in a city',
  inputSchema: z.object({ city: z.string().max(20), days: z.number().int() }),
};
const lc = (extra: Record<string, unknown> = {}) => new ChatDeepSeek({ model: modelId, apiKey: 'test-key', configuration: { baseURL: `${srv.url}/v1` }, maxTokens: 24, temperature: 0, maxRetries: 0, ...extra });

test('AI SDK: text and streaming', async () => {
  const r = await generateText({ model, prompt: 'Hello', maxOutputTokens: 8, temperature: 0 });
  assert.ok(r.text.length > 0);
  assert.equal(r.usage.outputTokens! > 0, true);
  const s = streamText({ model, prompt: 'Hello', maxOutputTokens: 8, temperature: 0 });
  let text = '';
  for await (const part of s.textStream) text += part;
  assert.equal(text, r.text);
});

test('AI SDK: reasoning with thinking enabled, streamed and not', async () => {
  const providerOptions = { deepseek: { thinking: { type: 'enabled' as const } } };
  const r = await generateText({ model, prompt: 'Think about 2+2', maxOutputTokens: 8, providerOptions });
  assert.ok((r.reasoningText ?? '').length > 0, 'reasoning comes back');
  const s = streamText({ model, prompt: 'Think about 2+2', maxOutputTokens: 8, providerOptions });
  let reasoning = '';
  for await (const part of s.fullStream) if (part.type === 'reasoning-delta') reasoning += part.text;
  assert.ok(reasoning.length > 0);
});

test("AI SDK: forced tools ('required' and named) give valid calls", async () => {
  for (const toolChoice of ['required', { type: 'tool', toolName: 'weather' }] as const) {
    const r = await generateText({ model, prompt: 'Weather in Paris?', maxOutputTokens: 64, temperature: 0, tools: { weather: tool(weather), other: tool({ inputSchema: z.object({ q: z.string().max(20) }) }) }, toolChoice });
    assert.equal(r.toolCalls.length, 1, JSON.stringify(r.content));
    if (typeof toolChoice === 'object') assert.equal(r.toolCalls[0]!.toolName, 'weather');
    const call = r.toolCalls[0]!;
    if (call.toolName === 'weather') weather.inputSchema.parse(call.input);
    assert.equal(r.finishReason, 'tool-calls');
  }
});

test('AI SDK: structured output (Output.object with a zod schema) through json_schema', async () => {
  // createDeepSeek() sends DeepSeek's own `json_object` (the schema checked only client-side); the same
  // package's model with supportsStructuredOutputs (its mode for endpoints with json_schema, e.g. Azure)
  // sends the schema, which the server's grammar enforces.
  const structured = new DeepSeekChatLanguageModel(modelId, {
    provider: 'deepseek.chat', url: ({ path }) => `${srv.url}/v1${path}`, headers: () => ({ authorization: 'Bearer test-key' }), supportsStructuredOutputs: true,
  });
  const schema = z.object({ name: z.string().max(16), age: z.number().int(), tags: z.array(z.enum(['a', 'b'])).max(3) });
  const r = await generateText({ model: structured, prompt: 'A person as JSON', maxOutputTokens: 96, temperature: 0, output: Output.object({ schema }) });
  schema.parse(r.output);
  // createDeepSeek()'s json_object: the output is a JSON object (the grammar), checked by a schema taking any object.
  const j = await generateText({ model, prompt: 'JSON please', maxOutputTokens: 256, temperature: 0, output: Output.object({ schema: z.looseObject({}) }) }).catch((e: unknown) => e);
  if (j instanceof Error) assert.match(String((j as { finishReason?: string }).finishReason), /length/, 'only a length cut may stop it');
  else assert.equal(typeof (j as { output: unknown }).output, 'object');
});

test('LangChain: text, streaming, reasoning', async () => {
  const m = lc();
  const r = await m.invoke('Hello');
  assert.ok(typeof r.content === 'string' && r.content.length > 0);
  let streamed = '';
  for await (const c of await m.stream('Hello')) streamed += c.content as string;
  assert.equal(streamed, r.content);
  const t = await lc({ modelKwargs: { thinking: { type: 'enabled' } }, maxTokens: 8 }).invoke('Think about 2+2');
  assert.ok(String(t.additional_kwargs.reasoning_content ?? '').length > 0, 'reasoning_content comes back');
});

test('LangChain: forced tool choice and withStructuredOutput', async () => {
  const schema = z.object({ city: z.string().max(20), days: z.number().int() });
  const bound = lc({ maxTokens: 64 }).bindTools([{ type: 'function', function: { name: 'weather', description: 'weather', parameters: z.toJSONSchema(schema) } }], { tool_choice: 'required' });
  const r = await bound.invoke('Weather in Paris?');
  assert.equal(r.tool_calls?.length, 1);
  assert.equal(r.tool_calls![0]!.name, 'weather');
  schema.parse(r.tool_calls![0]!.args);
  const structured = lc({ maxTokens: 64 }).withStructuredOutput(schema, { name: 'weather' });
  schema.parse(await structured.invoke('Weather in Paris?'));
});
