// Request schemas (zod, loose: unknown fields are ignored as vLLM and OpenAI's SDK users expect).
// Ranges follow OpenAI's API; top_k/min_p/repetition_penalty/ignore_eos/stop_token_ids are vLLM extras
// (the SDK's extra_body puts them at the top level). Every field is bounded here, before anything is
// tokenized or rendered; what needs the model (token ids < vocabulary, the context length) is checked
// by the routes right after (app.ts). LIMITS lists the bounds (README, Serving).
import { z } from 'zod';

export const LIMITS = {
  /** Nesting of the whole JSON body (objects and arrays). */
  bodyDepth: 64,
  messages: 4096,
  /** Content parts in one message. */
  contentParts: 1024,
  /** Characters of names, ids and tool names. */
  name: 256,
  toolCallsPerMessage: 128,
  stop: 16,
  stopChars: 1024,
  stopTokenIds: 64,
  logitBias: 1024,
  n: 16,
  /** max_tokens, max_completion_tokens (the context length caps them further). */
  maxTokens: 2 ** 31 - 1,
  tools: 128,
  /** JSON size of all tools together, and nesting of one tool's parameters schema. */
  toolsBytes: 256 * 1024,
  toolSchemaDepth: 32,
  /** chat_template_kwargs: JSON size and nesting. */
  templateKwargsBytes: 16 * 1024,
  templateKwargsDepth: 8,
  /** Guided decoding: a JSON schema's JSON size and nesting, a regex's length, choices and their length. */
  guidedSchemaBytes: 64 * 1024,
  guidedSchemaDepth: 32,
  guidedRegexChars: 4096,
  guidedChoices: 256,
  guidedChoiceChars: 1024,
  /** /detokenize: token ids in one request. */
  detokenizeTokens: 1 << 20,
} as const;

/**
 * Nesting depth of a JSON value (a scalar is 0, `[]` is 1), without recursion; stops counting past
 * `limit` (returns limit + 1), so a hostile value costs at most one pass.
 */
export function jsonDepth(value: unknown, limit = Infinity): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    const depth = d + 1;
    if (depth > max) {
      max = depth;
      if (max > limit) return max;
    }
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (child !== null && typeof child === 'object') stack.push([child, depth]);
  }
  return max;
}

/** UTF-8 size of a value's JSON (call after bounding its depth: JSON.stringify recurses). */
function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value) ?? '', 'utf8');
}

/** A JSON schema given inline (object or boolean) or as a JSON string (vLLM's guided_json accepts both); bounded. */
const guidedSchemaObject = z.union([z.boolean(), z.record(z.string(), z.unknown())])
  .refine((v) => jsonDepth(v, LIMITS.guidedSchemaDepth) <= LIMITS.guidedSchemaDepth, `the JSON schema may nest at most ${LIMITS.guidedSchemaDepth} levels`)
  .refine((v) => jsonBytes(v) <= LIMITS.guidedSchemaBytes, `the JSON schema may take at most ${LIMITS.guidedSchemaBytes} bytes of JSON`);
const guidedSchema = z.union([z.string().max(LIMITS.guidedSchemaBytes), guidedSchemaObject]);
const guidedRegex = z.string().min(1).max(LIMITS.guidedRegexChars);
const guidedChoice = z.array(z.string().min(1).max(LIMITS.guidedChoiceChars)).min(1).max(LIMITS.guidedChoices);

/** vLLM's structured-output parameters (the older guided_* and the newer structured_outputs), on both endpoints. */
const guided = {
  guided_json: guidedSchema.nullish(),
  guided_regex: guidedRegex.nullish(),
  guided_choice: guidedChoice.nullish(),
  structured_outputs: z.looseObject({ json: guidedSchema.nullish(), regex: guidedRegex.nullish(), choice: guidedChoice.nullish() }).nullish(),
};

const stop = z.union([z.string().max(LIMITS.stopChars), z.array(z.string().max(LIMITS.stopChars)).max(LIMITS.stop)]).nullish();

const sampling = {
  model: z.string().max(LIMITS.name).optional(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(-1).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  max_tokens: z.number().int().min(1).max(LIMITS.maxTokens).nullish(),
  n: z.number().int().min(1).max(LIMITS.n).nullish(),
  stop,
  stop_token_ids: z.array(z.number().int().min(0)).max(LIMITS.stopTokenIds).nullish(),
  ignore_eos: z.boolean().nullish(),
  seed: z.number().int().nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  repetition_penalty: z.number().gt(0).max(10).nullish(),
  // OpenAI: token id (a decimal string) -> bias in [-100, 100]; ids must also be < the vocabulary (app.ts).
  logit_bias: z.record(z.string().regex(/^(0|[1-9]\d{0,9})$/, 'logit_bias keys must be token ids (non-negative integers)'), z.number().min(-100).max(100))
    .refine((r) => Object.keys(r).length <= LIMITS.logitBias, `logit_bias may hold at most ${LIMITS.logitBias} entries`)
    .nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
  user: z.string().max(LIMITS.name).nullish(),
  ...guided,
};

const textPart = z.looseObject({ type: z.literal('text'), text: z.string() });
const content = z.union([z.string(), z.array(textPart).max(LIMITS.contentParts)]);
const name = z.string().max(LIMITS.name);

const toolCall = z.looseObject({
  id: name.optional(),
  type: z.literal('function').optional(),
  function: z.looseObject({ name, arguments: z.string() }),
});

const message = z.discriminatedUnion('role', [
  z.looseObject({ role: z.literal('system'), content, name: name.optional() }),
  z.looseObject({ role: z.literal('developer'), content, name: name.optional() }),
  z.looseObject({ role: z.literal('user'), content, name: name.optional() }),
  z.looseObject({
    role: z.literal('assistant'),
    content: content.nullish(),
    name: name.optional(),
    tool_calls: z.array(toolCall).max(LIMITS.toolCallsPerMessage).nullish(),
    reasoning_content: z.string().nullish(),
  }),
  // OpenAI requires the id of the call a tool message answers.
  z.looseObject({ role: z.literal('tool'), content, tool_call_id: name.min(1) }),
]);

const toolParameters = z.record(z.string(), z.unknown())
  .refine((p) => jsonDepth(p, LIMITS.toolSchemaDepth) <= LIMITS.toolSchemaDepth, `the parameters schema may nest at most ${LIMITS.toolSchemaDepth} levels`);

const tool = z.looseObject({
  type: z.literal('function'),
  function: z.looseObject({ name: z.string().min(1).max(128), description: z.string().optional(), parameters: toolParameters.optional() }),
});

const tools = z.array(tool).max(LIMITS.tools)
  .refine((t) => jsonBytes(t) <= LIMITS.toolsBytes, `tools may take at most ${LIMITS.toolsBytes} bytes of JSON`);

const templateKwargs = z.record(z.string(), z.unknown())
  .refine((k) => jsonDepth(k, LIMITS.templateKwargsDepth) <= LIMITS.templateKwargsDepth, `chat_template_kwargs may nest at most ${LIMITS.templateKwargsDepth} levels`)
  .refine((k) => jsonBytes(k) <= LIMITS.templateKwargsBytes, `chat_template_kwargs may take at most ${LIMITS.templateKwargsBytes} bytes of JSON`);

export const chatRequestSchema = z.looseObject({
  ...sampling,
  messages: z.array(message).min(1).max(LIMITS.messages),
  max_completion_tokens: z.number().int().min(1).max(LIMITS.maxTokens).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
  tools: tools.nullish(),
  tool_choice: z.union([z.enum(['none', 'auto', 'required']), z.looseObject({ type: z.literal('function'), function: z.looseObject({ name: z.string() }) })]).nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  response_format: z.looseObject({
    type: z.enum(['text', 'json_object', 'json_schema']),
    json_schema: z.looseObject({
      name: z.string().max(LIMITS.name).optional(),
      description: z.string().nullish(),
      schema: guidedSchemaObject.optional(),
      strict: z.boolean().nullish(),
    }).optional(),
  }).nullish(),
  chat_template_kwargs: templateKwargs.nullish(),
  /** DeepSeek's API switch for reasoning: the same as chat_template_kwargs.thinking. */
  thinking: z.looseObject({ type: z.enum(['enabled', 'disabled']) }).nullish(),
});

export const completionRequestSchema = z.looseObject({
  ...sampling,
  prompt: z.union([z.string(), z.array(z.number().int().min(0)).min(1), z.array(z.string()).length(1)]),
  suffix: z.string().nullish(),
  echo: z.boolean().nullish(),
  logprobs: z.number().int().min(0).max(20).nullish(),
  best_of: z.number().int().min(1).max(1).nullish(),
});

/** vLLM's POST /tokenize: a prompt, or chat messages rendered through the template. */
export const tokenizeRequestSchema = z.looseObject({
  model: z.string().max(LIMITS.name).nullish(),
  prompt: z.string().optional(),
  messages: z.array(message).min(1).max(LIMITS.messages).optional(),
  add_special_tokens: z.boolean().nullish(),
  add_generation_prompt: z.boolean().nullish(),
  tools: tools.nullish(),
  chat_template_kwargs: templateKwargs.nullish(),
}).refine((b) => (b.prompt === undefined) !== (b.messages === undefined), { message: 'give exactly one of prompt and messages', path: ['prompt'] });

/** vLLM's POST /detokenize. */
export const detokenizeRequestSchema = z.looseObject({
  model: z.string().max(LIMITS.name).nullish(),
  tokens: z.array(z.number().int().min(0)).max(LIMITS.detokenizeTokens),
});

export type ChatRequest = z.infer<typeof chatRequestSchema>;
export type CompletionRequest = z.infer<typeof completionRequestSchema>;
