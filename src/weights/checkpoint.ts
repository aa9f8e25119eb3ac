// A model directory in Hugging Face layout: one `model.safetensors` (or any set of `*.safetensors`
// files), or shards listed by `model.safetensors.index.json` ({"weight_map": {tensor: shard file}}).
// Shard paths must stay inside the directory, lexically and after resolving symlinks. Knows no model:
// tensors are looked up by name. Opening validates every header; tensor data is read lazily, one
// tensor at a time, from the shard's file descriptor.
import { closeSync, constants as fsc, fstatSync, openSync, readdirSync, readSync, realpathSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { DType } from '../tensor/dtypes.ts';
import { quoteName, SafetensorsError } from './errors.ts';
import { JsonDuplicateKeyError, JsonSyntaxError, parseJsonStrict } from './json.ts';
import { SafetensorsFile, type TensorInfo, type TensorSource } from './safetensors.ts';

export const INDEX_FILE = 'model.safetensors.index.json';
/** Largest index file accepted (DeepSeek-V3's is about 9 MB). */
export const MAX_INDEX_BYTES = 100_000_000;

export interface CheckpointOptions {
  /**
   * Accept index shards that are symlinks resolving outside the model directory (the Hugging Face hub
   * cache stores snapshots as symlinks into `../../blobs`). The shard's own path must still be inside.
   * Default false.
   */
  allowExternalSymlinks?: boolean;
}

export class Checkpoint implements TensorSource {
  /** Every tensor of every shard, by name. */
  readonly tensors = new Map<string, TensorInfo>();
  /** Open shards by their (real) path, which is what TensorInfo.file holds. */
  readonly #files = new Map<string, SafetensorsFile>();

  private constructor(readonly dir: string) {}

  /**
   * Opens a model directory (or a single .safetensors file) and validates every header. With an index,
   * only the shards it lists are opened; every listed tensor must be in its shard, and no tensor may be
   * in two shards. Without one, every `*.safetensors` file in the directory is opened.
   */
  static open(dir: string, options: CheckpointOptions = {}): Checkpoint {
    const ck = new Checkpoint(dir);
    try {
      ck.#load(options);
    } catch (e) {
      ck.close();
      throw e;
    }
    return ck;
  }

  #load(options: CheckpointOptions): void {
    let st;
    try {
      st = statSync(this.dir);
    } catch (e) {
      throw new SafetensorsError('io', this.dir, `cannot open model path: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (st.isFile()) {
      this.#openShard(this.dir);
      return;
    }
    const indexPath = join(this.dir, INDEX_FILE);
    let hasIndex = true;
    try {
      statSync(indexPath);
    } catch {
      hasIndex = false;
    }
    if (hasIndex) {
      const shards = readIndex(this.dir, indexPath, options);
      for (const [real, { shard, names }] of shards) {
        const f = this.#openShard(real);
        for (const n of names) {
          if (!f.tensors.has(n)) throw new SafetensorsError('missing-tensor', f.path, `index ${INDEX_FILE} lists this tensor in ${shard} but the shard lacks it`, n);
        }
      }
      return;
    }
    let files: string[];
    try {
      files = readdirSync(this.dir).filter((f) => f.endsWith('.safetensors')).sort();
    } catch (e) {
      throw new SafetensorsError('io', this.dir, `cannot read model directory: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (files.length === 0) throw new SafetensorsError('missing-shard', this.dir, 'no .safetensors file in the model directory');
    for (const name of files) this.#openShard(join(this.dir, name));
  }

  #openShard(path: string): SafetensorsFile {
    const f = SafetensorsFile.open(path);
    this.#files.set(f.path, f);
    for (const [n, info] of f.tensors) {
      const prev = this.tensors.get(n);
      if (prev) throw new SafetensorsError('duplicate-tensor', info.file, `also present in ${prev.file}`, n);
      this.tensors.set(n, info);
    }
    return f;
  }

  /** Paths of the open shard files. */
  get files(): string[] {
    return [...this.#files.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError('missing-tensor', this.dir, 'tensor not found in checkpoint', name);
    return t;
  }

  #fileOf(name: string): SafetensorsFile {
    const t = this.info(name);
    const f = this.#files.get(t.file);
    if (!f) throw new SafetensorsError('io', t.file, 'checkpoint is closed', name);
    return f;
  }

  /** Raw bytes of one tensor (a fresh buffer of exactly its size). */
  readBytes(name: string): Uint8Array {
    return this.#fileOf(name).readBytes(name);
  }

  /** Reads one tensor's raw bytes straight into `dest` (byteLength must match): no intermediate copy. */
  readInto(name: string, dest: ArrayBufferView): void {
    this.#fileOf(name).readInto(name, dest);
  }

  /** Bytes [byteOffset, byteOffset + dest.byteLength) of one tensor into `dest` (a row range; see TensorSource). */
  readRangeInto(name: string, byteOffset: number, dest: ArrayBufferView): void {
    this.#fileOf(name).readRangeInto(name, byteOffset, dest);
  }

  /** One floating-point tensor widened to f32 (for small tensors: norms, biases, embeddings rows...). */
  readF32(name: string): Float32Array {
    return this.#fileOf(name).readF32(name);
  }

  /** Checks dtype and shape, throwing a typed error naming the tensor. */
  expect(name: string, dtypes: readonly DType[], shape?: readonly number[]): TensorInfo {
    const t = this.info(name);
    if (!dtypes.includes(t.dtype)) {
      throw new SafetensorsError('dtype-mismatch', t.file, `dtype ${t.dtype}, expected ${dtypes.join(' or ')}`, name);
    }
    if (shape && (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i]))) {
      throw new SafetensorsError('shape-mismatch', t.file, `shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(shape)}`, name);
    }
    return t;
  }

  close(): void {
    for (const f of this.#files.values()) f.close();
    this.#files.clear();
  }
}

/** True when `p` (absolute, normalised) is `root` or below it. */
function inside(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

function readTextFile(path: string, limit: number): string {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
  } catch (e) {
    throw new SafetensorsError('bad-index', path, `cannot open index: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new SafetensorsError('bad-index', path, 'index is not a regular file');
    if (st.size > limit) throw new SafetensorsError('bad-index', path, `index has ${st.size} bytes, more than ${limit}`);
    const buf = new Uint8Array(st.size);
    let done = 0;
    while (done < buf.byteLength) {
      const n = readSync(fd, buf, done, buf.byteLength - done, done);
      if (n === 0) break;
      done += n;
    }
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(buf.subarray(0, done));
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError('bad-index', path, `cannot read index: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  } finally {
    closeSync(fd);
  }
}

/**
 * Parses and validates the shard index; returns real shard path -> the shard as spelled in the index
 * and the tensors it lists. Two spellings of one file ("a", "./a", a symlink to it) are one shard.
 */
function readIndex(dir: string, indexPath: string, options: CheckpointOptions): Map<string, { shard: string; names: string[] }> {
  let json: unknown;
  try {
    json = parseJsonStrict(readTextFile(indexPath, MAX_INDEX_BYTES));
  } catch (e) {
    if (e instanceof JsonDuplicateKeyError) {
      const where = e.path.length ? ` in ${e.path.join('.')}` : '';
      throw new SafetensorsError('duplicate-key', indexPath, `index has a ${e.message}${where}`, e.path[0] === 'weight_map' ? e.key : undefined);
    }
    if (e instanceof JsonSyntaxError) throw new SafetensorsError('bad-index', indexPath, `index is not valid JSON: ${e.message}`);
    throw e;
  }
  const map = json !== null && typeof json === 'object' && !Array.isArray(json) ? (json as Record<string, unknown>).weight_map : undefined;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) {
    throw new SafetensorsError('bad-index', indexPath, 'index has no weight_map object');
  }
  let root: string;
  try {
    root = realpathSync(dir);
  } catch (e) {
    throw new SafetensorsError('io', dir, `cannot resolve model directory: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const shards = new Map<string, { shard: string; names: string[] }>();
  const resolved = new Map<string, string>(); // shard as spelled -> real path (each checked once)
  for (const [tensor, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.length === 0) {
      throw new SafetensorsError('bad-index', indexPath, 'shard name must be a non-empty string', tensor);
    }
    let real = resolved.get(shard);
    if (real === undefined) {
      real = resolveShard(root, indexPath, shard, tensor, options);
      resolved.set(shard, real);
    }
    const entry = shards.get(real) ?? { shard, names: [] };
    entry.names.push(tensor);
    shards.set(real, entry);
  }
  return shards;
}

function resolveShard(root: string, indexPath: string, shard: string, tensor: string, options: CheckpointOptions): string {
  if (isAbsolute(shard) || shard.includes('\0')) {
    throw new SafetensorsError('index-escapes-dir', indexPath, `shard path ${quoteName(shard)} is not a relative path`, tensor);
  }
  const full = resolve(root, shard);
  if (!inside(root, full) || full === root) {
    throw new SafetensorsError('index-escapes-dir', indexPath, `shard path ${quoteName(shard)} leaves the model directory`, tensor);
  }
  let real: string;
  try {
    real = realpathSync(full);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SafetensorsError('missing-shard', indexPath, `shard ${quoteName(shard)} does not exist${code && code !== 'ENOENT' ? ` (${code})` : ''}`, tensor);
  }
  // Symlinks may not lead out of the directory either (what is opened is the resolved path).
  if (!options.allowExternalSymlinks && !inside(root, real)) {
    throw new SafetensorsError('index-escapes-dir', indexPath, `shard ${quoteName(shard)} resolves outside the model directory (${real})`, tensor);
  }
  return real;
}
