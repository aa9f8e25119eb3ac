// A deterministic byte-level BPE trainer (the algorithm of Sennrich et al. 2016 over GPT-2's
// byte-to-unicode alphabet), used to build the built-in model's tokenizer. Pre-tokenization uses
// DeepSeek-V3's split patterns (from its tokenizer.json), so pieces never cross those boundaries.

/** DeepSeek-V3's pre-tokenizer split patterns, applied in order (each piece split again by the next). */
export const DEEPSEEK_SPLIT_PATTERNS = [
  '\\p{N}{1,3}',
  '[一-龥぀-ゟ゠-ヿ]+',
  "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
];

/** GPT-2's reversible byte → printable character map (bytes that print as themselves keep their code point). */
export function bytesToUnicode(): string[] {
  const keep: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const map = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    if (keep.includes(b)) map[b] = String.fromCodePoint(b);
    else map[b] = String.fromCodePoint(256 + extra++);
  }
  return map;
}

/** Splits text the way the tokenizer's Sequence of `Split(Isolated)` pre-tokenizers does. */
export function preTokenize(text: string): string[] {
  let pieces = [text];
  for (const src of DEEPSEEK_SPLIT_PATTERNS) {
    const re = new RegExp(src, 'gu');
    const next: string[] = [];
    for (const p of pieces) {
      let last = 0;
      for (const m of p.matchAll(re)) {
        if (m.index! > last) next.push(p.slice(last, m.index));
        if (m[0].length > 0) next.push(m[0]);
        last = m.index! + m[0].length;
      }
      if (last < p.length) next.push(p.slice(last));
    }
    pieces = next;
  }
  return pieces;
}

export interface BpeResult {
  /** Byte-level symbols in id order: the 256 byte characters, then one per merge. */
  symbols: string[];
  merges: [string, string][];
}

/**
 * Learns up to `numMerges` merges from `text`: each round merges the most frequent adjacent pair
 * (ties broken by the pair's string order), stopping early when no pair occurs `minCount` times.
 */
export function trainBpe(text: string, numMerges: number, minCount = 2): BpeResult {
  const b2u = bytesToUnicode();
  const enc = new TextEncoder();
  const wordCounts = new Map<string, number>();
  for (const piece of preTokenize(text)) {
    const w = Array.from(enc.encode(piece), (b) => b2u[b]!).join('');
    wordCounts.set(w, (wordCounts.get(w) ?? 0) + 1);
  }
  const words = [...wordCounts.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([w, c]) => ({ syms: Array.from(w), count: c }));
  const symbols = b2u.slice();
  const merges: [string, string][] = [];
  for (let m = 0; m < numMerges; m++) {
    const pairs = new Map<string, number>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.syms.length; i++) {
        const k = w.syms[i] + '\u0000' + w.syms[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + w.count);
      }
    }
    let best: string | null = null;
    let bestCount = minCount - 1;
    for (const [k, c] of pairs) {
      if (c > bestCount || (c === bestCount && best !== null && k < best)) { best = k; bestCount = c; }
    }
    if (best === null) break;
    const [a, b] = best.split('\u0000') as [string, string];
    merges.push([a, b]);
    symbols.push(a + b);
    for (const w of words) {
      const s = w.syms;
      for (let i = 0; i + 1 < s.length; i++) {
        if (s[i] === a && s[i + 1] === b) s.splice(i, 2, a + b);
      }
    }
  }
  return { symbols, merges };
}
