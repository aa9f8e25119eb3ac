// The built-in model's data pipeline: English text from Debian packages (sources.ts) → documents →
// a held-out split → a byte-level BPE tokenizer learned on the training split → token files, and a
// unigram baseline for the "done" check of issue #15 (perplexity on held-out fortunes below half a
// unigram model's fitted on the same training tokens).
// Documents: a fortune is a text document; a Bible chapter is a text document; a GCIDE definition
// becomes a chat turn ({"messages": [user question, assistant answer]}, rendered by the chat template
// when tokenized), so the model sees the prompt format `seekd serve` gives it.
// Split: a document is held out when the FNV-1a hash of its content falls in the first `heldout`
// fraction (stable under adding or removing other documents); each split is shuffled with the seed.
// Output directory (what `seekd train --data` reads, data.ts):
//   tokenizer.json, tokenizer_config.json, train.jsonl, val.jsonl, train.ids, val.ids,
//   heldout-fortunes.txt (the held-out fortunes, blank-line separated, for `seekd perplexity --file`),
//   stats.json (documents and tokens per source and split, the unigram baseline)
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ChatTokenizer } from '../../engine/tokenizer.ts';
import { mulberry32 } from '../../tensor/random.ts';
import { tokenizeDocs, writeIds, type TrainDoc } from '../data.ts';
import { parseBible, readFortuneDir, readGcideDir, type Definition } from './sources.ts';
import { buildTokenizer } from './tokenizer.ts';

export interface PrepareOptions {
  out: string;
  /** Fortune directory (strfile sources), or null to leave fortunes out. */
  fortunes: string | null;
  /** Directory with gcide.index and gcide.dict.dz, or null. */
  gcide: string | null;
  /** The `bible` program's output for the whole text, or null. */
  bibleText: string | null;
  /** At most this many GCIDE definitions (chosen by hash). */
  gcideEntries: number;
  vocab: number;
  /** Characters of (shuffled) training text the BPE learns from. */
  bpeChars: number;
  /** Fraction of documents held out. */
  heldout: number;
  seed: number;
  modelMaxLength: number;
}

type Source = 'fortunes' | 'bible' | 'gcide';
interface Doc { source: Source; doc: TrainDoc; key: string }

export interface PrepareStats {
  documents: Record<Source, { train: number; val: number }>;
  trainTokens: number;
  valTokens: number;
  merges: number;
  vocab: number;
  heldoutFortunes: { file: string; tokens: number; unigramPpl: number } | null;
}

/** 32-bit FNV-1a of a string's UTF-16 code units. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

const QUESTIONS = [
  (w: string) => `What does "${w}" mean?`,
  (w: string) => `What is the meaning of the word "${w}"?`,
  (w: string) => `Define "${w}".`,
  (w: string) => `What does the word ${w} mean?`,
];

/** A definition as a chat turn: a question about the word and a one-sentence answer. */
export function definitionTurn(d: Definition): TrainDoc {
  const w = /^[A-Z][a-z]/.test(d.word) ? d.word.toLowerCase() : d.word;
  const q = QUESTIONS[fnv1a(d.word + d.pos) % QUESTIONS.length]!(w);
  const article = /^[aeiou]/.test(d.pos) ? 'an' : 'a';
  const def = d.definition[0]!.toLowerCase() + d.definition.slice(1);
  return { messages: [{ role: 'user', content: q }, { role: 'assistant', content: `"${w}" is ${article} ${d.pos}: ${def}` }] };
}

function shuffle<T>(a: T[], seed: number): T[] {
  const r = mulberry32(seed);
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

const plain = (d: TrainDoc) => ('text' in d ? d.text : d.messages.map((m) => m.content ?? '').join('\n'));

/** Mean −ln p of `ids[1..]` under add-one-smoothed unigram counts of `train` over V ids. */
export function unigramNll(train: Int32Array, V: number, ids: readonly number[]): number {
  const counts = new Float64Array(V).fill(1);
  for (const t of train) counts[t]! += 1;
  const total = train.length + V;
  let s = 0;
  for (let i = 1; i < ids.length; i++) s -= Math.log(counts[ids[i]!]! / total);
  return s / (ids.length - 1);
}

export function prepareData(o: PrepareOptions, log: (msg: string) => void = () => {}): PrepareStats {
  const docs: Doc[] = [];
  if (o.fortunes) {
    const f = readFortuneDir(o.fortunes);
    log(`fortunes: ${f.length} entries`);
    for (const x of f) docs.push({ source: 'fortunes', doc: { text: x.text }, key: x.text });
  }
  if (o.bibleText !== null) {
    const b = parseBible(o.bibleText);
    log(`bible: ${b.length} chapters`);
    for (const x of b) docs.push({ source: 'bible', doc: { text: x.text }, key: x.text });
  }
  if (o.gcide) {
    const g = readGcideDir(o.gcide).map((d) => ({ d, h: fnv1a(`${d.word}|${d.pos}`) })).sort((a, b) => a.h - b.h || (a.d.word < b.d.word ? -1 : 1));
    log(`gcide: ${g.length} definitions, ${Math.min(g.length, o.gcideEntries)} used`);
    for (const { d } of g.slice(0, o.gcideEntries)) docs.push({ source: 'gcide', doc: definitionTurn(d), key: `${d.word}|${d.pos}|${d.definition}` });
  }
  if (docs.length === 0) throw new Error('no documents: give at least one source');
  const cut = Math.round(o.heldout * 2 ** 32);
  const train = shuffle(docs.filter((d) => fnv1a(d.key) >= cut), o.seed);
  const val = shuffle(docs.filter((d) => fnv1a(d.key) < cut), o.seed + 1);
  mkdirSync(o.out, { recursive: true });

  let sample = '';
  for (const d of train) {
    if (sample.length >= o.bpeChars) break;
    sample += plain(d.doc) + '\n';
  }
  log(`BPE: learning ${o.vocab}-id vocabulary from ${sample.length.toLocaleString('en-US')} characters`);
  const tk = buildTokenizer(sample, o.vocab, o.modelMaxLength);
  writeFileSync(join(o.out, 'tokenizer.json'), JSON.stringify(tk.tokenizerJson));
  writeFileSync(join(o.out, 'tokenizer_config.json'), JSON.stringify(tk.tokenizerConfig, null, 2) + '\n');
  const tok = ChatTokenizer.load(o.out);
  const documents = { fortunes: { train: 0, val: 0 }, bible: { train: 0, val: 0 }, gcide: { train: 0, val: 0 } };
  const ids: Record<'train' | 'val', Int32Array> = { train: new Int32Array(0), val: new Int32Array(0) };
  for (const [name, split] of [['train', train], ['val', val]] as const) {
    writeFileSync(join(o.out, `${name}.jsonl`), split.map((d) => JSON.stringify(d.doc)).join('\n') + '\n');
    for (const d of split) documents[d.source][name]++;
    ids[name] = tokenizeDocs(tok, split.map((d) => d.doc));
    writeIds(join(o.out, `${name}.ids`), ids[name]);
    log(`${name}: ${split.length} documents, ${ids[name].length.toLocaleString('en-US')} tokens`);
  }
  let heldoutFortunes: PrepareStats['heldoutFortunes'] = null;
  const vf = val.filter((d) => d.source === 'fortunes').map((d) => (d.doc as { text: string }).text);
  if (vf.length) {
    const text = vf.join('\n\n') + '\n';
    writeFileSync(join(o.out, 'heldout-fortunes.txt'), text);
    // Scored as `seekd perplexity` scores a file: BOS + plain-text tokens, every position after the first.
    const seq = [tok.bosId!, ...tok.encodePlain(text)];
    const nll = unigramNll(ids.train, tok.vocabSize, seq);
    heldoutFortunes = { file: 'heldout-fortunes.txt', tokens: seq.length - 1, unigramPpl: Math.exp(nll) };
    log(`held-out fortunes: ${seq.length - 1} tokens, unigram perplexity ${Math.exp(nll).toFixed(2)}`);
  }
  const stats: PrepareStats = { documents, trainTokens: ids.train.length, valTokens: ids.val.length, merges: tk.merges, vocab: o.vocab, heldoutFortunes };
  writeFileSync(join(o.out, 'stats.json'), JSON.stringify(stats, null, 2) + '\n');
  return stats;
}
