// Tokenizer and chat template from a model directory (tokenizer.json, tokenizer_config.json) through
// @huggingface/tokenizers and @huggingface/jinja.
// - BOS: encode() never prepends it; prompts get it here when tokenizer_config says add_bos_token.
// - No role spoofing: text a user supplies is encoded with special tokens treated as plain text, so a
//   typed "<｜User｜>" stays characters. The template is rendered with each user string that contains
//   added-token text swapped for a private-use sentinel; template text around it is encoded with
//   special tokens recognised, the user string without.
// - Byte-level tokenizers expose each token's bytes, for the streaming detokenizer and logprobs.
import { readFileSync, realpathSync } from 'node:fs';
import { isAbsolute, relative, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { bytesToUnicode } from './builtin/bpe.ts';
import type { EngineTokenizer } from './engine.ts';

export class TokenizerLoadError extends Error {
  override name = 'TokenizerLoadError';
  constructor(readonly path: string, message: string) {
    super(`${path}: ${message}`);
  }
}

export class ChatTemplateError extends Error {
  override name = 'ChatTemplateError';
}

/**
 * A prompt that cannot fit its token budget: thrown before the (costly) tokenization when its bytes
 * alone prove it, else as soon as the pieces tokenized so far exceed it. `minTokens` is a lower bound
 * on the prompt's length in tokens (the exact count when `exact`).
 */
export class TokenBudgetError extends Error {
  override name = 'TokenBudgetError';
  constructor(readonly budget: number, readonly minTokens: number, readonly exact: boolean) {
    super(`the prompt has ${exact ? '' : 'at least '}${minTokens} tokens, more than the ${budget} allowed`);
  }
}

export interface ChatToolCall {
  id?: string;
  type?: 'function';
  function: { name: string; arguments: string };
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | 'developer';
  content: string | null;
  name?: string;
  tool_calls?: ChatToolCall[];
  tool_call_id?: string;
  reasoning_content?: string | null;
}

export interface ChatTool {
  type: 'function';
  function: { name: string; description?: string; parameters?: unknown };
}

export interface RenderedPrompt {
  text: string;
  ids: number[];
  /** The prompt ends inside an opened <think> block: generated text starts as reasoning. */
  thinking: boolean;
}

type Json = Record<string, unknown>;

function inside(root: string, p: string): boolean {
  const r = relative(root, p);
  return r !== '' && !r.startsWith('..') && !isAbsolute(r);
}

/**
 * `name` inside model directory `dir`, the rule the weight shards follow (src/weights/checkpoint.ts):
 * the path may not leave the directory, lexically or through a symlink.
 */
function fileInDir(dir: string, name: string): string {
  const full = resolve(dir, name);
  let root: string;
  try {
    root = realpathSync(dir);
  } catch {
    throw new TokenizerLoadError(dir, 'cannot read file');
  }
  if (!inside(resolve(dir), full)) throw new TokenizerLoadError(full, 'leaves the model directory');
  let real: string;
  try {
    real = realpathSync(full);
  } catch {
    throw new TokenizerLoadError(full, 'cannot read file');
  }
  if (!inside(root, real)) throw new TokenizerLoadError(full, 'resolves outside the model directory');
  return real;
}

function readJson(path: string): Json {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new TokenizerLoadError(path, 'cannot read file');
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v as Json;
  } catch (e) {
    throw new TokenizerLoadError(path, `invalid JSON (${(e as Error).message})`);
  }
}

function tokenContent(t: unknown): string | null {
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof (t as Json).content === 'string') return (t as Json).content as string;
  return null;
}

/** Tokens that carry structure the parsers need (reasoning and tool calls): kept in decoded text even when marked special. */
const STRUCTURAL = /^(<think>|<\/think>|<｜tool▁[a-z▁]+｜>)$/;

export class ChatTokenizer implements EngineTokenizer {
  readonly bosId: number | null;
  readonly eosTokenIds: number[];
  readonly addBos: boolean;
  readonly vocabSize: number;
  private readonly tok: Tokenizer;
  private readonly plain: Tokenizer;
  private readonly template: Template | null;
  private readonly bytes: (Uint8Array | null)[];
  private readonly addedContents: string[];
  private readonly specialTokens: Json;
  readonly thinkStart: string | null;
  readonly thinkEnd: string | null;
  /**
   * Most UTF-8 bytes of text one token can consume (vocabulary and added tokens), when that bounds
   * the token count from below: byte-level BPE with no normalizer (every input byte lands in exactly
   * one token). null otherwise.
   */
  readonly maxTokenBytes: number | null;

  constructor(tokenizerJson: Json, config: Json, generationConfig: Json | null = null) {
    this.tok = new Tokenizer(tokenizerJson, config);
    // The same tokenizer without added tokens: user text never becomes a control token.
    this.plain = new Tokenizer({ ...tokenizerJson, added_tokens: [] }, config);
    const model = tokenizerJson.model as Json;
    const vocab = (model?.vocab ?? {}) as Record<string, number>;
    const added = (tokenizerJson.added_tokens ?? []) as { id: number; content: string; special: boolean }[];
    let maxId = -1;
    for (const id of Object.values(vocab)) maxId = Math.max(maxId, id);
    for (const a of added) maxId = Math.max(maxId, a.id);
    this.vocabSize = maxId + 1;
    this.addedContents = added.map((a) => a.content);
    const idOf = (t: unknown): number | null => {
      const c = tokenContent(t);
      if (c === null) return null;
      return this.tok.token_to_id(c) ?? null;
    };
    this.bosId = idOf(config.bos_token);
    this.addBos = config.add_bos_token === true && this.bosId !== null;
    const eos = new Set<number>();
    const e = idOf(config.eos_token);
    if (e !== null) eos.add(e);
    const g = generationConfig?.eos_token_id;
    for (const x of Array.isArray(g) ? g : g !== undefined ? [g] : []) if (typeof x === 'number') eos.add(x);
    this.eosTokenIds = [...eos];
    this.specialTokens = {
      bos_token: tokenContent(config.bos_token) ?? '',
      eos_token: tokenContent(config.eos_token) ?? '',
      pad_token: tokenContent(config.pad_token) ?? '',
      unk_token: tokenContent(config.unk_token) ?? '',
    };
    const tpl = config.chat_template;
    const src = typeof tpl === 'string' ? tpl : Array.isArray(tpl) ? ((tpl as Json[]).find((t) => t.name === 'default')?.template as string | undefined) : undefined;
    this.template = src ? new Template(src) : null;
    this.thinkStart = this.tok.token_to_id('<think>') !== undefined ? '<think>' : null;
    this.thinkEnd = this.tok.token_to_id('</think>') !== undefined ? '</think>' : null;

    // Byte-level decoding: each vocab string maps back to bytes through GPT-2's alphabet.
    const dec = tokenizerJson.decoder as Json | null;
    const byteLevel = dec?.type === 'ByteLevel' || (dec?.type === 'Sequence' && ((dec.decoders as Json[]) ?? []).some((d) => d.type === 'ByteLevel'));
    this.bytes = new Array(this.vocabSize).fill(null);
    if (byteLevel) {
      const u2b = new Map<string, number>();
      bytesToUnicode().forEach((ch, b) => u2b.set(ch, b));
      for (const [s, id] of Object.entries(vocab)) {
        const out: number[] = [];
        let ok = true;
        for (const ch of s) {
          const b = u2b.get(ch);
          if (b === undefined) { ok = false; break; }
          out.push(b);
        }
        this.bytes[id] = ok ? Uint8Array.from(out) : new TextEncoder().encode(s);
      }
      for (const a of added) {
        this.bytes[a.id] = a.special && !STRUCTURAL.test(a.content) ? new Uint8Array(0) : new TextEncoder().encode(a.content);
      }
      for (let i = 0; i < this.bytes.length; i++) this.bytes[i] ??= new Uint8Array(0);
    }
    const norm = tokenizerJson.normalizer as Json | null | undefined;
    const noNormalizer = norm === null || norm === undefined || (norm.type === 'Sequence' && Array.isArray(norm.normalizers) && norm.normalizers.length === 0);
    if (byteLevel && noNormalizer) {
      let max = 1;
      for (const b of this.bytes) if (b && b.length > max) max = b.length;
      for (const a of added) max = Math.max(max, Buffer.byteLength(a.content, 'utf8'));
      this.maxTokenBytes = max;
    } else {
      this.maxTokenBytes = null;
    }
  }

  /** A lower bound on the tokens `text` encodes to (0 when the tokenizer gives none); costs one pass over the string. */
  minTokens(text: string): number {
    return this.maxTokenBytes === null ? 0 : Math.ceil(Buffer.byteLength(text, 'utf8') / this.maxTokenBytes);
  }

  /** Reads tokenizer.json, tokenizer_config.json and generation_config.json, each of which must resolve inside `dir`. */
  static load(dir: string): ChatTokenizer {
    const tj = readJson(fileInDir(dir, 'tokenizer.json'));
    let tc: Json = {};
    try {
      tc = readJson(fileInDir(dir, 'tokenizer_config.json'));
    } catch (e) {
      if (!(e instanceof TokenizerLoadError) || !/cannot read/.test(e.message)) throw e;
    }
    let gc: Json | null = null;
    try {
      gc = readJson(fileInDir(dir, 'generation_config.json'));
    } catch (e) {
      if (e instanceof TokenizerLoadError && /outside|leaves/.test(e.message)) throw e;
      gc = null;
    }
    try {
      return new ChatTokenizer(tj, tc, gc);
    } catch (e) {
      if (e instanceof TokenizerLoadError) throw e;
      throw new TokenizerLoadError(dir, `cannot build tokenizer (${(e as Error).message})`);
    }
  }

  get hasChatTemplate(): boolean {
    return this.template !== null;
  }

  /** Encodes text with added/special tokens recognised (template text, raw completion prompts). */
  encodeWithSpecial(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }

  /** Encodes user text: special-token text stays text. */
  encodePlain(text: string): number[] {
    return this.plain.encode(text, { add_special_tokens: false }).ids;
  }

  /** A raw /v1/completions prompt: BOS (per tokenizer_config) + the text, special tokens allowed. */
  encodePrompt(text: string): number[] {
    const ids = this.encodeWithSpecial(text);
    return this.addBos && ids[0] !== this.bosId ? [this.bosId!, ...ids] : ids;
  }

  decode(ids: number[]): string {
    // @huggingface/tokenizers throws on an empty list; nothing decodes to the empty string.
    if (ids.length === 0) return '';
    return this.tok.decode(ids, { skip_special_tokens: true });
  }

  tokenBytes(id: number): Uint8Array | null {
    if (this.bytes.length === 0 || this.bytes[0] === null) return null;
    return this.bytes[id] ?? new Uint8Array(0);
  }

  tokenText(id: number): string {
    const b = this.tokenBytes(id);
    if (b) return new TextDecoder().decode(b);
    return this.tok.decode([id], { skip_special_tokens: false });
  }

  idOf(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  /**
   * Renders the chat template and tokenizes the result. `extra` goes to the template as variables
   * (chat_template_kwargs, e.g. { thinking: true }). With `maxTokens`, a prompt longer than that
   * throws TokenBudgetError: before tokenizing when its bytes prove it (rendering is cheap string
   * work; tokenization is not, about 2-3 us per character here), else as soon as the pieces tokenized
   * so far exceed it. No step recurses on the input's size.
   */
  applyChatTemplate(messages: ChatMessage[], opts: { tools?: ChatTool[]; addGenerationPrompt?: boolean; extra?: Json; maxTokens?: number } = {}): RenderedPrompt {
    if (!this.template) throw new ChatTemplateError('this model has no chat template (use /v1/completions)');
    const nonce = randomBytes(6).toString('hex');
    const saved: string[] = [];
    const guard = (s: string): string => {
      if (!this.addedContents.some((c) => s.includes(c))) return s;
      saved.push(s);
      return `\uE000${nonce}:${saved.length - 1}\uE001`;
    };
    const msgs = messages.map((m) => {
      let content = m.content ?? null;
      // DeepSeek's convention: earlier reasoning is not sent back to the model.
      if (m.role === 'assistant' && content !== null && this.thinkEnd && content.includes(this.thinkEnd)) {
        content = content.slice(content.lastIndexOf(this.thinkEnd) + this.thinkEnd.length);
      }
      const out: Json = { role: m.role === 'developer' ? 'system' : m.role, content: content === null ? null : guard(content) };
      if (m.name !== undefined) out.name = guard(m.name);
      if (m.tool_call_id !== undefined) out.tool_call_id = m.tool_call_id;
      if (m.tool_calls) {
        out.tool_calls = m.tool_calls.map((tc) => ({
          id: tc.id, type: 'function', function: { name: guard(tc.function.name), arguments: guard(tc.function.arguments) },
        }));
      }
      return out;
    });
    const tools = opts.tools?.map((t) => ({
      type: 'function',
      function: { name: guard(t.function.name), description: t.function.description === undefined ? undefined : guard(t.function.description), parameters: t.function.parameters ?? {} },
    }));
    let text: string;
    try {
      text = this.template.render({
        ...(opts.extra ?? {}),
        messages: msgs,
        tools: tools && tools.length > 0 ? tools : null,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
        ...this.specialTokens,
      });
    } catch (e) {
      throw new ChatTemplateError(`chat template failed: ${(e as Error).message}`);
    }
    // The pieces: template text (special tokens recognised) and guarded user strings (plain).
    const pieces: { text: string; plain: boolean }[] = [];
    const re = new RegExp(`\uE000${nonce}:(\\d+)\uE001`, 'g');
    let last = 0;
    for (const m of text.matchAll(re)) {
      pieces.push({ text: text.slice(last, m.index), plain: false }, { text: saved[Number(m[1])]!, plain: true });
      last = m.index! + m[0].length;
    }
    pieces.push({ text: text.slice(last), plain: false });
    const budget = opts.maxTokens;
    if (budget !== undefined) {
      let min = 0;
      for (const p of pieces) min += this.minTokens(p.text);
      if (min > budget) throw new TokenBudgetError(budget, min, false);
    }
    const ids: number[] = [];
    let plainText = '';
    for (const p of pieces) {
      // Appended one by one: a spread (ids.push(...big)) passes every id as an argument and overflows the stack.
      for (const id of p.plain ? this.encodePlain(p.text) : this.encodeWithSpecial(p.text)) ids.push(id);
      plainText += p.text;
      const n = ids.length + (this.addBos && ids[0] !== this.bosId ? 1 : 0);
      if (budget !== undefined && n > budget) throw new TokenBudgetError(budget, n, p === pieces[pieces.length - 1]);
    }
    if (this.addBos && ids[0] !== this.bosId) ids.unshift(this.bosId!);
    const thinking = this.thinkStart !== null && /<think>\s*$/.test(plainText);
    return { text: plainText, ids, thinking };
  }
}
