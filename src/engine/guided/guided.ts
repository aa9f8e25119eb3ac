// Guided (grammar-constrained) decoding over xgrammar's WebAssembly build. One GuidedDecoder per
// tokenizer: a TokenizerInfo built from the model's own byte-level vocabulary (added and special tokens
// are left out of every grammar, so JSON text never contains a control token; EOS ends a grammar that is
// complete), one GrammarCompiler, compiled grammars cached per spec. Each sequence gets its own
// TokenConstraint (a GrammarMatcher, or for forced tool calls a chain of forced control tokens around
// one): the engine applies its bitmask to the sequence's logits before sampling and accepts the sampled
// token into it.
import type { ConstraintFactory, TokenConstraint } from '../contracts.ts';
import { bytesToUnicode } from '../builtin/bpe.ts';
import { loadXgrammar, type Xgrammar } from './xgrammar.ts';
import type { CompiledGrammar, GrammarCompiler, GrammarMatcher, TokenizerInfo } from '@mlc-ai/web-xgrammar';

/** What the decoder needs from a tokenizer (ChatTokenizer has it). */
export interface GuidedTokenizer {
  readonly eosTokenIds: readonly number[];
  tokenBytes(id: number): Uint8Array | null;
  tokenText(id: number): string;
  idOf(token: string): number | undefined;
  encodePlain(text: string): number[];
}

export interface GuidedTool {
  name: string;
  /** The function's parameters JSON schema; null = any JSON object. */
  parameters: unknown;
}

export type GuidedSpec =
  | { kind: 'json_object' }
  | { kind: 'json_schema'; schema: unknown }
  | { kind: 'regex'; pattern: string }
  | { kind: 'choice'; choices: string[] }
  /** Exactly one DeepSeek V3 tool call to one of `tools` (tool_choice "required", or named: one tool). */
  | { kind: 'tool_call'; tools: GuidedTool[] };

/** The spec cannot be compiled (bad schema, unsupported keyword, bad regex, no tool-call tokens...). */
export class GrammarError extends Error {
  override name = 'GrammarError';
}

export const TOOL_TOKENS = {
  callsBegin: '<｜tool▁calls▁begin｜>',
  callsEnd: '<｜tool▁calls▁end｜>',
  callBegin: '<｜tool▁call▁begin｜>',
  callEnd: '<｜tool▁call▁end｜>',
  sep: '<｜tool▁sep｜>',
} as const;

const STRUCTURAL = /^(<think>|<\/think>|<｜.*｜>|<\|.*\|>)$/;
const MAX_CACHED = 256;
/** JSON is written on one line with OpenAI-style separators (no indentation, no free whitespace). */
const JSON_ARGS = [false, -1, [', ', ': '] as [string, string], true] as const;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

function decodes(b: Uint8Array): boolean {
  try {
    STRICT_UTF8.decode(b);
    return true;
  } catch {
    return false;
  }
}

/**
 * True when the token's bytes can be no part of valid UTF-8 whatever comes before or after: leading
 * continuation bytes (up to 3, the end of a character begun earlier) and an incomplete last character
 * (checked for a valid completion) are allowed; anything else must decode strictly.
 */
export function neverUtf8(b: Uint8Array): boolean {
  let i = 0;
  while (i < b.length && i < 3 && (b[i]! & 0xc0) === 0x80) i++;
  let j = b.length - 1;
  while (j >= i && j > b.length - 4 && (b[j]! & 0xc0) === 0x80) j--;
  let end = b.length;
  if (j >= i) {
    const lead = b[j]!;
    const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    if (b.length - j < need) {
      end = j;
      // Some completion must decode: each valid second-byte range holds 0x80, 0x90 or 0xA0.
      const part = b.subarray(j);
      const ok = [0x80, 0x90, 0xa0].some((second) => {
        const full = new Uint8Array(need).fill(0x80);
        full.set(part);
        if (part.length === 1) full[1] = second;
        return decodes(full);
      });
      if (!ok) return true;
    }
  }
  return !decodes(b.subarray(i, end));
}

/**
 * The second byte after E0, ED, F0 and F4 is restricted (no overlong forms, no surrogates, nothing past
 * U+10FFFF), which xgrammar 0.1.27 does not check. When a token ends with such a lead alone, the tokens
 * whose first byte is out of its range are masked out for the next step.
 */
const SECOND_BYTE: Record<number, [number, number]> = { 0xe0: [0xa0, 0xbf], 0xed: [0x80, 0x9f], 0xf0: [0x90, 0xbf], 0xf4: [0x80, 0x8f] };

export class Utf8Guard {
  /** Per token: the restricted lead it ends with (alone), else 0. */
  readonly endsWithLead: Uint8Array;
  /** Per restricted lead: the tokens that may not follow it. */
  readonly banned = new Map<number, Int32Array>();
  constructor(bytes: (Uint8Array | null)[]) {
    this.endsWithLead = new Uint8Array(bytes.length);
    const banned = new Map<number, number[]>(Object.keys(SECOND_BYTE).map((k) => [Number(k), []]));
    bytes.forEach((b, id) => {
      if (!b || b.length === 0) return;
      const last = b[b.length - 1]!;
      if (SECOND_BYTE[last]) this.endsWithLead[id] = last;
      const first = b[0]!;
      if ((first & 0xc0) !== 0x80) return; // not a continuation byte: xgrammar rejects it after a lead
      for (const [lead, [lo, hi]] of Object.entries(SECOND_BYTE)) if (first < lo || first > hi) banned.get(Number(lead))!.push(id);
    });
    for (const [lead, ids] of banned) this.banned.set(lead, Int32Array.from(ids));
  }
}

/** A matcher's bitmask as one constraint; `terminateWithoutStop`: it ends when the grammar does. */
class MatcherConstraint implements TokenConstraint {
  private lead = 0;
  constructor(private readonly m: GrammarMatcher, private readonly utf8: Utf8Guard) {}
  async mask(): Promise<Int32Array> {
    const mask = await this.m.getNextTokenBitmask();
    if (this.lead !== 0) for (const t of this.utf8.banned.get(this.lead)!) mask[t >>> 5]! &= ~(1 << (t & 31));
    return mask;
  }
  accept(token: number): boolean {
    this.lead = token < this.utf8.endsWithLead.length ? this.utf8.endsWithLead[token]! : 0;
    return this.m.acceptToken(token);
  }
  get done(): boolean {
    return this.m.isTerminated();
  }
  dispose(): void {
    this.m.dispose();
  }
}

/** Forced control tokens, then the inner constraint (ending without a stop token), then more forced tokens, then EOS. */
class ChainConstraint implements TokenConstraint {
  private phase = 0; // 0: prefix, 1: inner, 2: suffix, 3: stop, 4: done
  private pos = 0;
  constructor(
    private readonly prefix: number[],
    private readonly inner: TokenConstraint,
    private readonly suffix: number[],
    private readonly stopIds: readonly number[],
    private readonly words: number,
  ) {}
  private single(ids: readonly number[]): Int32Array {
    const m = new Int32Array(this.words);
    for (const t of ids) m[t >>> 5]! |= 1 << (t & 31);
    return m;
  }
  async mask(): Promise<Int32Array> {
    if (this.phase === 0) return this.single([this.prefix[this.pos]!]);
    if (this.phase === 1) return this.inner.mask();
    if (this.phase === 2) return this.single([this.suffix[this.pos]!]);
    return this.single(this.stopIds);
  }
  accept(token: number): boolean {
    switch (this.phase) {
      case 0:
        if (token !== this.prefix[this.pos]) return false;
        if (++this.pos === this.prefix.length) { this.phase = 1; this.pos = 0; }
        return true;
      case 1:
        if (!this.inner.accept(token)) return false;
        if (this.inner.done) this.phase = this.suffix.length > 0 ? 2 : 3;
        return true;
      case 2:
        if (token !== this.suffix[this.pos]) return false;
        if (++this.pos === this.suffix.length) this.phase = 3;
        return true;
      case 3:
        if (!this.stopIds.includes(token)) return false;
        this.phase = 4;
        return true;
      default:
        return false;
    }
  }
  get done(): boolean {
    return this.phase === 4;
  }
  dispose(): void {
    this.inner.dispose();
  }
}

/** Escapes a string as a regex literal (xgrammar's regex dialect: JavaScript-like). */
function regexLiteral(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');
}

export class GuidedDecoder {
  private readonly cache = new Map<string, Promise<CompiledGrammar>>();
  readonly words: number;
  /** Compiles done (cache misses) and served from the cache, for tests and metrics. */
  stats = { compiled: 0, cached: 0 };

  private constructor(
    private readonly xg: Xgrammar,
    private readonly info: TokenizerInfo,
    private readonly compiler: GrammarCompiler,
    private readonly tok: GuidedTokenizer,
    readonly vocabSize: number,
    private readonly utf8: Utf8Guard,
  ) {
    this.words = Math.ceil(vocabSize / 32);
  }

  /** `vocabSize`: the model's logits width (may exceed the tokenizer's: padding ids are never allowed). */
  static async create(tok: GuidedTokenizer, vocabSize: number): Promise<GuidedDecoder> {
    const xg = await loadXgrammar();
    const alphabet = bytesToUnicode();
    const vocab: string[] = new Array(vocabSize);
    const allowed: (Uint8Array | null)[] = new Array(vocabSize).fill(null);
    for (let id = 0; id < vocabSize; id++) {
      const b = tok.tokenBytes(id);
      if (b === null) throw new GrammarError('guided decoding needs a byte-level BPE tokenizer');
      // Added and special tokens (roles, tool-call and think markers, BOS/EOS) match no grammar text.
      if (b.length === 0 || STRUCTURAL.test(tok.tokenText(id))) { vocab[id] = ''; continue; }
      // Tokens that cannot be part of any valid UTF-8 text: xgrammar 0.1.27 checks only a lead byte's
      // length, so an overlong "\xC1\xAC" or "\xE0\x80\x80" counted as one character of a maxLength
      // string (and decoded to U+FFFD). What straddles two tokens is not caught here.
      if (neverUtf8(b)) { vocab[id] = ''; continue; }
      let s = '';
      for (const x of b) s += alphabet[x]!;
      vocab[id] = s;
      allowed[id] = b;
    }
    const stops = [...tok.eosTokenIds].filter((t) => t < vocabSize);
    const info = await xg.TokenizerInfo.createTokenizerInfo(vocab, 'byte_level', false, vocabSize, stops);
    const compiler = await xg.GrammarCompiler.createGrammarCompiler(info, true);
    return new GuidedDecoder(xg, info, compiler, tok, vocabSize, new Utf8Guard(allowed));
  }

  /**
   * Compiles (or finds in the cache) the grammar of `spec` and returns a factory of per-sequence
   * constraints. Throws GrammarError with xgrammar's own reason when it cannot.
   */
  async compile(spec: GuidedSpec): Promise<ConstraintFactory> {
    const eos = [...this.tok.eosTokenIds].filter((t) => t < this.vocabSize);
    if (eos.length === 0) throw new GrammarError('the tokenizer has no end-of-sequence token to end a grammar with');
    if (spec.kind === 'tool_call') {
      const ids = (s: string) => {
        const id = this.tok.idOf(s);
        if (id === undefined || id >= this.vocabSize) throw new GrammarError(`this model's tokenizer has no ${s} token, so tool calls cannot be forced`);
        return id;
      };
      const prefix = [ids(TOOL_TOKENS.callsBegin), ids(TOOL_TOKENS.callBegin), ...this.tok.encodePlain('function'), ids(TOOL_TOKENS.sep)];
      const suffix = [ids(TOOL_TOKENS.callEnd), ids(TOOL_TOKENS.callsEnd)];
      if (spec.tools.length === 0) throw new GrammarError('no tools to call');
      const elements = [];
      for (const t of spec.tools) {
        if (/[\n<]/.test(t.name) || t.name.trim() !== t.name || t.name === '') throw new GrammarError(`tool name ${JSON.stringify(t.name)} cannot be written in DeepSeek's tool-call format`);
        const schema = t.parameters === undefined || t.parameters === null ? { type: 'object' } : t.parameters;
        const ebnf = await this.schemaEbnf(schema, `tools[${t.name}].parameters`);
        elements.push({ type: 'sequence', elements: [
          { type: 'const_string', value: `${t.name}\n\`\`\`json\n` },
          { type: 'grammar', grammar: ebnf },
          { type: 'const_string', value: '\n```' },
        ] });
      }
      const tag = { type: 'structural_tag', format: elements.length === 1 ? elements[0]! : { type: 'or', elements } };
      const compiled = await this.cached(`tool:${JSON.stringify(tag)}`, () => this.compiler.compileStructuralTag(tag));
      const words = this.words;
      return {
        create: async () => new ChainConstraint(prefix, new MatcherConstraint(await this.xg.GrammarMatcher.createGrammarMatcher(compiled, eos, true), this.utf8), suffix, eos, words),
      };
    }
    let key: string;
    let build: () => Promise<CompiledGrammar>;
    switch (spec.kind) {
      case 'json_object':
        key = 'json_object';
        build = async () => this.compiler.compileGrammar(await this.schemaEbnf({ type: 'object' }, 'response_format'));
        break;
      case 'json_schema': {
        if (typeof spec.schema !== 'boolean' && !isObject(spec.schema)) throw new GrammarError('the JSON schema must be an object');
        const s = JSON.stringify(spec.schema);
        key = `schema:${s}`;
        build = async () => this.compiler.compileGrammar(await this.schemaEbnf(spec.schema, 'the schema'));
        break;
      }
      case 'regex':
        key = `regex:${spec.pattern}`;
        build = () => this.compiler.compileStructuralTag({ type: 'structural_tag', format: { type: 'regex', pattern: spec.pattern } });
        break;
      case 'choice': {
        if (spec.choices.length === 0) throw new GrammarError('the choice list is empty');
        const pattern = spec.choices.map(regexLiteral).join('|');
        key = `regex:${pattern}`;
        build = () => this.compiler.compileStructuralTag({ type: 'structural_tag', format: { type: 'regex', pattern } });
        break;
      }
    }
    const compiled = await this.cached(key, build);
    return { create: async () => new MatcherConstraint(await this.xg.GrammarMatcher.createGrammarMatcher(compiled, eos), this.utf8) };
  }

  private async schemaEbnf(schema: unknown, what: string): Promise<string> {
    if (typeof schema !== 'boolean' && !isObject(schema)) throw new GrammarError(`${what}: the JSON schema must be an object`);
    const ebnf = await this.guard(() => this.xg.Testings._jsonSchemaToEBNF(JSON.stringify(schema), ...JSON_ARGS));
    // xgrammar 0.1.27 writes strings with maxLength/minLength as `[^"\\\r\n]{m,n}`, which lets control
    // characters (U+0000-U+001F, invalid in JSON strings) through: use its own unbounded strings' class.
    return ebnf.replaceAll(String.raw`[^"\\\r\n]`, String.raw`[^\0-\x1f\"\\\r\n]`);
  }

  private cached(key: string, build: () => Promise<CompiledGrammar>): Promise<CompiledGrammar> {
    const hit = this.cache.get(key);
    if (hit) {
      this.stats.cached++;
      // LRU: move to the back.
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    this.stats.compiled++;
    const p = this.guard(build);
    this.cache.set(key, p);
    p.catch(() => this.cache.delete(key));
    while (this.cache.size > MAX_CACHED) {
      const [oldKey, old] = this.cache.entries().next().value!;
      this.cache.delete(oldKey);
      // Matchers hold their own reference to the compiled grammar: disposing the cache's handle is safe.
      old.then((g) => g.dispose(), () => {});
    }
    return p;
  }

  /**
   * Runs an xgrammar call; its C++ errors abort the call with a bare "Aborted()" after printing
   * "[FATAL] file:line: reason" through console.error: that line is caught (and not printed) to give
   * the reason.
   */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    captureFatal(+1);
    try {
      return await fn();
    } catch (e) {
      const reason = fatal.last;
      fatal.last = '';
      throw new GrammarError(reason || (e instanceof Error ? e.message : String(e)));
    } finally {
      captureFatal(-1);
    }
  }

  /** xgrammar's compile cache and this decoder's own are dropped with it. */
  dispose(): void {
    this.compiler.dispose();
    this.info.dispose();
  }
}

/**
 * process.stderr.write wrapped while any xgrammar call runs (reference-counted, so overlapping calls
 * restore it once): xgrammar's "[FATAL] ..." and "Aborted()" lines are kept as `fatal.last`, not printed.
 */
const fatal = { depth: 0, last: '', write: null as typeof process.stderr.write | null };
function captureFatal(delta: 1 | -1): void {
  const stderr = process.stderr;
  if (delta === 1 && fatal.depth++ === 0) {
    const write = (fatal.write = stderr.write);
    stderr.write = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
      const s = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString('utf8') : '';
      if (/^\[FATAL\]|^Aborted\(\)/.test(s)) {
        const m = /^\[FATAL\][^:]*:\d+:\s*(.*)/s.exec(s);
        if (m) fatal.last = m[1]!.trim();
        return true;
      }
      return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof stderr.write;
  } else if (delta === -1 && --fatal.depth === 0) {
    stderr.write = fatal.write!;
    fatal.write = null;
  }
}

const decoders = new WeakMap<object, Promise<GuidedDecoder>>();

/** One decoder per tokenizer object (and logits width), built on first use. */
export function guidedDecoderFor(tok: GuidedTokenizer, vocabSize: number): Promise<GuidedDecoder> {
  let d = decoders.get(tok);
  if (!d) {
    d = GuidedDecoder.create(tok, vocabSize);
    decoders.set(tok, d);
    d.catch(() => decoders.delete(tok));
  }
  return d;
}
