// The OpenAI-compatible HTTP API over the engine (hono). Routes: /v1/chat/completions,
// /v1/completions (and /beta/completions), /tokenize, /detokenize, /v1/models[/{id}], /health, /metrics, and the chat page at /.
// Streaming follows OpenAI: a role chunk first, content deltas, a finish_reason chunk, then (with
// stream_options.include_usage) a usage chunk with choices: [], then `data: [DONE]`; `: keep-alive`
// comments while the request waits for its first token. A client that disconnects aborts its request,
// which frees its KV blocks at the next step.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createReadStream, readFileSync, realpathSync, statSync } from 'node:fs';
import { Readable } from 'node:stream';
import { isAbsolute, join, relative } from 'node:path';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { z } from 'zod';
import { ChatOutputParser } from '../engine/chat-output.ts';
import { defaultSamplingParams, type Delta, type SamplingParams, type TokenLogprob, type Usage, type FinishReason } from '../engine/contracts.ts';
import { EngineClosedError, EngineOverloadedError, EngineUnavailableError, PromptTooLongError } from '../engine/engine.ts';
import { GrammarError, guidedDecoderFor, type GuidedSpec } from '../engine/guided/guided.ts';
import { FimUnsupportedError, type Llm } from '../engine/llm.ts';
import { ChatTemplateError, TokenBudgetError, type ChatMessage, type ChatTool } from '../engine/tokenizer.ts';
import {
  ApiError, bodyTooLarge, engineError, toApiError, contextLengthExceeded, contextLengthExceededAtLeast, internalError, invalidRequest, modelNotFound, originNotAllowed, overloaded,
  unauthorized, unavailable, unknownUrl,
} from './errors.ts';
import { ServerMetrics } from './metrics.ts';
import type { GpuPage } from './gpu-page.ts';
import { afterReasoning } from './reasoning-gate.ts';
import { chatLogprobs, completionLogprobs, finishReasonJson, newId, sumUsage } from './openai-format.ts';
import { chatRequestSchema, completionRequestSchema, detokenizeRequestSchema, jsonDepth, LIMITS, tokenizeRequestSchema, type ChatRequest, type CompletionRequest } from './schemas.ts';

const SSE_ENCODER = new TextEncoder();
const SSE_HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'transfer-encoding': 'chunked' };

export interface ServerOptions {
  /** Required as "Authorization: Bearer <key>" on every route but /health and the chat page. */
  apiKey?: string | null;
  maxBodyBytes?: number;
  /** max_tokens when a request gives none (capped by the context left). */
  defaultMaxTokens?: number;
  /** Interval of `: keep-alive` SSE comments while a streamed request waits for its first token. */
  keepAliveMs?: number;
  /** Folder of the chat page; null disables it. Only its own files are served, never through a symlink leading out. */
  webDir?: string | null;
  /**
   * The in-page model runner served at /gpu/ (open, like the chat page; built on first request), with the
   * served model's config.json, safetensors (and index) and tokenizer files at /gpu/model/<file> (behind the
   * API key like the API). Default: src/server/gpu-page.ts buildGpuPage; null: not served.
   */
  gpuPage?: (() => Promise<GpuPage>) | null;
  /**
   * Origins allowed to call the API from a browser (CORS); '*' = any, refused together with an API key.
   * Unset: no CORS headers at all (browsers keep cross-origin pages out). Set: requests from an Origin
   * not listed (and not the server's own) get 403, listed ones get Access-Control-Allow-Origin; never
   * Access-Control-Allow-Credentials (the key is a bearer header, not a browser credential).
   */
  allowedOrigins?: string[] | null;
}

export class CorsConfigError extends Error {
  override name = 'CorsConfigError';
}

/** The chat page's files: regular files directly in `dir`, whose real path stays inside it (no symlink out). */
function loadWebFiles(dir: string): Map<string, string> {
  const web = new Map<string, string>();
  let root: string;
  try {
    root = realpathSync(dir);
  } catch {
    return web;
  }
  for (const [route, file] of Object.entries(STATIC)) {
    try {
      const real = realpathSync(join(dir, file));
      const rel = relative(root, real);
      if (rel === '' || rel.startsWith('..') || isAbsolute(rel) || !statSync(real).isFile()) continue;
      web.set(route, readFileSync(real, 'utf8'));
    } catch {
      // absent: not served
    }
  }
  return web;
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

export interface ServerState {
  llm: Llm | null;
  draining: boolean;
  metrics: ServerMetrics | null;
}

const WEB_DIR = new URL('../../web/', import.meta.url).pathname;
const STATIC: Record<string, string> = { '/': 'index.html', '/app.js': 'app.js', '/style.css': 'style.css' };
const GPU_PAGE_ROUTES = new Set(['/gpu', '/gpu/', '/gpu/app.js', '/gpu/pool-worker.js']);
/**
 * Cross-origin isolation for the page (COOP + COEP on /gpu/ and everything under it): SharedArrayBuffer,
 * so the wasm fallback runs its pool's Web Workers over the shared memory.
 */
const ISOLATED = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };
/** The wasm kernels' binaries beside the page's bundle (its CPU fallback fetches them): /gpu/kernels.wasm, ... */
const GPU_PAGE_WASM = /^\/gpu\/[a-z0-9-]+\.wasm$/;
/** The model files /gpu/model/ serves (directly inside the model directory). */
const MODEL_FILE = /^(config\.json|model\.safetensors\.index\.json|[A-Za-z0-9._-]+\.safetensors|tokenizer\.json|tokenizer_config\.json)$/;
const MIME: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

function zodError(err: z.ZodError): ApiError {
  const issue = err.issues[0]!;
  const param = issue.path.map(String).join('.') || null;
  return invalidRequest(`${param ? `${param}: ` : ''}${issue.message}`, param, 'invalid_value');
}

async function readJson(c: Context): Promise<unknown> {
  let text: string;
  try {
    text = await c.req.text();
  } catch (e) {
    if (e instanceof ApiError) throw e; // 413 from the body limit
    // The client went away (or broke the framing) mid-body: nobody is left to answer, but it is its fault, not ours.
    throw invalidRequest('The request body could not be read.', null, 'body_read_error');
  }
  let v: unknown;
  try {
    v = JSON.parse(text); // iterative in V8: any nesting parses
  } catch {
    throw invalidRequest('We could not parse the JSON body of your request. Expected a JSON object.', null, 'invalid_json');
  }
  if (jsonDepth(v, LIMITS.bodyDepth) > LIMITS.bodyDepth) throw invalidRequest(`The JSON body nests deeper than ${LIMITS.bodyDepth} levels.`, null, 'invalid_json');
  return v;
}

/** Token ids the request names (logit_bias keys, stop_token_ids) must be in the model's vocabulary. */
function checkTokenIds(b: ChatRequest | CompletionRequest, vocab: number): void {
  for (const k of Object.keys(b.logit_bias ?? {})) {
    if (Number(k) >= vocab) throw invalidRequest(`logit_bias: token id ${k} is outside the vocabulary (ids are 0 .. ${vocab - 1}).`, 'logit_bias', 'invalid_value');
  }
  for (const t of b.stop_token_ids ?? []) {
    if (t >= vocab) throw invalidRequest(`stop_token_ids: token id ${t} is outside the vocabulary (ids are 0 .. ${vocab - 1}).`, 'stop_token_ids', 'invalid_value');
  }
}

/** A schema given as a JSON string (vLLM's guided_json) is parsed; a bad one is a 400 on `param`. */
function schemaValue(v: unknown, param: string): unknown {
  if (typeof v !== 'string') return v;
  try {
    return JSON.parse(v);
  } catch {
    throw invalidRequest(`${param}: the JSON schema is not valid JSON.`, param, 'invalid_value');
  }
}

/**
 * vLLM's structured-output parameters (guided_json/guided_regex/guided_choice, structured_outputs.{json,
 * regex,choice}) as a grammar spec, with the parameter it came from; null when none is given. At most one.
 */
function vllmGuided(b: ChatRequest | CompletionRequest): { spec: GuidedSpec; param: string } | null {
  const found: { spec: GuidedSpec; param: string }[] = [];
  const so = b.structured_outputs;
  if (b.guided_json !== null && b.guided_json !== undefined) found.push({ spec: { kind: 'json_schema', schema: schemaValue(b.guided_json, 'guided_json') }, param: 'guided_json' });
  if (b.guided_regex) found.push({ spec: { kind: 'regex', pattern: b.guided_regex }, param: 'guided_regex' });
  if (b.guided_choice) found.push({ spec: { kind: 'choice', choices: b.guided_choice }, param: 'guided_choice' });
  if (so?.json !== null && so?.json !== undefined) found.push({ spec: { kind: 'json_schema', schema: schemaValue(so.json, 'structured_outputs.json') }, param: 'structured_outputs.json' });
  if (so?.regex) found.push({ spec: { kind: 'regex', pattern: so.regex }, param: 'structured_outputs.regex' });
  if (so?.choice) found.push({ spec: { kind: 'choice', choices: so.choice }, param: 'structured_outputs.choice' });
  if (found.length > 1) throw invalidRequest(`Only one structured-output constraint may be given (got ${found.map((f) => f.param).join(', ')}).`, found[1]!.param, 'invalid_value');
  return found[0] ?? null;
}

function textOf(content: string | { text: string }[] | null | undefined): string | null {
  if (content === null || content === undefined) return null;
  return typeof content === 'string' ? content : content.map((p) => p.text).join('');
}

/**
 * Request messages as the template sees them. An assistant turn's reasoning_content is left out, as
 * DeepSeek's template drops earlier turns' reasoning from the prompt.
 */
function chatMessagesOf(msgs: ChatRequest['messages']): ChatMessage[] {
  return msgs.map((m) => ({
    role: m.role,
    content: textOf(m.content as string | { text: string }[] | null | undefined),
    ...(m.role === 'assistant' && m.tool_calls ? { tool_calls: m.tool_calls.map((t) => ({ id: t.id, type: 'function' as const, function: { name: t.function.name, arguments: t.function.arguments } })) } : {}),
    ...(m.role === 'tool' && m.tool_call_id ? { tool_call_id: m.tool_call_id } : {}),
    ...('name' in m && typeof m.name === 'string' ? { name: m.name } : {}),
  }));
}

export function createApp(state: ServerState, opts: ServerOptions = {}): Hono {
  const app = new Hono();
  const maxBody = opts.maxBodyBytes ?? 4 * 1024 * 1024;
  const defaultMaxTokens = opts.defaultMaxTokens ?? 512;
  const keepAliveMs = opts.keepAliveMs ?? 10_000;
  const webDir = opts.webDir === undefined ? WEB_DIR : opts.webDir;
  const web = webDir ? loadWebFiles(webDir) : new Map<string, string>();
  const gpuPage = opts.gpuPage === undefined ? async () => (await import('./gpu-page.ts')).buildGpuPage() : opts.gpuPage;
  let gpuBuilt: Promise<GpuPage> | null = null;
  const gpuFiles = () => {
    gpuBuilt ??= gpuPage!();
    gpuBuilt.catch(() => { gpuBuilt = null; });
    return gpuBuilt;
  };
  const origins = opts.allowedOrigins ?? null;
  const anyOrigin = origins !== null && origins.includes('*');
  if (anyOrigin && opts.apiKey) throw new CorsConfigError("allowed origins '*' with an API key: list the origins explicitly");
  const originSet = new Set(origins ?? []);
  const keyDigest = opts.apiKey ? sha256(opts.apiKey) : null;

  app.onError((err, c) => {
    const e = toApiError(err);
    if (!(err instanceof ApiError) && !engineError(err)) console.error('seekd: internal error:', err);
    return c.json(e.body(), e.status);
  });
  app.notFound((c) => {
    const e = unknownUrl(c.req.method, c.req.path);
    return c.json(e.body(), e.status);
  });

  app.use('*', async (c, next) => {
    await next();
    state.metrics?.httpRequests.inc({ method: c.req.method, path: c.req.routePath, status: String(c.res.status) });
  });

  // CORS (only with allowedOrigins): before the key check, as browsers send preflights without it.
  app.use('*', async (c, next) => {
    const origin = c.req.header('origin');
    if (origins === null || origin === undefined) return next();
    const host = c.req.header('host');
    const own = host !== undefined && (origin === `http://${host}` || origin === `https://${host}`);
    const allowed = anyOrigin || own || originSet.has(origin);
    if (!allowed) throw originNotAllowed(origin);
    const allowOrigin = anyOrigin ? '*' : origin;
    if (c.req.method === 'OPTIONS' && c.req.header('access-control-request-method') !== undefined) {
      return c.body(null, 204, {
        'access-control-allow-origin': allowOrigin,
        'access-control-allow-methods': 'GET, POST, OPTIONS',
        'access-control-allow-headers': 'authorization, content-type',
        'access-control-max-age': '600',
        vary: 'origin',
      });
    }
    await next();
    c.res.headers.set('access-control-allow-origin', allowOrigin);
    c.res.headers.append('vary', 'origin');
  });

  app.use('*', async (c, next) => {
    const open = c.req.path === '/health' || (c.req.method === 'GET' && (web.has(c.req.path) || (gpuPage !== null && (GPU_PAGE_ROUTES.has(c.req.path) || GPU_PAGE_WASM.test(c.req.path)))));
    if (keyDigest && !open) {
      // Constant time: equal-length digests, compared with timingSafeEqual whether or not the header parses.
      const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(c.req.header('authorization') ?? '');
      const ok = timingSafeEqual(sha256(m ? m[1]! : ''), keyDigest);
      if (!m || !ok) throw unauthorized();
    }
    await next();
  });

  app.use('*', bodyLimit({ maxSize: maxBody, onError: () => { throw bodyTooLarge(maxBody); } }));

  const ready = (): Llm => {
    if (state.draining) throw unavailable('The server is shutting down.');
    if (!state.llm) throw unavailable('Loading model');
    return state.llm;
  };

  app.get('/health', (c) => {
    if (state.draining) return c.json({ status: 'draining' }, 503);
    if (!state.llm) return c.json({ status: 'loading' }, 503);
    const h = state.llm.engine.health;
    if (h !== 'ok') return c.json({ status: h, error: state.llm.engine.lastError?.message ?? null }, 503);
    return c.json({ status: 'ok' });
  });

  app.get('/metrics', async (c) => {
    if (!state.metrics) throw unavailable('Loading model');
    return c.text(await state.metrics.text(), 200, { 'content-type': state.metrics.registry.contentType });
  });

  const modelCard = (llm: Llm) => ({ id: llm.modelId, object: 'model', created: 0, owned_by: 'seekd', max_model_len: llm.maxModelLen });
  app.get('/v1/models', (c) => {
    const llm = ready();
    return c.json({ object: 'list', data: [modelCard(llm)] });
  });
  app.get('/v1/models/:id{.+}', (c) => {
    const llm = ready();
    const id = c.req.param('id');
    if (id !== llm.modelId) throw modelNotFound(id);
    return c.json(modelCard(llm));
  });

  for (const [route, body] of web) {
    const ext = STATIC[route]!.split('.').pop()!;
    app.get(route, (c) => c.body(body, 200, { 'content-type': MIME[ext]!, 'cache-control': 'no-cache' }));
  }

  if (gpuPage !== null) {
    // The model on WebGPU in the page (web/gpu): the page, its bundle, and the served model's files.
    app.get('/gpu', (c) => c.redirect('/gpu/'));
    app.get('/gpu/', async (c) => c.body((await gpuFiles()).html, 200, { 'content-type': MIME.html!, 'cache-control': 'no-cache', ...ISOLATED }));
    app.get('/gpu/app.js', async (c) => c.body((await gpuFiles()).js, 200, { 'content-type': MIME.js!, 'cache-control': 'no-cache', ...ISOLATED }));
    app.get('/gpu/pool-worker.js', async (c) => c.body((await gpuFiles()).worker, 200, { 'content-type': MIME.js!, 'cache-control': 'no-cache', ...ISOLATED }));
    app.get('/gpu/:file{[a-z0-9-]+\\.wasm}', async (c) => {
      const bytes = (await gpuFiles()).wasm[c.req.param('file')];
      if (!bytes) throw unknownUrl('GET', c.req.path);
      return c.body(bytes, 200, { 'content-type': 'application/wasm', 'cache-control': 'no-cache', ...ISOLATED });
    });
    app.get('/gpu/model/:file', (c) => {
      const llm = ready();
      const file = c.req.param('file');
      if (!MODEL_FILE.test(file)) throw unknownUrl('GET', c.req.path);
      let real: string;
      let size: number;
      try {
        const root = realpathSync(llm.modelDir);
        real = realpathSync(join(root, file));
        const rel = relative(root, real);
        const st = statSync(real);
        if (rel === '' || rel.startsWith('..') || isAbsolute(rel) || !st.isFile()) throw new Error('outside');
        size = st.size;
      } catch {
        throw unknownUrl('GET', c.req.path);
      }
      const body = Readable.toWeb(createReadStream(real)) as unknown as ReadableStream;
      return c.body(body, 200, {
        'content-type': file.endsWith('.json') ? 'application/json' : 'application/octet-stream',
        'content-length': String(size), 'cache-control': 'no-cache',
      });
    });
  }

  /** Maps the shared sampling fields; maxTokens is decided by the caller. */
  function samplingOf(b: ChatRequest | CompletionRequest, maxTokens: number, logprobs: number | null): SamplingParams {
    const stop = b.stop === null || b.stop === undefined ? [] : typeof b.stop === 'string' ? [b.stop] : b.stop;
    return defaultSamplingParams({
      temperature: b.temperature ?? 1,
      topP: b.top_p ?? 1,
      topK: b.top_k && b.top_k > 0 ? b.top_k : 0,
      minP: b.min_p ?? 0,
      logitBias: Object.entries(b.logit_bias ?? {}).map(([k, v]) => [Number(k), v] as const),
      seed: b.seed ?? null,
      maxTokens,
      stop: stop.filter((s) => s.length > 0),
      stopTokenIds: b.stop_token_ids ?? [],
      ignoreEos: b.ignore_eos ?? false,
      presencePenalty: b.presence_penalty ?? 0,
      frequencyPenalty: b.frequency_penalty ?? 0,
      repetitionPenalty: b.repetition_penalty ?? 1,
      logprobs,
      n: b.n ?? 1,
    });
  }

  /** Compiles a grammar spec for the model's tokenizer (cached per spec); a spec it cannot compile is a 400 on `param`. */
  async function compileGuided(llm: Llm, spec: GuidedSpec, param: string) {
    try {
      const dec = await guidedDecoderFor(llm.tokenizer, llm.runner.vocabSize);
      return await dec.compile(spec);
    } catch (e) {
      if (e instanceof GrammarError) throw invalidRequest(`${param}: cannot compile the grammar: ${e.message}`, param, 'invalid_value');
      throw e;
    }
  }

  /** The chat request's grammar: response_format, a forced tool_choice, or vLLM's parameters (one of them). */
  function chatGuided(b: ChatRequest): { spec: GuidedSpec; param: string } | null {
    const found: { spec: GuidedSpec; param: string }[] = [];
    const rf = b.response_format;
    if (rf?.type === 'json_object') found.push({ spec: { kind: 'json_object' }, param: 'response_format' });
    if (rf?.type === 'json_schema') {
      const schema = rf.json_schema?.schema;
      if (schema === undefined) throw invalidRequest('response_format: json_schema.schema is required for type "json_schema".', 'response_format', 'invalid_value');
      found.push({ spec: { kind: 'json_schema', schema }, param: 'response_format' });
    }
    const tc = b.tool_choice;
    const tools = b.tools ?? [];
    if (tc === 'required' || (tc && typeof tc === 'object')) {
      if (tools.length === 0) throw invalidRequest(`tool_choice ${typeof tc === 'string' ? '"required"' : 'naming a function'} needs tools.`, 'tool_choice', 'invalid_value');
      const named = typeof tc === 'object' ? tools.filter((t) => t.function.name === tc.function.name) : tools;
      if (named.length === 0) throw invalidRequest(`tool_choice names function "${(tc as { function: { name: string } }).function.name}", which is not in tools.`, 'tool_choice', 'invalid_value');
      found.push({ spec: { kind: 'tool_call', tools: named.map((t) => ({ name: t.function.name, parameters: t.function.parameters ?? null })) }, param: 'tools' });
    }
    const v = vllmGuided(b);
    if (v) found.push(v);
    if (found.length > 1) throw invalidRequest(`Only one of response_format, a forced tool_choice and vLLM's structured outputs may constrain a request (got ${found.map((f) => f.param).join(', ')}).`, found[1]!.param, 'invalid_value');
    return found[0] ?? null;
  }

  function checkModel(llm: Llm, model: string | undefined): void {
    if (model !== undefined && model !== llm.modelId) throw modelNotFound(model);
  }

  function decideMaxTokens(llm: Llm, promptLen: number, requested: number | null | undefined, param: string): number {
    const limit = llm.maxModelLen;
    if (requested !== null && requested !== undefined) {
      if (promptLen + requested > limit) throw contextLengthExceeded(limit, promptLen, requested, param);
      return requested;
    }
    if (promptLen + 1 > limit) throw contextLengthExceeded(limit, promptLen, 1, param);
    return Math.min(defaultMaxTokens, limit - promptLen);
  }

  function start(llm: Llm, prompt: number[], params: SamplingParams, signal: AbortSignal, param: string): AsyncIterable<Delta> {
    try {
      return llm.engine.generate({ prompt, params, signal });
    } catch (e) {
      if (e instanceof EngineOverloadedError) throw overloaded();
      if (e instanceof EngineClosedError) throw unavailable('The server is shutting down.');
      if (e instanceof EngineUnavailableError) throw engineError(e)!;
      if (e instanceof PromptTooLongError) throw contextLengthExceeded(e.limit, e.promptTokens, e.maxTokens, param);
      throw e;
    }
  }

  /** A finish with reason 'abort' that the client did not cause: engine failure or shutdown deadline. */
  function serverAbort(d: Delta, ac: AbortController): void {
    if (d.type !== 'finish' || d.reason !== 'abort' || ac.signal.aborted) return;
    if (typeof d.stopReason === 'string' && d.stopReason.startsWith('error:')) throw internalError();
    throw unavailable('The request was aborted because the server is shutting down.');
  }

  /** An AbortController that fires when the client goes away. */
  function clientAbort(c: Context): AbortController {
    const ac = new AbortController();
    const sig = c.req.raw.signal;
    if (sig.aborted) ac.abort();
    else sig.addEventListener('abort', () => ac.abort(), { once: true });
    return ac;
  }

  /**
   * Streams SSE: keep-alive comments until the first delta; aborts the request if the client leaves.
   * Events are enqueued straight into the response body's ReadableStream, one encoded chunk each (hono's
   * streamSSE goes through a writer and a TransformStream per event: ~4x the CPU per token, which adds
   * up to a good part of a decode step when 16 streams each get a token per step). The engine never
   * waits for the client either way: its deltas were always buffered per request.
   */
  function sse(ac: AbortController, body: (send: (obj: unknown) => void, gotFirst: () => void) => Promise<void>): Response {
    let ctrl: ReadableStreamDefaultController<Uint8Array> | null = null;
    let closed = false;
    const put = (text: string) => { if (!closed) ctrl!.enqueue(SSE_ENCODER.encode(text)); };
    const stream = new ReadableStream<Uint8Array>({
      start(c) { ctrl = c; },
      cancel() { closed = true; ac.abort(); },
    });
    let timer: NodeJS.Timeout | null = setInterval(() => put(': keep-alive\n\n'), keepAliveMs);
    const gotFirst = () => { if (timer) { clearInterval(timer); timer = null; } };
    void (async () => {
      try {
        await body((obj) => put(`data: ${JSON.stringify(obj)}\n\n`), gotFirst);
        put('data: [DONE]\n\n');
      } catch (err) {
        // Mid-stream failure (vLLM's convention): an error event, then [DONE].
        const e = toApiError(err);
        if (!(err instanceof ApiError) && !engineError(err)) console.error('seekd: stream error:', err);
        put(`data: ${JSON.stringify(e.body())}\n\n`);
        put('data: [DONE]\n\n');
      } finally {
        gotFirst();
        ac.abort(); // no-op when finished; frees blocks if the handler threw
        if (!closed) { closed = true; ctrl!.close(); }
      }
    })();
    // Explicit chunked encoding: @hono/node-server then streams at once instead of probing the body for a length.
    return new Response(stream, { headers: SSE_HEADERS });
  }

  // ---------------------------------------------------------------- chat
  app.post('/v1/chat/completions', async (c) => {
    const raw = await readJson(c);
    const parsed = chatRequestSchema.safeParse(raw);
    if (!parsed.success) throw zodError(parsed.error);
    const b = parsed.data;
    const llm = ready();
    checkModel(llm, b.model);
    const guided = chatGuided(b);
    if (b.top_logprobs !== null && b.top_logprobs !== undefined && !b.logprobs) throw invalidRequest('top_logprobs requires logprobs: true.', 'top_logprobs');
    checkTokenIds(b, llm.runner.vocabSize);
    const messages = chatMessagesOf(b.messages);
    const tools = (b.tools ?? []) as ChatTool[];
    const requested = b.max_completion_tokens ?? b.max_tokens;
    // The prompt's budget (the context less one completion token): rendering stops (400) before tokenizing
    // what cannot fit, and while tokenizing past it. A prompt within it is counted exactly (decideMaxTokens).
    const completionMin = requested ?? 1;
    let rendered;
    try {
      // DeepSeek's `thinking: {type}` sets the template's `thinking` kwarg (over chat_template_kwargs).
      const kwargs = b.thinking ? { ...(b.chat_template_kwargs ?? {}), thinking: b.thinking.type === 'enabled' } : b.chat_template_kwargs ?? undefined;
      rendered = llm.renderChat(messages, tools.length > 0 ? tools : undefined, kwargs, llm.maxModelLen - 1);
    } catch (e) {
      if (e instanceof ChatTemplateError) throw invalidRequest(e.message, 'messages', 'chat_template_error');
      if (e instanceof TokenBudgetError) {
        throw e.exact ? contextLengthExceeded(llm.maxModelLen, e.minTokens, completionMin, 'messages') : contextLengthExceededAtLeast(llm.maxModelLen, e.minTokens, completionMin, 'messages');
      }
      throw e;
    }
    const promptLen = rendered.ids.length;
    const maxTokens = decideMaxTokens(llm, promptLen, requested, 'messages');
    const params = samplingOf(b, maxTokens, b.logprobs ? (b.top_logprobs ?? 0) : null);
    // With reasoning on (the prompt opened <think>), a grammar applies only after the </think> token (as
    // vLLM's reasoning parser does); otherwise from the first token, and the output has no reasoning part.
    const thinkEndId = llm.tokenizer.thinkEnd !== null ? llm.tokenizer.idOf(llm.tokenizer.thinkEnd) : undefined;
    const gated = guided !== null && rendered.thinking && thinkEndId !== undefined && thinkEndId < llm.runner.vocabSize;
    if (guided) {
      const compiled = await compileGuided(llm, guided.spec, guided.param);
      params.guided = gated ? afterReasoning(compiled, thinkEndId!, llm.runner.vocabSize) : compiled;
    }
    const reasoning = llm.tokenizer.thinkStart !== null && llm.tokenizer.thinkEnd !== null && (!guided || gated);
    const parseTools = tools.length > 0 && b.tool_choice !== 'none';
    const mkParser = () => new ChatOutputParser({ reasoning, thinking: rendered.thinking && (!guided || gated), tools: parseTools });
    const ac = clientAbort(c);
    const it = start(llm, rendered.ids, params, ac.signal, 'messages');
    const id = newId('chatcmpl');
    const created = Math.floor(Date.now() / 1000);
    const model = llm.modelId;
    const n = params.n;

    if (!b.stream) {
      const parsers = Array.from({ length: n }, mkParser);
      const acc = Array.from({ length: n }, () => ({ reasoning: '', content: '', lps: [] as TokenLogprob[], finish: null as FinishReason | null, usage: undefined as Usage | undefined }));
      for await (const d of it) {
        if (d.type === 'text') {
          const o = parsers[d.index]!.push(d.text);
          acc[d.index]!.reasoning += o.reasoning;
          acc[d.index]!.content += o.content;
          if (d.logprobs) acc[d.index]!.lps.push(...d.logprobs);
        } else if (d.type === 'finish') {
          serverAbort(d, ac);
          acc[d.index]!.finish = d.reason;
          acc[d.index]!.usage = d.usage;
        }
      }
      if (ac.signal.aborted) return c.body(null, 499 as never);
      const choices = acc.map((a, i) => {
        const f = parsers[i]!.finish();
        const reasoningText = a.reasoning + f.reasoning;
        const content = a.content + f.content;
        const toolCalls = f.toolCalls.map((t, k) => ({ id: newId('call').slice(0, 29), type: 'function', function: { name: t.name, arguments: t.arguments }, index: k }));
        const message: Record<string, unknown> = { role: 'assistant', content: toolCalls.length > 0 && content === '' ? null : content };
        if (reasoning) message.reasoning_content = reasoningText === '' && !rendered.thinking ? null : reasoningText;
        if (toolCalls.length > 0) message.tool_calls = toolCalls.map(({ index: _i, ...t }) => t);
        return {
          index: i, message, logprobs: params.logprobs !== null ? chatLogprobs(a.lps) : null,
          finish_reason: toolCalls.length > 0 ? 'tool_calls' : finishReasonJson(a.finish),
        };
      });
      return c.json({ id, object: 'chat.completion', created, model, choices, usage: sumUsage(promptLen, acc.map((a) => a.usage)), system_fingerprint: null });
    }

    const includeUsage = b.stream_options?.include_usage === true;
    const chunk = (choices: unknown[], usage?: unknown) => ({
      id, object: 'chat.completion.chunk', created, model, system_fingerprint: null, choices, ...(includeUsage ? { usage: usage ?? null } : {}),
    });
    return sse(ac, async (send, gotFirst) => {
      const parsers = Array.from({ length: n }, mkParser);
      const usages: (Usage | undefined)[] = new Array(n);
      for (let i = 0; i < n; i++) send(chunk([{ index: i, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
      for await (const d of it) {
        if (ac.signal.aborted) return;
        if (d.type === 'text') {
          gotFirst();
          const o = parsers[d.index]!.push(d.text);
          const delta: Record<string, string> = {};
          if (o.reasoning) delta.reasoning_content = o.reasoning;
          if (o.content) delta.content = o.content;
          const lp = d.logprobs && params.logprobs !== null ? chatLogprobs(d.logprobs) : null;
          if (Object.keys(delta).length > 0 || lp) send(chunk([{ index: d.index, delta, logprobs: lp, finish_reason: null }]));
        } else if (d.type === 'finish') {
          usages[d.index] = d.usage;
          if (d.reason === 'abort' && ac.signal.aborted) return;
          serverAbort(d, ac);
          const f = parsers[d.index]!.finish();
          const delta: Record<string, unknown> = {};
          if (f.reasoning) delta.reasoning_content = f.reasoning;
          if (f.content) delta.content = f.content;
          if (Object.keys(delta).length > 0) send(chunk([{ index: d.index, delta, logprobs: null, finish_reason: null }]));
          if (f.toolCalls.length > 0) {
            send(chunk([{
              index: d.index, logprobs: null, finish_reason: null,
              delta: { tool_calls: f.toolCalls.map((t, k) => ({ index: k, id: newId('call').slice(0, 29), type: 'function', function: { name: t.name, arguments: t.arguments } })) },
            }]));
          }
          send(chunk([{ index: d.index, delta: {}, logprobs: null, finish_reason: f.toolCalls.length > 0 ? 'tool_calls' : finishReasonJson(d.reason) }]));
        }
      }
      if (includeUsage) send(chunk([], sumUsage(promptLen, usages)));
    });
  });

  // ---------------------------------------------------------------- completions
  // ---------------------------------------------------------------- tokenize / detokenize (vLLM's)
  app.post('/tokenize', async (c) => {
    const parsed = tokenizeRequestSchema.safeParse(await readJson(c));
    if (!parsed.success) throw zodError(parsed.error);
    const b = parsed.data;
    const llm = ready();
    checkModel(llm, b.model ?? undefined);
    let tokens: number[];
    if (b.messages !== undefined) {
      const tools = (b.tools ?? []) as ChatTool[];
      try {
        tokens = llm.tokenizer.applyChatTemplate(chatMessagesOf(b.messages), {
          tools: tools.length > 0 ? tools : undefined, addGenerationPrompt: b.add_generation_prompt ?? true, extra: b.chat_template_kwargs ?? undefined, maxTokens: llm.maxModelLen,
        }).ids;
      } catch (e) {
        if (e instanceof ChatTemplateError) throw invalidRequest(e.message, 'messages', 'chat_template_error');
        if (e instanceof TokenBudgetError) throw e.exact ? contextLengthExceeded(llm.maxModelLen, e.minTokens, 0, 'messages') : contextLengthExceededAtLeast(llm.maxModelLen, e.minTokens, 0, 'messages');
        throw e;
      }
    } else {
      // Bounded like the other routes: a prompt its bytes prove longer than the context is refused before tokenizing.
      const min = llm.tokenizer.minTokens(b.prompt!);
      if (min > llm.maxModelLen) throw contextLengthExceededAtLeast(llm.maxModelLen, min, 0, 'prompt');
      tokens = (b.add_special_tokens ?? true) ? llm.tokenizer.encodePrompt(b.prompt!) : llm.tokenizer.encodePlain(b.prompt!);
      if (tokens.length > llm.maxModelLen) throw contextLengthExceeded(llm.maxModelLen, tokens.length, 0, 'prompt');
    }
    return c.json({ count: tokens.length, max_model_len: llm.maxModelLen, tokens });
  });

  app.post('/detokenize', async (c) => {
    const parsed = detokenizeRequestSchema.safeParse(await readJson(c));
    if (!parsed.success) throw zodError(parsed.error);
    const b = parsed.data;
    const llm = ready();
    checkModel(llm, b.model ?? undefined);
    const vocab = llm.runner.vocabSize;
    if (b.tokens.some((t) => t >= vocab)) throw invalidRequest(`tokens must be < ${vocab}.`, 'tokens');
    return c.json({ prompt: llm.tokenizer.decode(b.tokens) });
  });

  // ---------------------------------------------------------------- completions (DeepSeek's /beta/completions: the same route)
  const completions = async (c: Context) => {
    const raw = await readJson(c);
    const parsed = completionRequestSchema.safeParse(raw);
    if (!parsed.success) throw zodError(parsed.error);
    const b = parsed.data;
    const llm = ready();
    checkModel(llm, b.model);
    const promptText = Array.isArray(b.prompt) ? (typeof b.prompt[0] === 'string' ? (b.prompt[0] as string) : null) : b.prompt;
    const vocab = llm.runner.vocabSize;
    checkTokenIds(b, vocab);
    // Bounds before encoding: token ids count as they are; text by the tokenizer's bytes-per-token bound.
    const requested = b.max_tokens ?? 16;
    const budget = llm.maxModelLen - 1;
    if (promptText === null && (b.prompt as number[]).length > budget) throw contextLengthExceeded(llm.maxModelLen, (b.prompt as number[]).length, requested, 'prompt');
    if (promptText !== null) {
      const min = llm.tokenizer.minTokens(promptText) + (b.suffix ? llm.tokenizer.minTokens(b.suffix) : 0);
      if (min > budget) throw contextLengthExceededAtLeast(llm.maxModelLen, min, requested, 'prompt');
    }
    let ids: number[];
    try {
      ids = llm.encodeCompletion(promptText ?? (b.prompt as number[]), b.suffix ?? undefined);
    } catch (e) {
      if (e instanceof FimUnsupportedError) throw invalidRequest(e.message, 'suffix', 'unsupported');
      throw e;
    }
    if (ids.length === 0) throw invalidRequest('prompt is empty.', 'prompt');
    if (ids.some((t) => t >= vocab)) throw invalidRequest(`prompt token ids must be < ${vocab}.`, 'prompt');
    const promptLen = ids.length;
    const maxTokens = decideMaxTokens(llm, promptLen, requested, 'prompt');
    const params = samplingOf(b, maxTokens, b.logprobs ?? null);
    const guided = vllmGuided(b);
    if (guided) params.guided = await compileGuided(llm, guided.spec, guided.param);
    const echo = b.echo === true && promptText !== null ? promptText : '';
    const ac = clientAbort(c);
    const it = start(llm, ids, params, ac.signal, 'prompt');
    const id = newId('cmpl');
    const created = Math.floor(Date.now() / 1000);
    const model = llm.modelId;
    const n = params.n;

    if (!b.stream) {
      const acc = Array.from({ length: n }, () => ({ text: echo, lps: [] as TokenLogprob[], finish: null as FinishReason | null, usage: undefined as Usage | undefined }));
      for await (const d of it) {
        if (d.type === 'text') { acc[d.index]!.text += d.text; if (d.logprobs) acc[d.index]!.lps.push(...d.logprobs); }
        else if (d.type === 'finish') { serverAbort(d, ac); acc[d.index]!.finish = d.reason; acc[d.index]!.usage = d.usage; }
      }
      if (ac.signal.aborted) return c.body(null, 499 as never);
      const choices = acc.map((a, i) => ({
        index: i, text: a.text, logprobs: params.logprobs !== null ? completionLogprobs(a.lps, echo.length) : null, finish_reason: finishReasonJson(a.finish),
      }));
      return c.json({ id, object: 'text_completion', created, model, choices, usage: sumUsage(promptLen, acc.map((a) => a.usage)), system_fingerprint: null });
    }

    const includeUsage = b.stream_options?.include_usage === true;
    const chunk = (choices: unknown[], usage?: unknown) => ({ id, object: 'text_completion', created, model, system_fingerprint: null, choices, ...(includeUsage ? { usage: usage ?? null } : {}) });
    return sse(ac, async (send, gotFirst) => {
      const usages: (Usage | undefined)[] = new Array(n);
      const offsets = new Array<number>(n).fill(echo.length);
      if (echo) for (let i = 0; i < n; i++) send(chunk([{ index: i, text: echo, logprobs: null, finish_reason: null }]));
      for await (const d of it) {
        if (ac.signal.aborted) return;
        if (d.type === 'text') {
          gotFirst();
          const lp = d.logprobs && params.logprobs !== null ? completionLogprobs(d.logprobs, offsets[d.index]!) : null;
          offsets[d.index]! += d.text.length;
          if (d.text || lp) send(chunk([{ index: d.index, text: d.text, logprobs: lp, finish_reason: null }]));
        } else if (d.type === 'finish') {
          usages[d.index] = d.usage;
          if (d.reason === 'abort' && ac.signal.aborted) return;
          serverAbort(d, ac);
          send(chunk([{ index: d.index, text: '', logprobs: null, finish_reason: finishReasonJson(d.reason) }]));
        }
      }
      if (includeUsage) send(chunk([], sumUsage(promptLen, usages)));
    });
  };
  app.post('/v1/completions', completions);
  app.post('/beta/completions', completions);

  return app;
}
