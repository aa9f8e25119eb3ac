// A model directory in Hugging Face layout: one `model.safetensors`, or shards listed by
// `model.safetensors.index.json` ({"weight_map": {tensor: shard file}}). Shard paths must stay inside
// the directory. Knows no model: tensors are looked up by name.
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { toF32, type DType } from '../tensor/dtypes.ts';
import { SafetensorsError } from './errors.ts';
import { SafetensorsFile, type TensorInfo } from './safetensors.ts';

export const INDEX_FILE = 'model.safetensors.index.json';

export class Checkpoint {
  readonly tensors = new Map<string, TensorInfo>();
  readonly #files = new Map<string, SafetensorsFile>();

  private constructor(readonly dir: string) {}

  /** Opens every shard and validates headers; tensor data is read lazily. */
  static open(dir: string): Checkpoint {
    const ck = new Checkpoint(dir);
    try {
      ck.#load();
    } catch (e) {
      ck.close();
      throw e;
    }
    return ck;
  }

  #load(): void {
    const indexPath = join(this.dir, INDEX_FILE);
    if (existsSync(indexPath)) {
      const shards = readIndex(this.dir, indexPath);
      for (const [shard, names] of shards) {
        const f = SafetensorsFile.open(join(this.dir, shard));
        this.#files.set(shard, f);
        for (const n of names) {
          const info = f.tensors.get(n);
          if (!info) throw new SafetensorsError('missing-tensor', f.path, `index lists this tensor in ${shard} but the shard lacks it`, n);
        }
        for (const [n, info] of f.tensors) this.#add(n, info);
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
    for (const name of files) {
      const f = SafetensorsFile.open(join(this.dir, name));
      this.#files.set(name, f);
      for (const [n, info] of f.tensors) this.#add(n, info);
    }
  }

  #add(name: string, info: TensorInfo): void {
    const prev = this.tensors.get(name);
    if (prev) throw new SafetensorsError('duplicate-tensor', info.file, `also present in ${prev.file}`, name);
    this.tensors.set(name, info);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError('missing-tensor', this.dir, 'tensor not found in checkpoint', name);
    return t;
  }

  /** Raw bytes of one tensor (a fresh buffer of exactly its size). */
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    const f = [...this.#files.values()].find((x) => x.path === t.file)!;
    return f.readBytes(name);
  }

  /** One tensor widened to f32 (for small tensors: norms, biases, embeddings rows...). */
  readF32(name: string): Float32Array {
    return toF32(this.readBytes(name), this.info(name).dtype);
  }

  /** Checks dtype and shape, throwing a typed error naming the tensor. */
  expect(name: string, dtypes: readonly DType[], shape?: readonly number[]): TensorInfo {
    const t = this.info(name);
    if (!dtypes.includes(t.dtype)) {
      throw new SafetensorsError('dtype-mismatch', t.file, `dtype ${t.dtype}, expected ${dtypes.join(' or ')}`, name);
    }
    if (shape && (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i]))) {
      throw new SafetensorsError('size-mismatch', t.file, `shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(shape)}`, name);
    }
    return t;
  }

  close(): void {
    for (const f of this.#files.values()) f.close();
    this.#files.clear();
  }
}

/** Parses and validates the shard index; returns shard file -> tensor names. */
function readIndex(dir: string, indexPath: string): Map<string, string[]> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new SafetensorsError('bad-index', indexPath, `cannot parse index: ${(e as Error).message}`);
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) {
    throw new SafetensorsError('bad-index', indexPath, 'index has no weight_map object');
  }
  const root = realpathSync(dir);
  const shards = new Map<string, string[]>();
  for (const [tensor, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.length === 0) {
      throw new SafetensorsError('bad-index', indexPath, 'shard name must be a non-empty string', tensor);
    }
    if (isAbsolute(shard) || shard.includes('\0')) {
      throw new SafetensorsError('index-escapes-dir', indexPath, `shard path ${JSON.stringify(shard)} is not relative`, tensor);
    }
    const full = resolve(root, shard);
    const rel = relative(root, full);
    if (rel.startsWith('..') || rel.split(sep).includes('..') || isAbsolute(rel)) {
      throw new SafetensorsError('index-escapes-dir', indexPath, `shard path ${JSON.stringify(shard)} leaves the model directory`, tensor);
    }
    if (!existsSync(full)) throw new SafetensorsError('missing-shard', indexPath, `shard ${shard} does not exist`, tensor);
    // Symlinks may not lead out of the directory either.
    const real = realpathSync(full);
    const realRel = relative(root, real);
    if (realRel.startsWith('..') || isAbsolute(realRel)) {
      throw new SafetensorsError('index-escapes-dir', indexPath, `shard ${shard} resolves outside the model directory`, tensor);
    }
    const list = shards.get(rel) ?? [];
    list.push(tensor);
    shards.set(rel, list);
  }
  return shards;
}
