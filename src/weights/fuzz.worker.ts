// Worker body of the reader fuzz test (fuzz.test.ts): mutates copies of a real checkpoint, opens and
// reads every tensor, and classifies each outcome. Runs in a worker so the test can kill a hang.
// Outcomes: success, or a SafetensorsError (counted by rule); anything else is reported as a failure.
import { closeSync, copyFileSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { Checkpoint, INDEX_FILE } from './checkpoint.ts';
import { SafetensorsError } from './errors.ts';
import { SafetensorsFile, type TensorSource } from './safetensors.ts';
import { rng } from './testutil.ts';

export interface FuzzJob {
  seed: number;
  /** single-file mutations (header flips, data flips, truncations) */
  fileIterations: number;
  /** index-file mutations of the sharded checkpoint */
  indexIterations: number;
  singleFile: string;
  shardedDir: string;
  tmp: string;
}

export interface FuzzFailure { iteration: number; mutation: string; error: string }
export interface FuzzResult {
  ok: number;
  rules: Record<string, number>;
  failures: FuzzFailure[];
  dataFlipsChecked: number;
}

const job = (workerData as { data: FuzzJob }).data;
const rand = rng(job.seed);
const int = (n: number): number => Math.floor(rand() * n);
// Bytes that make structural changes in JSON likely.
const INTERESTING = new TextEncoder().encode('{}[]",:0123456789-.eE \\u\0\xff');

let scratch = new Uint8Array(1 << 16);
/** Reads every tensor, alternating readBytes and readInto (into a reused scratch buffer). */
function readAll(src: TensorSource, iteration: number): Map<string, Uint8Array> | undefined {
  let keep: Map<string, Uint8Array> | undefined;
  for (const [name, t] of src.tensors) {
    if ((iteration + t.byteLength) % 2 === 0) {
      const b = src.readBytes(name);
      if (b.byteLength !== t.byteLength) throw new Error(`readBytes returned ${b.byteLength} bytes for ${t.byteLength}`);
      (keep ??= new Map()).set(name, b);
    } else {
      if (scratch.byteLength < t.byteLength) scratch = new Uint8Array(t.byteLength);
      src.readInto(name, scratch.subarray(0, t.byteLength));
    }
  }
  return keep;
}

function pwrite(path: string, changes: [number, number][]): void {
  const fd = openSync(path, 'r+');
  try {
    for (const [pos, byte] of changes) writeSync(fd, Uint8Array.of(byte), 0, 1, pos);
  } finally {
    closeSync(fd);
  }
}

function mutateByte(old: number): number {
  switch (int(3)) {
    case 0: return old ^ (1 << int(8)); // bit flip
    case 1: return int(256); // random byte
    default: return INTERESTING[int(INTERESTING.length)]!;
  }
}

const result: FuzzResult = { ok: 0, rules: {}, failures: [], dataFlipsChecked: 0 };

function outcome(iteration: number, mutation: string, fn: () => void): boolean {
  try {
    fn();
    result.ok++;
    return true;
  } catch (e) {
    if (e instanceof SafetensorsError) {
      result.rules[e.rule] = (result.rules[e.rule] ?? 0) + 1;
    } else {
      result.failures.push({ iteration, mutation, error: e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e) });
    }
    return false;
  }
}

// ------------------------------------------------------------------ single file

const orig = new Uint8Array(readFileSync(job.singleFile));
const headerEnd = 8 + Number(new DataView(orig.buffer, orig.byteOffset).getBigUint64(0, true));
const work = join(job.tmp, 'fuzz.safetensors');
const cut = join(job.tmp, 'cut.safetensors');
writeFileSync(work, orig);

for (let it = 0; it < job.fileIterations; it++) {
  const roll = rand();
  if (roll < 0.25) { // truncation: some inside the length prefix, half inside the header, the rest anywhere
    const where = rand();
    const len = where < 0.05 ? int(16) : where < 0.5 ? int(headerEnd + 1) : int(orig.byteLength);
    writeFileSync(cut, orig.subarray(0, len));
    outcome(it, `truncate to ${len}`, () => {
      const f = SafetensorsFile.open(cut);
      try { readAll(f, it); } finally { f.close(); }
    });
  } else {
    const inData = roll >= 0.88;
    const count = 1 + int(inData ? 2 : 4);
    const changes: [number, number][] = [];
    for (let k = 0; k < count; k++) {
      const pos = inData ? headerEnd + int(orig.byteLength - headerEnd) : int(headerEnd);
      changes.push([pos, mutateByte(orig[pos]!)]);
    }
    const desc = `${inData ? 'data' : 'header'} bytes ${changes.map(([p, b]) => `@${p}=0x${b.toString(16)}`).join(' ')}`;
    pwrite(work, changes);
    const ok = outcome(it, desc, () => {
      const f = SafetensorsFile.open(work);
      try {
        const kept = readAll(f, it);
        if (!inData) return;
        // A data flip must show up in the tensor holding that byte (when read through readBytes).
        const [pos] = changes[changes.length - 1]!;
        for (const [name, b] of kept ?? []) {
          const t = f.tensors.get(name)!;
          if (pos >= t.fileOffset && pos < t.fileOffset + t.byteLength) {
            const want = changes.filter(([p]) => p === pos).pop()![1];
            if (b[pos - t.fileOffset] !== want) throw new Error(`data flip at ${pos} not visible in ${name}`);
            result.dataFlipsChecked++;
          }
        }
      } finally {
        f.close();
      }
    });
    if (inData && !ok) result.failures.push({ iteration: it, mutation: desc, error: 'a data-only change made the file unreadable' });
    pwrite(work, changes.reverse().map(([p]) => [p, orig[p]!])); // restore
  }
}

// ------------------------------------------------------------------ sharded checkpoint: mutated index

const dir = join(job.tmp, 'sharded');
mkdirSync(dir, { recursive: true });
for (const f of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) copyFileSync(join(job.shardedDir, f), join(dir, f));
const index = new Uint8Array(readFileSync(join(job.shardedDir, INDEX_FILE)));
for (let it = 0; it < job.indexIterations; it++) {
  const m = new Uint8Array(index);
  let desc: string;
  if (rand() < 0.2) {
    const len = int(index.byteLength);
    writeFileSync(join(dir, INDEX_FILE), m.subarray(0, len));
    desc = `index truncated to ${len}`;
  } else {
    const changes: string[] = [];
    for (let k = 1 + int(3); k > 0; k--) {
      const pos = int(m.byteLength);
      m[pos] = mutateByte(m[pos]!);
      changes.push(`@${pos}=0x${m[pos]!.toString(16)}`);
    }
    writeFileSync(join(dir, INDEX_FILE), m);
    desc = `index bytes ${changes.join(' ')}`;
  }
  outcome(job.fileIterations + it, desc, () => {
    const ck = Checkpoint.open(dir);
    try { readAll(ck, it); } finally { ck.close(); }
  });
}

parentPort!.postMessage(result);
