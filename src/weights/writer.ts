// safetensors writer, for checkpoints the project makes itself (test variants, benchmark models,
// the built-in model). Tensors are laid out in the given order with no padding; the header is
// space-padded so the data area starts at a multiple of 8, as the reference writer does.
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { DTYPE_BYTES, type DType } from '../tensor/dtypes.ts';

export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
}

export interface TensorToWrite extends TensorSpec {
  /** Little-endian bytes; a typed array view is accepted as is. */
  data: ArrayBufferView;
}

function bytesOf(v: ArrayBufferView): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

export function byteSizeOf(t: TensorSpec): number {
  return t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
}

/**
 * Lays tensors out back to back and builds the header JSON bytes. Returns the header and the size of
 * the data area. Throws a RangeError for a reserved or repeated name or a bad shape.
 */
export function layoutHeader(specs: readonly TensorSpec[], metadata?: Record<string, string>): { header: Uint8Array; dataBytes: number } {
  // A null-prototype object: a tensor called `__proto__` becomes an ordinary key, not a prototype.
  const header = Object.create(null) as Record<string, unknown>;
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of specs) {
    if (t.name === '__metadata__') throw new RangeError('"__metadata__" is reserved and cannot name a tensor');
    if (Object.prototype.hasOwnProperty.call(header, t.name)) throw new RangeError(`tensor ${JSON.stringify(t.name)} given twice`);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new RangeError(`${t.name}: bad shape ${JSON.stringify(t.shape)}`);
    const n = byteSizeOf(t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let text = JSON.stringify(header);
  const len = Buffer.byteLength(text);
  text += ' '.repeat((8 - (len % 8)) % 8);
  return { header: new TextEncoder().encode(text), dataBytes: offset };
}

/** Builds the header JSON bytes (space-padded to a multiple of 8) and checks each data size. */
export function buildHeader(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  for (const t of tensors) {
    const n = byteSizeOf(t);
    if (n !== t.data.byteLength) throw new RangeError(`${t.name}: shape needs ${n} bytes, data has ${t.data.byteLength}`);
  }
  return layoutHeader(tensors, metadata).header;
}

/** The 8-byte little-endian header length prefix. */
export function lengthPrefix(headerBytes: number): Uint8Array {
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(headerBytes), true);
  return len;
}

/** Serializes to one buffer (small files and tests). */
export function serializeSafetensors(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  const header = buildHeader(tensors, metadata);
  const total = 8 + header.byteLength + tensors.reduce((a, t) => a + t.data.byteLength, 0);
  const out = new Uint8Array(total);
  out.set(lengthPrefix(header.byteLength), 0);
  out.set(header, 8);
  let p = 8 + header.byteLength;
  for (const t of tensors) {
    out.set(bytesOf(t.data), p);
    p += t.data.byteLength;
  }
  return out;
}

function writeAll(fd: number, b: Uint8Array): void {
  let done = 0;
  while (done < b.byteLength) done += writeSync(fd, b, done, Math.min(b.byteLength - done, 1 << 30));
}

/** Streams tensors to a file without concatenating them in memory. */
export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  const header = buildHeader(tensors, metadata);
  const fd = openSync(path, 'w');
  try {
    writeAll(fd, lengthPrefix(header.byteLength));
    writeAll(fd, header);
    for (const t of tensors) writeAll(fd, bytesOf(t.data));
  } finally {
    closeSync(fd);
  }
}

/**
 * A safetensors file written in pieces, for files too large to hold in memory: create() writes the
 * length prefix and header for `specs` (laid out as layoutHeader does), then write() appends the data
 * area in order, in pieces of any size. finish() checks that the data area is complete;
 * finishWithZeros() instead sets the file to its full size, so every byte not written reads as zero
 * (on filesystems with sparse files no blocks are allocated for them).
 */
export class SafetensorsFileWriter {
  /** Bytes of the data area (sum of the tensors' sizes). */
  readonly dataBytes: number;
  /** Bytes before the data area (8-byte prefix + header). */
  readonly headerBytes: number;
  #written = 0;
  #fd: number | null;

  private constructor(readonly path: string, fd: number, headerBytes: number, dataBytes: number) {
    this.#fd = fd;
    this.headerBytes = headerBytes;
    this.dataBytes = dataBytes;
  }

  /** Creates (or truncates) `path` and writes the header. Throws RangeError for bad specs (before touching the file). */
  static create(path: string, specs: readonly TensorSpec[], metadata?: Record<string, string>): SafetensorsFileWriter {
    const { header, dataBytes } = layoutHeader(specs, metadata);
    const fd = openSync(path, 'w');
    try {
      writeAll(fd, lengthPrefix(header.byteLength));
      writeAll(fd, header);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    return new SafetensorsFileWriter(path, fd, 8 + header.byteLength, dataBytes);
  }

  /** Data bytes written so far. */
  get written(): number {
    return this.#written;
  }

  /** Appends the next bytes of the data area. Throws RangeError past its end. */
  write(bytes: Uint8Array): void {
    const fd = this.#open();
    if (this.#written + bytes.byteLength > this.dataBytes) {
      throw new RangeError(`${this.path}: ${this.#written + bytes.byteLength} data bytes written, the header declares ${this.dataBytes}`);
    }
    writeAll(fd, bytes);
    this.#written += bytes.byteLength;
  }

  /** Closes the file; throws RangeError (file left as is) when the data area is incomplete. */
  finish(): void {
    const fd = this.#open();
    this.#fd = null;
    closeSync(fd);
    if (this.#written !== this.dataBytes) throw new RangeError(`${this.path}: ${this.#written} of ${this.dataBytes} data bytes written`);
  }

  /** Sets the file to its full size (the unwritten rest of the data area reads as zeros) and closes it. */
  finishWithZeros(): void {
    const fd = this.#open();
    this.#fd = null;
    try {
      ftruncateSync(fd, this.headerBytes + this.dataBytes);
    } finally {
      closeSync(fd);
    }
  }

  /** Closes the file without checks (after an error elsewhere); a second call does nothing. */
  abort(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }

  #open(): number {
    if (this.#fd === null) throw new Error(`${this.path}: writer already closed`);
    return this.#fd;
  }
}
