// safetensors reader: strict header validation, then tensor-by-tensor reads from the file descriptor,
// so a checkpoint is never held twice in memory (a 16 GB FP8 checkpoint loads on a 24 GB machine).
// Format: https://github.com/huggingface/safetensors (8-byte LE header length N, N bytes of UTF-8 JSON,
// then the data area; offsets in the header are relative to the data area).
// The rules follow the reference Rust parser (safetensors/src/tensor.rs `Metadata::validate`).
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { DTYPE_BYTES, isDType, toF32, type DType } from '../tensor/dtypes.ts';
import { SafetensorsError } from './errors.ts';

/** Header size limit of the reference parser. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Absolute byte offset of the first element in the file. */
  readonly fileOffset: number;
  readonly byteLength: number;
  readonly file: string;
}

export interface ParsedHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  dataStart: number;
}

/**
 * Validates a header given its JSON text and the sizes around it. Pure: used by the file reader and by
 * tests that build hostile headers.
 */
export function parseHeader(file: string, headerBytes: Uint8Array, dataStart: number, fileSize: number): ParsedHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError('header-not-utf8', file, 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError('header-not-json', file, `header is not JSON: ${(e as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new SafetensorsError('header-not-object', file, 'header must be a JSON object');
  }
  const dataLength = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const entries: { name: string; dtype: DType; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
        throw new SafetensorsError('bad-metadata', file, '__metadata__ must be an object of strings');
      }
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') throw new SafetensorsError('bad-metadata', file, `__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
      throw new SafetensorsError('bad-entry', file, 'entry must be an object', name);
    }
    const { dtype, shape, data_offsets: offs } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string' || !isDType(dtype)) {
      throw new SafetensorsError('unknown-dtype', file, `unknown dtype ${JSON.stringify(dtype)}`, name);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError('bad-shape', file, `shape must be an array of non-negative integers`, name);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError('bad-offsets', file, 'data_offsets must be [begin, end] non-negative integers', name);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) throw new SafetensorsError('bad-offsets', file, `data_offsets end ${end} < begin ${begin}`, name);
    // Element count with overflow checks: the product must stay a safe integer.
    let n = 1;
    for (const d of shape as number[]) {
      n *= d;
      if (!Number.isSafeInteger(n)) throw new SafetensorsError('size-overflow', file, 'element count overflows', name);
    }
    const bytes = n * DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(bytes)) throw new SafetensorsError('size-overflow', file, 'byte size overflows', name);
    if (bytes !== end - begin) {
      throw new SafetensorsError('size-mismatch', file,
        `shape ${JSON.stringify(shape)} x ${dtype} is ${bytes} bytes but data_offsets span ${end - begin}`, name);
    }
    if (end > dataLength) {
      throw new SafetensorsError('bad-offsets', file, `data_offsets end ${end} is past the data area (${dataLength} bytes)`, name);
    }
    entries.push({ name, dtype, shape: shape as number[], begin, end });
  }
  // Tensors must tile the data area from 0 with no gaps or overlaps, and end exactly at its end.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of entries) {
    if (e.begin !== cursor) {
      throw new SafetensorsError('overlap-or-gap', file,
        e.begin < cursor ? `overlaps the previous tensor (begins at ${e.begin}, previous ends at ${cursor})`
          : `gap before this tensor (begins at ${e.begin}, previous ends at ${cursor})`, e.name);
    }
    cursor = e.end;
  }
  if (cursor !== dataLength) {
    throw new SafetensorsError('trailing-data', file, `tensors end at ${cursor} but the data area has ${dataLength} bytes`);
  }
  const tensors = new Map<string, TensorInfo>();
  for (const e of entries) {
    tensors.set(e.name, {
      name: e.name, dtype: e.dtype, shape: e.shape, file,
      fileOffset: dataStart + e.begin, byteLength: e.end - e.begin,
    });
  }
  return { tensors, metadata, dataStart };
}

function readExact(fd: number, file: string, buf: Uint8Array, position: number): void {
  let done = 0;
  while (done < buf.byteLength) {
    let n: number;
    try {
      n = readSync(fd, buf, done, buf.byteLength - done, position + done);
    } catch (e) {
      throw new SafetensorsError('io', file, `read failed: ${(e as Error).message}`);
    }
    if (n === 0) throw new SafetensorsError('io', file, `unexpected end of file at ${position + done}`);
    done += n;
  }
}

/** One open .safetensors file. Tensors are read on demand; call close() when done. */
export class SafetensorsFile {
  readonly tensors: Map<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  #fd: number;

  private constructor(readonly path: string, fd: number, header: ParsedHeader) {
    this.#fd = fd;
    this.tensors = header.tensors;
    this.metadata = header.metadata;
  }

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new SafetensorsError('io', path, `cannot open: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    try {
      const size = fstatSync(fd).size;
      if (size < 8) throw new SafetensorsError('file-too-small', path, `file has ${size} bytes, fewer than the 8-byte header length`);
      const lenBuf = new Uint8Array(8);
      readExact(fd, path, lenBuf, 0);
      const n = new DataView(lenBuf.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError('header-too-large', path, `header length ${n} exceeds ${MAX_HEADER_BYTES}`);
      const headerLen = Number(n);
      if (8 + headerLen > size) throw new SafetensorsError('header-out-of-bounds', path, `header length ${headerLen} runs past the end of the file (${size} bytes)`);
      const header = new Uint8Array(headerLen);
      readExact(fd, path, header, 8);
      return new SafetensorsFile(path, fd, parseHeader(path, header, 8 + headerLen, size));
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Reads one tensor's raw little-endian bytes into a fresh, exactly-sized buffer. */
  readBytes(name: string): Uint8Array {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError('missing-tensor', this.path, 'no such tensor', name);
    const buf = new Uint8Array(t.byteLength);
    readExact(this.#fd, this.path, buf, t.fileOffset);
    return buf;
  }

  close(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }
}

export { toF32 };
