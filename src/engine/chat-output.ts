// Splits streamed chat output into reasoning, content and tool calls, DeepSeek style:
// - R1 reasoning: text before </think> is reasoning_content. When the prompt opened <think> (or the
//   output starts with it), everything up to </think> is reasoning, and with no end tag yet,
//   everything so far is (vLLM's deepseek_r1 parser semantics).
// - V3 tool calls: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>...
//   (V3.1's NAME<｜tool▁sep｜>ARGS form is accepted too). Text from the begin tag on is buffered and
//   parsed at the end; if it does not parse, it is returned as content.
// Tags may straddle deltas: a suffix that could start a tag is held back until it is decided.

export interface ParsedToolCall {
  name: string;
  arguments: string;
}

export interface OutputDelta {
  reasoning: string;
  content: string;
}

export const THINK_START = '<think>';
export const THINK_END = '</think>';
export const TOOL_CALLS_BEGIN = '<｜tool▁calls▁begin｜>';

type Mode = 'start' | 'reasoning' | 'content' | 'tools';

/** Length of the longest suffix of `s` that is a proper prefix of `tag`. */
function partialSuffix(s: string, tag: string): number {
  for (let k = Math.min(tag.length - 1, s.length); k > 0; k--) if (tag.startsWith(s.slice(s.length - k))) return k;
  return 0;
}

export class ChatOutputParser {
  private mode: Mode;
  private buf = '';
  private toolText = '';

  constructor(private readonly opts: { reasoning: boolean; thinking: boolean; tools: boolean }) {
    this.mode = opts.reasoning ? (opts.thinking ? 'reasoning' : 'start') : 'content';
  }

  push(text: string): OutputDelta {
    this.buf += text;
    const out: OutputDelta = { reasoning: '', content: '' };
    for (;;) {
      if (this.mode === 'start') {
        const t = this.buf.trimStart();
        if (t.startsWith(THINK_START)) { this.buf = t.slice(THINK_START.length); this.mode = 'reasoning'; continue; }
        if (THINK_START.startsWith(t)) return out; // undecided (maybe empty so far)
        this.mode = 'content';
        continue;
      }
      if (this.mode === 'reasoning') {
        const i = this.buf.indexOf(THINK_END);
        if (i >= 0) {
          out.reasoning += this.buf.slice(0, i);
          this.buf = this.buf.slice(i + THINK_END.length);
          this.mode = 'content';
          continue;
        }
        const hold = partialSuffix(this.buf, THINK_END);
        out.reasoning += this.buf.slice(0, this.buf.length - hold);
        this.buf = this.buf.slice(this.buf.length - hold);
        return out;
      }
      if (this.mode === 'content') {
        if (!this.opts.tools) { out.content += this.buf; this.buf = ''; return out; }
        const i = this.buf.indexOf(TOOL_CALLS_BEGIN);
        if (i >= 0) {
          out.content += this.buf.slice(0, i);
          this.toolText = this.buf.slice(i);
          this.buf = '';
          this.mode = 'tools';
          return out;
        }
        const hold = partialSuffix(this.buf, TOOL_CALLS_BEGIN);
        out.content += this.buf.slice(0, this.buf.length - hold);
        this.buf = this.buf.slice(this.buf.length - hold);
        return out;
      }
      // tools: buffer until the end
      this.toolText += this.buf;
      this.buf = '';
      return out;
    }
  }

  /** Ends the stream: held-back text, plus the parsed tool calls (if the buffered text parses). */
  finish(): OutputDelta & { toolCalls: ParsedToolCall[] } {
    const rest = this.buf;
    this.buf = '';
    const out = { reasoning: '', content: '', toolCalls: [] as ParsedToolCall[] };
    if (this.mode === 'reasoning') out.reasoning = rest;
    else if (this.mode === 'start' || this.mode === 'content') out.content = rest;
    else {
      const calls = parseToolCalls(this.toolText + rest);
      if (calls.length > 0) out.toolCalls = calls;
      else out.content = this.toolText + rest;
    }
    return out;
  }
}

const CALL_V3 = /<｜tool▁call▁begin｜>\s*function\s*<｜tool▁sep｜>([^\n<]+)\n```(?:json)?\n([\s\S]*?)\n```\s*<｜tool▁call▁end｜>/g;
const CALL_V31 = /<｜tool▁call▁begin｜>([^<]+?)<｜tool▁sep｜>([\s\S]*?)<｜tool▁call▁end｜>/g;

/** Parses DeepSeek tool calls (V3 form, else V3.1 form). Arguments must be JSON; bad ones are skipped. */
export function parseToolCalls(text: string): ParsedToolCall[] {
  const grab = (re: RegExp) => {
    const out: ParsedToolCall[] = [];
    for (const m of text.matchAll(re)) {
      const name = m[1]!.trim();
      const args = m[2]!.trim();
      try {
        JSON.parse(args);
      } catch {
        continue;
      }
      if (name) out.push({ name, arguments: args });
    }
    return out;
  };
  const v3 = grab(CALL_V3);
  return v3.length > 0 ? v3 : grab(CALL_V31);
}
