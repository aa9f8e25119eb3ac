// safetensors reader: strict header validation, then tensor-by-tensor reads from the file descriptor,
// so a checkpoint is never held twice in memory (a 16 GB FP8 checkpoint loads on a 24 GB machine):
// opening reads only the 8-byte length and the header; each tensor is read on demand into a fresh
// buffer of exactly its size (readBytes) or straight into a caller's buffer (readInto).
// Format: https://github.com/huggingface/safetensors (8-byte LE header length N, N bytes of UTF-8 JSON,
// then the data area; offsets in the header are relative to the data area).
// The rules follow the reference Rust parser (safetensors/src/tensor.rs `SafeTensors::read_metadata`,
// `Metadata::validate`); where it would accept something this reader rejects, it says so below:
//  - duplicate keys anywhere in the header are rejected (the reference keeps one silently, then usually
//    fails on the gap the dropped entry leaves);
//  - shape ranks are capped at 64 and every size stays below 2^53 (the reference uses u64 arithmetic),
//    so a hostile header cannot make us allocate or compute with inexact numbers;
//  - the sub-byte F4/F6 dtypes are rejected as unsupported.
// Errors are SafetensorsError with a `rule` (see errors.ts) naming the file and tensor.
import { closeSync, constants as fsc, fstatSync, openSync, readSync } from 'node:fs';
import { DTYPE_BYTES, isDType, isFloatDType, toF32, type DType } from '../tensor/dtypes.ts';
import { quoteName, SafetensorsError } from './errors.ts';
import { JsonCursor, JsonDuplicateKeyError, JsonSyntaxError } from './json.ts';

/** Header size limit of the reference parser. */
export const MAX_HEADER_BYTES = 100_000_000;
/** Largest accepted tensor rank (the reference has none; no real checkpoint comes near). */
export const MAX_RANK = 64;
/** Dtypes the reference parser knows but this reader does not support (sub-byte element sizes). */
const SUB_BYTE_DTYPES = new Set(['F4', 'F6_E2M3', 'F6_E3M2']);
/** Largest single read() request (Node caps one read at 2^31 - 1 bytes). */
const READ_CHUNK = 1 << 30;

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
  /** Tensors in data-offset order. */
  tensors: Map<string, TensorInfo>;
  /** `__metadata__` (a null-prototype object, so any key is an ordinary own property). */
  metadata: Record<string, string>;
  dataStart: number;
}

/** What every tensor container offers: a name -> info map and reads by name. */
export interface TensorSource {
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Raw bytes of one tensor (a fresh buffer of exactly its size). */
  readBytes(name: string): Uint8Array;
  /** Reads one tensor's raw bytes straight into `dest`, whose byteLength must equal the tensor's. */
  readInto(name: string, dest: ArrayBufferView): void;
  /**
   * Reads bytes [byteOffset, byteOffset + dest.byteLength) of one tensor's data into `dest` (for a
   * row-major tensor, rows [r0, r1) are byteOffset r0·cols·elementSize): large tensors stream through a
   * small buffer. The range must lie inside the tensor ('bad-destination' otherwise).
   */
  readRangeInto(name: string, byteOffset: number, dest: ArrayBufferView): void;
}

interface RawEntry {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Validates a header given its bytes and the sizes around it. Pure: used by the file reader and by
 * tests that build hostile headers. `dataStart` = 8 + header length; `fileSize` = whole file size.
 */
export function parseHeader(file: string, headerBytes: Uint8Array, dataStart: number, fileSize: number): ParsedHeader {
  let text: string;
  try {
    // ignoreBOM keeps a leading U+FEFF in the text, where the JSON reader rejects it (as serde does).
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError('header-not-utf8', file, 'header is not valid UTF-8');
  }
  let metadata: Record<string, string>;
  let entries: RawEntry[];
  try {
    ({ metadata, entries } = readHeaderJson(file, text));
  } catch (e) {
    if (e instanceof JsonSyntaxError) throw new SafetensorsError('header-not-json', file, `header is not valid JSON: ${e.message}`);
    if (e instanceof JsonDuplicateKeyError) throw new SafetensorsError('duplicate-key', file, `header JSON has a ${e.message}`);
    throw e;
  }
  return layout(file, entries, metadata, dataStart, fileSize - dataStart);
}

/** Schema-directed read of the header JSON: nothing is built for parts that are skipped. */
function readHeaderJson(file: string, text: string): { metadata: Record<string, string>; entries: RawEntry[] } {
  const c = new JsonCursor(text);
  if (c.kind() !== 'object') {
    c.skip(1); // a syntax error here wins: the text is not JSON at all
    c.end();
    throw new SafetensorsError('header-not-object', file, 'header must be a JSON object');
  }
  c.pos++;
  const metadata = Object.create(null) as Record<string, string>;
  const entries: RawEntry[] = [];
  const seen = new Set<string>();
  if (!c.eat('}')) {
    do {
      const name = c.string();
      if (seen.has(name)) throw new SafetensorsError('duplicate-key', file, 'key appears twice in the header', name);
      seen.add(name);
      c.expect(':');
      if (name === '__metadata__') readMetadata(file, c, metadata);
      else entries.push(readEntry(file, c, name));
    } while (c.eat(','));
    c.expect('}');
  }
  c.end();
  return { metadata, entries };
}

function readMetadata(file: string, c: JsonCursor, into: Record<string, string>): void {
  const kind = c.kind();
  if (kind === 'null') { // serde reads `null` as "no metadata"
    c.skip(2);
    return;
  }
  if (kind !== 'object') throw new SafetensorsError('bad-metadata', file, `__metadata__ must be an object of strings, not ${kind}`);
  c.pos++;
  const seen = new Set<string>();
  if (c.eat('}')) return;
  do {
    const k = c.string();
    if (seen.has(k)) throw new SafetensorsError('duplicate-key', file, `key ${quoteName(k)} appears twice in __metadata__`);
    seen.add(k);
    c.expect(':');
    const vk = c.kind();
    if (vk !== 'string') throw new SafetensorsError('bad-metadata', file, `__metadata__ value of ${quoteName(k)} is ${vk}, not a string`);
    into[k] = c.string();
  } while (c.eat(','));
  c.expect('}');
}

function readEntry(file: string, c: JsonCursor, name: string): RawEntry {
  const kind = c.kind();
  if (kind !== 'object') throw new SafetensorsError('bad-entry', file, `entry must be an object, not ${kind}`, name);
  c.pos++;
  let dtype: DType | undefined;
  let shape: number[] | undefined;
  let offsets: [number, number] | undefined;
  const seen = new Set<string>();
  if (!c.eat('}')) {
    do {
      const field = c.string();
      if (seen.has(field)) throw new SafetensorsError('duplicate-key', file, `field ${quoteName(field)} appears twice`, name);
      seen.add(field);
      c.expect(':');
      if (field === 'dtype') dtype = readDType(file, c, name);
      else if (field === 'shape') shape = readShape(file, c, name);
      else if (field === 'data_offsets') offsets = readOffsets(file, c, name);
      else {
        // Unknown fields are ignored, as by the reference; their syntax and depth are still checked.
        try {
          c.skip(3);
        } catch (e) {
          if (e instanceof JsonDuplicateKeyError) throw new SafetensorsError('duplicate-key', file, `${e.message} in field ${quoteName(field)}`, name);
          throw e;
        }
      }
    } while (c.eat(','));
    c.expect('}');
  }
  if (dtype === undefined) throw new SafetensorsError('bad-entry', file, 'entry has no dtype', name);
  if (shape === undefined) throw new SafetensorsError('bad-entry', file, 'entry has no shape', name);
  if (offsets === undefined) throw new SafetensorsError('bad-entry', file, 'entry has no data_offsets', name);
  return { name, dtype, shape, begin: offsets[0], end: offsets[1] };
}

function readDType(file: string, c: JsonCursor, name: string): DType {
  const kind = c.kind();
  if (kind !== 'string') throw new SafetensorsError('unknown-dtype', file, `dtype must be a string, not ${kind}`, name);
  const s = c.string();
  if (isDType(s)) return s;
  if (SUB_BYTE_DTYPES.has(s)) throw new SafetensorsError('unsupported-dtype', file, `sub-byte dtype ${s} is not supported`, name);
  throw new SafetensorsError('unknown-dtype', file, `unknown dtype ${quoteName(s)}`, name);
}

function readShape(file: string, c: JsonCursor, name: string): number[] {
  const kind = c.kind();
  if (kind !== 'array') throw new SafetensorsError('bad-shape', file, `shape must be an array, not ${kind}`, name);
  c.pos++;
  const shape: number[] = [];
  if (c.eat(']')) return shape;
  do {
    if (shape.length === MAX_RANK) throw new SafetensorsError('bad-shape', file, `shape has more than ${MAX_RANK} dimensions`, name);
    const k = c.kind();
    if (k !== 'number') throw new SafetensorsError('bad-shape', file, `shape entries must be non-negative integers, found ${k}`, name);
    const n = c.number();
    if (n.kind !== 'uint') throw new SafetensorsError('bad-shape', file, `shape entry ${n.text} is not a non-negative integer`, name);
    if (!n.safe) throw new SafetensorsError('size-overflow', file, 'shape entry exceeds 2^53 - 1', name);
    shape.push(n.value);
  } while (c.eat(','));
  c.expect(']');
  return shape;
}

function readOffsets(file: string, c: JsonCursor, name: string): [number, number] {
  const kind = c.kind();
  if (kind !== 'array') throw new SafetensorsError('bad-offsets', file, `data_offsets must be an array, not ${kind}`, name);
  c.pos++;
  const out: number[] = [];
  if (!c.eat(']')) {
    do {
      if (out.length === 2) throw new SafetensorsError('bad-offsets', file, 'data_offsets must have exactly 2 entries', name);
      const k = c.kind();
      if (k !== 'number') throw new SafetensorsError('bad-offsets', file, `data_offsets entries must be non-negative integers, found ${k}`, name);
      const n = c.number();
      if (n.kind !== 'uint') throw new SafetensorsError('bad-offsets', file, `data_offsets entry ${n.text} is not a non-negative integer`, name);
      if (!n.safe) throw new SafetensorsError('bad-offsets', file, 'data_offsets entry exceeds 2^53 - 1', name);
      out.push(n.value);
    } while (c.eat(','));
    c.expect(']');
  }
  if (out.length !== 2) throw new SafetensorsError('bad-offsets', file, 'data_offsets must have exactly 2 entries', name);
  return [out[0]!, out[1]!];
}

/** Sizes, offsets and tiling of the data area, as `Metadata::validate` plus the final length check. */
function layout(file: string, entries: RawEntry[], metadata: Record<string, string>, dataStart: number, dataLength: number): ParsedHeader {
  for (const e of entries) {
    if (e.end < e.begin) throw new SafetensorsError('bad-offsets', file, `data_offsets end ${e.end} < begin ${e.begin}`, e.name);
    // Element count with overflow checks: every partial product must stay a safe integer.
    let n = 1;
    for (const d of e.shape) {
      n *= d;
      if (n > Number.MAX_SAFE_INTEGER) throw new SafetensorsError('size-overflow', file, `element count of shape ${JSON.stringify(e.shape)} overflows`, e.name);
    }
    const bytes = n * DTYPE_BYTES[e.dtype];
    if (bytes > Number.MAX_SAFE_INTEGER) throw new SafetensorsError('size-overflow', file, 'byte size overflows', e.name);
    if (bytes !== e.end - e.begin) {
      throw new SafetensorsError('size-mismatch', file,
        `shape ${JSON.stringify(e.shape)} x ${e.dtype} is ${bytes} bytes but data_offsets span ${e.end - e.begin}`, e.name);
    }
    if (e.end > dataLength) {
      throw new SafetensorsError('data-out-of-bounds', file, `data_offsets end ${e.end} is past the data area (${dataLength} bytes)`, e.name);
    }
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
    tensors.set(e.name, Object.freeze({
      name: e.name, dtype: e.dtype, shape: Object.freeze(e.shape), file,
      fileOffset: dataStart + e.begin, byteLength: e.end - e.begin,
    }));
  }
  return { tensors, metadata, dataStart };
}

/** Fills `buf` from `position`, looping over short reads; EOF or failure is an 'io' SafetensorsError. */
function readExact(fd: number, file: string, buf: Uint8Array, position: number, tensor?: string): void {
  let done = 0;
  while (done < buf.byteLength) {
    let n: number;
    try {
      n = readSync(fd, buf, done, Math.min(buf.byteLength - done, READ_CHUNK), position + done);
    } catch (e) {
      throw new SafetensorsError('io', file, `read failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, tensor);
    }
    if (n === 0) throw new SafetensorsError('io', file, `unexpected end of file at byte ${position + done} (file changed after opening?)`, tensor);
    done += n;
  }
}

function bytesOf(v: ArrayBufferView): Uint8Array {
  return v instanceof Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/** One open .safetensors file. Tensors are read on demand; call close() when done. */
export class SafetensorsFile implements TensorSource {
  /** Tensors in data-offset order. */
  readonly tensors: Map<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  /** Byte offset of the data area (8 + header length). */
  readonly dataStart: number;
  readonly size: number;
  #fd: number;

  private constructor(readonly path: string, fd: number, size: number, header: ParsedHeader) {
    this.#fd = fd;
    this.size = size;
    this.tensors = header.tensors;
    this.metadata = header.metadata;
    this.dataStart = header.dataStart;
  }

  /** Opens and validates a file: reads the 8-byte length and the header, nothing else. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      // O_NONBLOCK: opening a FIFO must not block forever; it has no effect on regular files.
      fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
    } catch (e) {
      throw new SafetensorsError('io', path, `cannot open: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new SafetensorsError('not-a-file', path, 'not a regular file');
      const size = st.size;
      if (size < 8) throw new SafetensorsError('file-too-small', path, `file has ${size} bytes, fewer than the 8-byte header length`);
      const lenBuf = new Uint8Array(8);
      readExact(fd, path, lenBuf, 0);
      const n = new DataView(lenBuf.buffer).getBigUint64(0, true);
      // Both checks come before any allocation: a lying length costs nothing.
      if (n > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError('header-too-large', path, `header length ${n} exceeds ${MAX_HEADER_BYTES}`);
      const headerLen = Number(n);
      if (8 + headerLen > size) throw new SafetensorsError('header-out-of-bounds', path, `header length ${headerLen} runs past the end of the file (${size} bytes)`);
      const header = new Uint8Array(headerLen);
      readExact(fd, path, header, 8);
      return new SafetensorsFile(path, fd, size, parseHeader(path, header, 8 + headerLen, size));
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Tensor names in data-offset order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError('missing-tensor', this.path, 'no such tensor', name);
    return t;
  }

  #fdOrThrow(name: string): number {
    if (this.#fd < 0) throw new SafetensorsError('io', this.path, 'file is closed', name);
    return this.#fd;
  }

  /** Reads one tensor's raw little-endian bytes into a fresh, exactly-sized buffer. */
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    const fd = this.#fdOrThrow(name);
    let buf: Uint8Array;
    try {
      buf = new Uint8Array(t.byteLength);
    } catch (e) {
      throw new SafetensorsError('out-of-memory', this.path, `cannot allocate ${t.byteLength} bytes: ${(e as Error).message}`, name);
    }
    readExact(fd, this.path, buf, t.fileOffset, name);
    return buf;
  }

  /**
   * Reads one tensor's raw bytes straight into `dest` (any typed array or DataView; its byteLength must
   * equal the tensor's), with no intermediate buffer: loaders pass backend-owned memory here.
   */
  readInto(name: string, dest: ArrayBufferView): void {
    const t = this.info(name);
    if (dest.byteLength !== t.byteLength) {
      throw new SafetensorsError('bad-destination', this.path, `destination has ${dest.byteLength} bytes, tensor has ${t.byteLength}`, name);
    }
    readExact(this.#fdOrThrow(name), this.path, bytesOf(dest), t.fileOffset, name);
  }

  /** Bytes [byteOffset, byteOffset + dest.byteLength) of one tensor into `dest` (see TensorSource). */
  readRangeInto(name: string, byteOffset: number, dest: ArrayBufferView): void {
    const t = this.info(name);
    if (!Number.isSafeInteger(byteOffset) || byteOffset < 0 || byteOffset + dest.byteLength > t.byteLength) {
      throw new SafetensorsError('bad-destination', this.path,
        `byte range [${byteOffset}, ${byteOffset + dest.byteLength}) is outside the tensor's ${t.byteLength} bytes`, name);
    }
    readExact(this.#fdOrThrow(name), this.path, bytesOf(dest), t.fileOffset + byteOffset, name);
  }

  /** One floating-point tensor widened to f32. */
  readF32(name: string): Float32Array {
    const t = this.info(name);
    if (!isFloatDType(t.dtype)) throw new SafetensorsError('dtype-mismatch', this.path, `dtype ${t.dtype} is not floating-point`, name);
    if (t.dtype === 'F32') { // read straight into the result: no second copy
      const out = new Float32Array(t.byteLength / 4);
      this.readInto(name, out);
      return out;
    }
    return toF32(this.readBytes(name), t.dtype);
  }

  close(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }
}

export { toF32 };
