// A checkpoint held in memory: safetensors files as byte arrays (fetched by a browser page, picked from a
// local folder, or read by any other means), with the same validation and reads as Checkpoint (which
// reads files through node:fs). Headers go through the same pure parser (safetensors.ts parseHeader);
// with an index (model.safetensors.index.json) only the listed shards are used and every listed tensor
// must be in its shard.
import { isFloatDType, toF32, type DType } from '../tensor/dtypes.ts';
import { SafetensorsError } from './errors.ts';
import { parseHeader, MAX_HEADER_BYTES, type TensorInfo, type TensorSource } from './safetensors.ts';

export const INDEX_NAME = 'model.safetensors.index.json';

/** What the weight loader needs of a checkpoint (Checkpoint and BytesCheckpoint both are one). */
export interface CheckpointLike extends TensorSource {
  readonly dir: string;
  has(name: string): boolean;
  info(name: string): TensorInfo;
  readF32(name: string): Float32Array;
  expect(name: string, dtypes: readonly DType[], shape?: readonly number[]): TensorInfo;
  close(): void;
}

export class BytesCheckpoint implements CheckpointLike {
  readonly tensors = new Map<string, TensorInfo>();
  readonly #files = new Map<string, Uint8Array>();

  /**
   * `files`: file name -> bytes (safetensors shards, optionally the index). `dir` names the checkpoint
   * in errors (a URL or folder name).
   */
  constructor(readonly dir: string, files: ReadonlyMap<string, Uint8Array>) {
    const index = files.get(INDEX_NAME);
    let shards: [string, string[] | null][];
    if (index) {
      let map: Record<string, string>;
      try {
        map = (JSON.parse(new TextDecoder().decode(index)) as { weight_map: Record<string, string> }).weight_map;
        if (typeof map !== 'object' || map === null) throw new Error('no weight_map object');
      } catch (e) {
        throw new SafetensorsError('bad-index', `${dir}/${INDEX_NAME}`, `cannot read the index: ${(e as Error).message}`);
      }
      const byShard = new Map<string, string[]>();
      for (const [name, shard] of Object.entries(map)) {
        const l = byShard.get(shard) ?? [];
        l.push(name);
        byShard.set(shard, l);
      }
      shards = [...byShard];
    } else {
      shards = [...files.keys()].filter((f) => f.endsWith('.safetensors')).sort().map((f) => [f, null]);
      if (shards.length === 0) throw new SafetensorsError('missing-shard', dir, 'no .safetensors file in the model');
    }
    for (const [shard, names] of shards) {
      const bytes = files.get(shard);
      if (!bytes) throw new SafetensorsError('missing-shard', `${dir}/${shard}`, `index ${INDEX_NAME} lists this shard but it was not given`);
      const tensors = this.#open(shard, bytes);
      for (const n of names ?? []) {
        if (!tensors.has(n)) throw new SafetensorsError('missing-tensor', shard, `index ${INDEX_NAME} lists this tensor in ${shard} but the shard lacks it`, n);
      }
    }
  }

  #open(file: string, bytes: Uint8Array): Map<string, TensorInfo> {
    if (bytes.byteLength < 8) throw new SafetensorsError('file-too-small', file, `file has ${bytes.byteLength} bytes, fewer than the 8-byte header length`);
    const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
    if (n > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError('header-too-large', file, `header length ${n} exceeds ${MAX_HEADER_BYTES}`);
    const len = Number(n);
    if (8 + len > bytes.byteLength) throw new SafetensorsError('header-out-of-bounds', file, `header length ${len} runs past the end of the file (${bytes.byteLength} bytes)`);
    const h = parseHeader(file, bytes.subarray(8, 8 + len), 8 + len, bytes.byteLength);
    this.#files.set(file, bytes);
    for (const [name, info] of h.tensors) {
      const prev = this.tensors.get(name);
      if (prev) throw new SafetensorsError('duplicate-tensor', info.file, `also present in ${prev.file}`, name);
      this.tensors.set(name, info);
    }
    return h.tensors;
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError('missing-tensor', this.dir, 'tensor not found in checkpoint', name);
    return t;
  }

  #bytes(name: string, offset = 0, length?: number): Uint8Array {
    const t = this.info(name);
    const f = this.#files.get(t.file);
    if (!f) throw new SafetensorsError('io', t.file, 'checkpoint is closed', name);
    return f.subarray(t.fileOffset + offset, t.fileOffset + offset + (length ?? t.byteLength));
  }

  readBytes(name: string): Uint8Array {
    return this.#bytes(name).slice();
  }

  readInto(name: string, dest: ArrayBufferView): void {
    const t = this.info(name);
    if (dest.byteLength !== t.byteLength) {
      throw new SafetensorsError('bad-destination', t.file, `destination has ${dest.byteLength} bytes, tensor has ${t.byteLength}`, name);
    }
    new Uint8Array(dest.buffer, dest.byteOffset, dest.byteLength).set(this.#bytes(name));
  }

  readRangeInto(name: string, byteOffset: number, dest: ArrayBufferView): void {
    const t = this.info(name);
    if (!Number.isSafeInteger(byteOffset) || byteOffset < 0 || byteOffset + dest.byteLength > t.byteLength) {
      throw new SafetensorsError('bad-destination', t.file, `byte range [${byteOffset}, ${byteOffset + dest.byteLength}) is outside the tensor's ${t.byteLength} bytes`, name);
    }
    new Uint8Array(dest.buffer, dest.byteOffset, dest.byteLength).set(this.#bytes(name, byteOffset, dest.byteLength));
  }

  readF32(name: string): Float32Array {
    const t = this.info(name);
    if (!isFloatDType(t.dtype)) throw new SafetensorsError('dtype-mismatch', t.file, `dtype ${t.dtype} is not floating-point`, name);
    const raw = this.readBytes(name);
    return t.dtype === 'F32' ? new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4) : toF32(raw, t.dtype);
  }

  expect(name: string, dtypes: readonly DType[], shape?: readonly number[]): TensorInfo {
    const t = this.info(name);
    if (!dtypes.includes(t.dtype)) throw new SafetensorsError('dtype-mismatch', t.file, `dtype ${t.dtype}, expected ${dtypes.join(' or ')}`, name);
    if (shape && (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i]))) {
      throw new SafetensorsError('shape-mismatch', t.file, `shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(shape)}`, name);
    }
    return t;
  }

  close(): void {
    this.#files.clear();
  }
}
