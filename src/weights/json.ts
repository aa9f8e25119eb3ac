// A strict, bounded JSON reader for checkpoint headers and shard indexes, where JSON.parse falls short:
// it rejects duplicate object keys (JSON.parse silently keeps the last one, which lets two parsers read
// one file differently), bounds nesting depth, rejects lone surrogate escapes (as serde_json does), and
// lets schema-directed callers read a value without materialising it (no allocation for skipped parts).
// Grammar: RFC 8259. Whitespace is space, tab, LF, CR only (a BOM is not whitespace).

/** A syntax error at a character position of the text. */
export class JsonSyntaxError extends Error {
  override name = 'JsonSyntaxError';
  constructor(message: string, readonly position: number) {
    super(`${message} at position ${position}`);
  }
}

/** A key that appears twice in one object; `path` is the key path of the object holding it. */
export class JsonDuplicateKeyError extends Error {
  override name = 'JsonDuplicateKeyError';
  constructor(readonly key: string, readonly path: readonly string[], readonly position: number) {
    super(`duplicate key ${JSON.stringify(key)} at position ${position}`);
  }
}

/** Nesting limit, the same as serde_json's default recursion limit. */
export const MAX_JSON_DEPTH = 128;

export type JsonKind = 'object' | 'array' | 'string' | 'number' | 'true' | 'false' | 'null';

/** A JSON number token, classified: only plain non-negative integer literals are `uint`. */
export type NumberToken =
  | { kind: 'uint'; value: number; safe: boolean } // safe: value <= Number.MAX_SAFE_INTEGER (else value is Infinity)
  | { kind: 'other'; text: string }; // negative, fraction or exponent

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
/** A run of string characters needing no attention: not a quote, backslash or control character. */
const PLAIN_RUN = /[^"\\\u0000-\u001f]*/y;

/** A read position in a JSON text; every method throws JsonSyntaxError on malformed input. */
export class JsonCursor {
  pos = 0;
  constructor(readonly text: string, readonly maxDepth = MAX_JSON_DEPTH) {}

  fail(message: string, at = this.pos): never {
    throw new JsonSyntaxError(message, at);
  }

  ws(): void {
    const t = this.text;
    let p = this.pos;
    for (;;) {
      const c = t.charCodeAt(p);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) p++;
      else break;
    }
    this.pos = p;
  }

  /** Skips whitespace and tells the kind of the value that starts here. */
  kind(): JsonKind {
    this.ws();
    const c = this.text.charCodeAt(this.pos);
    switch (c) {
      case 0x7b: return 'object';
      case 0x5b: return 'array';
      case 0x22: return 'string';
      case 0x74: return 'true';
      case 0x66: return 'false';
      case 0x6e: return 'null';
      default:
        if (c === 0x2d || isDigit(c)) return 'number';
        return Number.isNaN(c) ? this.fail('unexpected end of JSON') : this.fail(`unexpected character ${JSON.stringify(this.text[this.pos])}`);
    }
  }

  /** Skips whitespace, then consumes `ch` if it is next. */
  eat(ch: string): boolean {
    this.ws();
    if (this.text[this.pos] === ch) {
      this.pos++;
      return true;
    }
    return false;
  }

  expect(ch: string): void {
    if (!this.eat(ch)) {
      this.fail(this.pos >= this.text.length ? `unexpected end of JSON, expected ${JSON.stringify(ch)}` : `expected ${JSON.stringify(ch)}`);
    }
  }

  /** After the top-level value: only whitespace may remain. */
  end(): void {
    this.ws();
    if (this.pos !== this.text.length) this.fail('trailing characters after the JSON value');
  }

  /** Reads a string token (escapes decoded). */
  string(): string {
    this.ws();
    const t = this.text;
    if (t.charCodeAt(this.pos) !== 0x22) this.fail('expected a string');
    let p = this.pos + 1;
    let out = '';
    for (;;) {
      // Plain characters in one regex step (fast path: most strings have no escapes).
      PLAIN_RUN.lastIndex = p;
      PLAIN_RUN.test(t);
      const runEnd = PLAIN_RUN.lastIndex;
      const c = t.charCodeAt(runEnd);
      if (c === 0x22) {
        out += t.slice(p, runEnd);
        this.pos = runEnd + 1;
        return out;
      }
      if (Number.isNaN(c)) this.fail('unterminated string', runEnd);
      if (c !== 0x5c) this.fail('control character in string', runEnd);
      out += t.slice(p, runEnd);
      p = runEnd;
      const e = t[p + 1];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const hi = this.#hex4(p + 2);
          p += 4;
          if (hi >= 0xdc00 && hi <= 0xdfff) this.fail('lone trailing surrogate in \\u escape', p);
          if (hi >= 0xd800 && hi <= 0xdbff) {
            if (t[p + 2] !== '\\' || t[p + 3] !== 'u') this.fail('lone leading surrogate in \\u escape', p);
            const lo = this.#hex4(p + 4);
            if (lo < 0xdc00 || lo > 0xdfff) this.fail('lone leading surrogate in \\u escape', p);
            out += String.fromCharCode(hi, lo);
            p += 6;
          } else {
            out += String.fromCharCode(hi);
          }
          break;
        }
        default: this.fail('invalid escape in string', p);
      }
      p += 2;
    }
  }

  #hex4(at: number): number {
    const s = this.text.slice(at, at + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(s)) this.fail('invalid \\u escape', at);
    return parseInt(s, 16);
  }

  /** Reads a number token by the JSON grammar and classifies it. */
  number(): NumberToken {
    this.ws();
    const t = this.text;
    const start = this.pos;
    let p = start;
    let plain = true;
    if (t.charCodeAt(p) === 0x2d) { p++; plain = false; }
    const intStart = p;
    if (t.charCodeAt(p) === 0x30) p++;
    else if (isDigit(t.charCodeAt(p))) while (isDigit(t.charCodeAt(p))) p++;
    else this.fail('invalid number', p);
    const intEnd = p;
    if (t.charCodeAt(p) === 0x2e) {
      p++;
      plain = false;
      if (!isDigit(t.charCodeAt(p))) this.fail('invalid number: digit expected after "."', p);
      while (isDigit(t.charCodeAt(p))) p++;
    }
    const e = t.charCodeAt(p);
    if (e === 0x65 || e === 0x45) {
      p++;
      plain = false;
      const s = t.charCodeAt(p);
      if (s === 0x2b || s === 0x2d) p++;
      if (!isDigit(t.charCodeAt(p))) this.fail('invalid number: digit expected in exponent', p);
      while (isDigit(t.charCodeAt(p))) p++;
    }
    this.pos = p;
    if (!plain) return { kind: 'other', text: t.slice(start, p) };
    // More than 16 digits is always past 2^53; shorter ones convert exactly.
    const digits = intEnd - intStart;
    const value = digits > 16 ? Infinity : Number(t.slice(intStart, intEnd));
    const safe = value <= Number.MAX_SAFE_INTEGER;
    return { kind: 'uint', value: safe ? value : Infinity, safe };
  }

  #literal(word: string): void {
    if (!this.text.startsWith(word, this.pos)) this.fail(`invalid literal, expected ${word}`);
    this.pos += word.length;
  }

  /**
   * Skips one value, checking its syntax and depth (and duplicate keys in its objects) without keeping
   * it. `depth` is the nesting level the value sits at (the top-level value is at depth 1).
   */
  skip(depth: number, path: readonly string[] = []): void {
    this.value(depth, path, false);
  }

  /**
   * Reads one value: objects become null-prototype objects (so a key like `__proto__` is an ordinary
   * own property), arrays become arrays, numbers become JS numbers. With keep = false nothing is built.
   */
  value(depth: number, path: readonly string[] = [], keep = true): unknown {
    if (depth > this.maxDepth) this.fail(`nesting deeper than ${this.maxDepth}`);
    switch (this.kind()) {
      case 'object': {
        this.pos++;
        const obj: Record<string, unknown> | null = keep ? Object.create(null) as Record<string, unknown> : null;
        const seen = new Set<string>();
        if (this.eat('}')) return obj;
        do {
          const at = this.pos;
          const key = this.string();
          if (seen.has(key)) throw new JsonDuplicateKeyError(key, path, at);
          seen.add(key);
          this.expect(':');
          const v = this.value(depth + 1, path.length < 8 ? [...path, key] : path, keep);
          if (obj) obj[key] = v;
        } while (this.eat(','));
        this.expect('}');
        return obj;
      }
      case 'array': {
        this.pos++;
        const arr: unknown[] | null = keep ? [] : null;
        if (this.eat(']')) return arr;
        do {
          const v = this.value(depth + 1, path, keep);
          if (arr) arr.push(v);
        } while (this.eat(','));
        this.expect(']');
        return arr;
      }
      case 'string': return this.string();
      case 'number': {
        const start = this.pos;
        this.number();
        return keep ? Number(this.text.slice(start, this.pos)) : undefined;
      }
      case 'true': this.#literal('true'); return true;
      case 'false': this.#literal('false'); return false;
      case 'null': this.#literal('null'); return null;
    }
  }
}

/** Parses a whole JSON text strictly (see JsonCursor.value). */
export function parseJsonStrict(text: string, maxDepth = MAX_JSON_DEPTH): unknown {
  const c = new JsonCursor(text, maxDepth);
  const v = c.value(1);
  c.end();
  return v;
}
