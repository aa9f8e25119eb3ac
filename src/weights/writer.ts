// safetensors writer, for checkpoints the project makes itself (test variants, benchmark models,
// the built-in model). Tensors are laid out in the given order with no padding.
import { closeSync, openSync, writeSync } from 'node:fs';
import { DTYPE_BYTES, type DType } from '../tensor/dtypes.ts';

export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: number[];
  /** Little-endian bytes; a typed array view is accepted as is. */
  data: ArrayBufferView;
}

function bytesOf(v: ArrayBufferView): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/** Builds the header JSON bytes (space-padded to a multiple of 8, as the reference writer does). */
export function buildHeader(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    if (n !== t.data.byteLength) throw new RangeError(`${t.name}: shape needs ${n} bytes, data has ${t.data.byteLength}`);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let text = JSON.stringify(header);
  while ((Buffer.byteLength(text) + 8) % 8 !== 0) text += ' ';
  return new TextEncoder().encode(text);
}

/** Serializes to one buffer (small files and tests). */
export function serializeSafetensors(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  const header = buildHeader(tensors, metadata);
  const total = 8 + header.byteLength + tensors.reduce((a, t) => a + t.data.byteLength, 0);
  const out = new Uint8Array(total);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.byteLength), true);
  out.set(header, 8);
  let p = 8 + header.byteLength;
  for (const t of tensors) {
    out.set(bytesOf(t.data), p);
    p += t.data.byteLength;
  }
  return out;
}

/** Streams tensors to a file without concatenating them in memory. */
export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  const header = buildHeader(tensors, metadata);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(header.byteLength), true);
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, header);
    for (const t of tensors) {
      const b = bytesOf(t.data);
      let done = 0;
      while (done < b.byteLength) done += writeSync(fd, b, done, b.byteLength - done);
    }
  } finally {
    closeSync(fd);
  }
}
