// Readers for the built-in model's training text, all from Debian packages of freely licensed or
// public-domain English:
//   fortunes, fortunes-min   /usr/share/games/fortunes/<name>: strfile sources, entries separated by a
//                            line holding "%" (BSD fortune-mod; quotations, jokes, riddles)
//   bible-kjv(-text)         the King James Bible (public domain), as the `bible` program prints it:
//                            "Genesis 1", a blank line, then "  1 In the beginning ..." verses whose long
//                            lines wrap to column 0
//   dict-gcide               GCIDE (GPL; Webster's 1913 + WordNet) in dictd format: gcide.index lines
//                            "headword<TAB>offset<TAB>length" (base64 numbers, dictd's alphabet) into the
//                            gzip-compatible gcide.dict.dz; an entry is "Word \Pron\ (...), pos. [etym.]"
//                            then numbered senses, quotations indented deeper, "[1913 Webster]" source tags
// Every reader is a pure function of the files' bytes, so a corpus is reproducible from the same packages.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

/** Fortune files that are not prose: ASCII pictures, a file of text to translate. */
export const FORTUNE_SKIP = new Set(['art', 'ascii-art', 'translate-me']);

/** Entries of one strfile source: trimmed, tabs as spaces, trailing blanks dropped. */
export function parseFortunes(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split(/^%$/m)) {
    const lines = raw.replace(/\r/g, '').split('\n').map((l) => l.replace(/\t+/g, ' ').replace(/\s+$/, ''));
    while (lines.length && lines[0] === '') lines.shift();
    while (lines.length && lines[lines.length - 1] === '') lines.pop();
    const f = lines.join('\n').replace(/^\s+/, '');
    if (f === '') continue;
    // Pictures and tables: mostly punctuation and spacing.
    const letters = (f.match(/[A-Za-z]/g) ?? []).length;
    if (letters < 0.5 * f.replace(/\s/g, '').length) continue;
    out.push(f);
  }
  return out;
}

/** Every fortune of a directory (files without an extension, minus FORTUNE_SKIP), sorted by file name. */
export function readFortuneDir(dir: string): Array<{ file: string; text: string }> {
  const out: Array<{ file: string; text: string }> = [];
  for (const name of readdirSync(dir).sort()) {
    if (name.includes('.') || FORTUNE_SKIP.has(name)) continue;
    const buf = readFileSync(join(dir, name));
    // Most files are ASCII; a few older ones are Latin-1.
    const s = new TextDecoder('utf-8', { fatal: false }).decode(buf);
    const text = s.includes('\uFFFD') ? buf.toString('latin1') : s;
    for (const f of parseFortunes(text)) out.push({ file: name, text: f });
  }
  return out;
}

/** Chapters of the `bible` program's output: "Book N" and the verses as lines (numbers dropped). */
export function parseBible(text: string): Array<{ title: string; text: string }> {
  const lines = text.replace(/\r/g, '').split('\n');
  const out: Array<{ title: string; text: string }> = [];
  let cur: { title: string; verses: string[] } | null = null;
  const flush = () => { if (cur && cur.verses.length) out.push({ title: cur.title, text: `${cur.title}\n\n${cur.verses.join('\n')}` }); };
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (/^(?:[1-3] )?[A-Z][a-z]+(?: (?:of )?[A-Z][a-z]+)* \d+$/.test(l) && (lines[i + 1] ?? '') === '') {
      flush();
      cur = { title: l, verses: [] };
      continue;
    }
    if (!cur || l.trim() === '') continue;
    const v = /^\s+\d+ (.*)$/.exec(l);
    if (v) cur.verses.push(v[1]!.trim());
    else if (cur.verses.length) cur.verses[cur.verses.length - 1] += ' ' + l.trim();
  }
  flush();
  return out;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
/** dictd's base64 numbers (most significant digit first). */
export function dictNumber(s: string): number {
  let n = 0;
  for (const ch of s) {
    const d = B64.indexOf(ch);
    if (d < 0) throw new RangeError(`'${s}' is not a dictd number`);
    n = n * 64 + d;
  }
  return n;
}

const POS: Array<[RegExp, string]> = [
  [/^n\. ?pl\./, 'plural noun'], [/^n\./, 'noun'], [/^v\. ?t\./, 'transitive verb'], [/^v\. ?i\./, 'intransitive verb'], [/^v\./, 'verb'],
  [/^a\./, 'adjective'], [/^adj\./, 'adjective'], [/^adv\./, 'adverb'], [/^prep\./, 'preposition'], [/^conj\./, 'conjunction'],
  [/^interj\./, 'interjection'], [/^pron\./, 'pronoun'], [/^p\. ?p\./, 'past participle'], [/^p\. ?pr\./, 'present participle'],
];

export interface Definition {
  word: string;
  /** Part of speech in words ("noun", "transitive verb", ...). */
  pos: string;
  /** The first sense, one or two sentences, markup removed. */
  definition: string;
}

/**
 * The headword, part of speech and first sense of a GCIDE entry; null for entries this shaping does
 * not fit (no part of speech, no sense text, cross-references only, odd characters).
 */
export function parseGcideEntry(entry: string): Definition | null {
  const m = /^(.+?) \\[^\\]*\\(?: \([^)]*\))?,? ?(.*)$/s.exec(entry);
  if (!m) return null;
  const word = m[1]!.trim();
  if (!/^[A-Za-z][A-Za-z' -]{0,30}$/.test(word)) return null;
  // Lines of the entry body at sense indentation (quotations sit deeper), source tags dropped.
  const body = m[2]!.split('\n').filter((l, i) => i === 0 || /^ {0,7}\S/.test(l)).join(' ')
    .replace(/\[(?:1913 Webster|WordNet[^\]]*|PJC|Century[^\]]*|Webster 1913 Suppl\.)\]/g, ' ').replace(/\s+/g, ' ').trim();
  let pos: string | null = null;
  let rest = body;
  for (const [re, name] of POS) {
    const p = re.exec(rest);
    if (p) { pos = name; rest = rest.slice(p[0].length).trim(); break; }
  }
  if (!pos) return null;
  // Skip the etymology and inflection brackets.
  while (rest.startsWith('[')) {
    let depth = 0, i = 0;
    for (; i < rest.length; i++) {
      if (rest[i] === '[') depth++;
      else if (rest[i] === ']' && --depth === 0) break;
    }
    rest = rest.slice(i + 1).trim();
  }
  const sense = /(?:^|\s)1\. (.*?)(?=\s2\. |$)/.exec(rest);
  let def = (sense ? sense[1]! : rest).replace(/^\((?:[A-Za-z. ]+)\)\s*/, '');
  def = def.replace(/ Syn: .*$/, '').replace(/[{}]/g, '').replace(/ --[A-Z][^.]*\.?/g, '').replace(/\s+/g, ' ').trim();
  if (/^(See|Same as|Alt\. of|pl\. of|imp\. & p\. p\.|of )/.test(def) || /\[|\\|"/.test(def)) return null;
  // One or two sentences, at most about 220 characters.
  const sentences = def.match(/[^.;]+[.;]/g) ?? [];
  let out = '';
  for (const s of sentences) {
    if ((out + s).length > 220) break;
    out += s;
    if (out.length > 60) break;
  }
  out = out.trim().replace(/;$/, '.');
  if (out.length < 12 || !/^[A-Za-z(]/.test(out)) return null;
  return { word, pos, definition: out };
}

/** Definitions of every distinct GCIDE entry (first occurrence of each headword and part of speech). */
export function readGcide(indexText: string, dict: Buffer): Definition[] {
  const seen = new Set<string>();
  const out: Definition[] = [];
  for (const line of indexText.split('\n')) {
    const [w, o, n] = line.split('\t');
    if (!w || !o || !n || w.startsWith('00-database')) continue;
    const off = dictNumber(o), len = dictNumber(n);
    const d = parseGcideEntry(dict.subarray(off, off + len).toString('utf8'));
    if (!d) continue;
    const key = `${d.word.toLowerCase()}|${d.pos}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(d);
  }
  return out;
}

/** gcide.index and gcide.dict.dz of a directory (dictzip is gzip with an index in the header). */
export function readGcideDir(dir: string): Definition[] {
  return readGcide(readFileSync(join(dir, 'gcide.index'), 'utf8'), gunzipSync(readFileSync(join(dir, 'gcide.dict.dz'))));
}
