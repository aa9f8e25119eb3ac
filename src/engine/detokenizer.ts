// Streaming detokenization that never emits a broken UTF-8 sequence.
// Byte-level tokenizers (DeepSeek's, GPT-2 style): each token maps to raw bytes and a streaming
// TextDecoder holds back an incomplete multi-byte character until its last byte arrives (a truly
// invalid sequence becomes U+FFFD at once, as any UTF-8 decoder does). Other tokenizers: decode a
// window and hold back while it ends in U+FFFD (TGI/vLLM's prefix/read offsets), at most a few tokens.

export interface TokenDecoder {
  /** Bytes a token contributes to the text (empty for skipped special tokens), or null if the tokenizer is not byte-level. */
  tokenBytes(id: number): Uint8Array | null;
  /** Decodes ids to text (skipping special tokens), for tokenizers that are not byte-level. */
  decode(ids: number[]): string;
}

/** Longest hold-back (in tokens) of the fallback path before text is emitted anyway. */
const MAX_HOLD = 6;

export class StreamingDetokenizer {
  private readonly utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(private readonly tok: TokenDecoder) {}

  /** Adds one token; returns the text that is now complete (possibly ''). */
  push(id: number): string {
    const bytes = this.tok.tokenBytes(id);
    if (bytes !== null) return this.utf8.decode(bytes, { stream: true });
    this.ids.push(id);
    const prefix = this.tok.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.tok.decode(this.ids.slice(this.prefixOffset));
    const held = this.ids.length - this.readOffset;
    if (full.length > prefix.length && (!full.endsWith('\uFFFD') || held >= MAX_HOLD)) {
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return full.slice(prefix.length);
    }
    return '';
  }

  /** Ends the stream: whatever is held back (an incomplete sequence becomes U+FFFD). */
  flush(): string {
    if (this.ids.length === 0) return this.utf8.decode();
    const prefix = this.tok.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.tok.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    return full.length > prefix.length ? full.slice(prefix.length) : '';
  }
}

/**
 * Finds stop strings in streamed text. Text that could be the start of a stop string is held back;
 * once a stop string appears, only the text before it is emitted.
 */
export class StopMatcher {
  private buf = '';
  private readonly maxLen: number;

  constructor(private readonly stops: readonly string[]) {
    this.maxLen = stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  push(text: string): { emit: string; stop: string | null } {
    if (this.stops.length === 0) return { emit: text, stop: null };
    this.buf += text;
    let at = -1;
    let which: string | null = null;
    for (const s of this.stops) {
      if (s.length === 0) continue;
      const i = this.buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) { at = i; which = s; }
    }
    if (which !== null) {
      const emit = this.buf.slice(0, at);
      this.buf = '';
      return { emit, stop: which };
    }
    // Hold back the longest suffix that is a proper prefix of some stop string.
    let hold = 0;
    for (let k = Math.min(this.maxLen - 1, this.buf.length); k > 0; k--) {
      const suffix = this.buf.slice(this.buf.length - k);
      if (this.stops.some((s) => s.startsWith(suffix))) { hold = k; break; }
    }
    const emit = this.buf.slice(0, this.buf.length - hold);
    this.buf = this.buf.slice(this.buf.length - hold);
    return { emit, stop: null };
  }

  flush(): string {
    const t = this.buf;
    this.buf = '';
    return t;
  }
}
