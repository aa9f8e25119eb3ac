// Training data: a directory with a tokenizer and documents, turned into token streams.
//   tokenizer.json, tokenizer_config.json   the model's tokenizer (copied into every checkpoint)
//   train.jsonl, val.jsonl                  one document per line: {"text": "..."} or {"messages": [...]}
//   train.ids, val.ids (optional)           the same documents tokenized (int32 little-endian), written
//                                           by the data pipeline so a run does not tokenize again
// A text document becomes BOS + its plain-text tokens (special-token strings stay text) + EOS; a chat
// document is rendered by the tokenizer's chat template (BOS, <｜User｜>/<｜Assistant｜> turns, EOS after
// each answer), the format `seekd serve` prompts the model with. Documents are concatenated in file order.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ChatTokenizer, type ChatMessage } from '../engine/tokenizer.ts';

export class TrainDataError extends Error {
  override name = 'TrainDataError';
  readonly exitCode = 2;
}

export type TrainDoc = { text: string } | { messages: ChatMessage[] };

export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'] as const;

/** Parses a JSONL file of documents (blank lines skipped). */
export function readDocs(path: string): TrainDoc[] {
  let body: string;
  try {
    body = readFileSync(path, 'utf8');
  } catch {
    throw new TrainDataError(`${path}: cannot read file`);
  }
  const docs: TrainDoc[] = [];
  body.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let d: unknown;
    try {
      d = JSON.parse(line);
    } catch (e) {
      throw new TrainDataError(`${path}:${i + 1}: ${(e as Error).message}`);
    }
    const o = d as Record<string, unknown>;
    if (typeof o?.text === 'string') docs.push({ text: o.text });
    else if (Array.isArray(o?.messages)) docs.push({ messages: o.messages as ChatMessage[] });
    else throw new TrainDataError(`${path}:${i + 1}: a document needs "text" or "messages"`);
  });
  return docs;
}

/** Token ids of documents (see the file comment). */
export function tokenizeDocs(tok: ChatTokenizer, docs: readonly TrainDoc[]): Int32Array {
  const eos = tok.eosTokenIds[0];
  if (tok.bosId === null || eos === undefined) throw new TrainDataError('the tokenizer needs BOS and EOS tokens');
  const parts: number[][] = [];
  let n = 0;
  for (const d of docs) {
    const ids = 'text' in d ? [tok.bosId, ...tok.encodePlain(d.text), eos] : tok.applyChatTemplate(d.messages, { addGenerationPrompt: false }).ids;
    parts.push(ids);
    n += ids.length;
  }
  const out = new Int32Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

export function writeIds(path: string, ids: Int32Array): void {
  const b = Buffer.alloc(ids.length * 4);
  for (let i = 0; i < ids.length; i++) b.writeInt32LE(ids[i]!, i * 4);
  writeFileSync(path, b);
}

export function readIds(path: string): Int32Array {
  const b = readFileSync(path);
  if (b.length % 4 !== 0) throw new TrainDataError(`${path}: ${b.length} bytes is not a whole number of int32 ids`);
  const out = new Int32Array(b.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = b.readInt32LE(i * 4);
  return out;
}

export interface TrainData {
  tokenizer: ChatTokenizer;
  /** The tokenizer files, to copy into checkpoints. */
  files: Record<string, string>;
  train: Int32Array;
  val: Int32Array | null;
}

/** Loads a data directory (tokenized files when present, else the documents tokenized now). */
export function loadTrainData(dir: string): TrainData {
  for (const f of [...TOKENIZER_FILES, 'train.jsonl']) {
    if (!existsSync(join(dir, f)) && !(f === 'train.jsonl' && existsSync(join(dir, 'train.ids')))) throw new TrainDataError(`${dir}: no ${f} (a data directory has tokenizer.json, tokenizer_config.json, train.jsonl [, val.jsonl])`);
  }
  const tokenizer = ChatTokenizer.load(dir);
  const files = Object.fromEntries(TOKENIZER_FILES.map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
  const split = (name: string): Int32Array | null => {
    if (existsSync(join(dir, `${name}.ids`))) return readIds(join(dir, `${name}.ids`));
    if (existsSync(join(dir, `${name}.jsonl`))) return tokenizeDocs(tokenizer, readDocs(join(dir, `${name}.jsonl`)));
    return null;
  };
  const train = split('train')!;
  const val = split('val');
  return { tokenizer, files, train, val };
}
