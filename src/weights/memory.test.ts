// Memory: a checkpoint is read tensor by tensor from the file descriptor and never held whole.
// A sparse 1.5 GB file (24 tensors of 64 MB; only the header and marker bytes are written, the rest are
// holes, so it takes no disk space and seconds to read) is opened and every tensor read, once into
// fresh buffers (readBytes) and once into one reused buffer (readInto). Peak RSS growth must stay well
// under the file size (< 0.5x; expected: about one or two tensors).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint } from './checkpoint.ts';
import { tempDir } from './testutil.ts';
import { lengthPrefix, layoutHeader, type TensorSpec } from './writer.ts';

const TENSORS = 24;
const TENSOR_BYTES = 64 << 20;
const tmp = tempDir('seekd-mem-');
after(tmp.cleanup);

test('reading every tensor of a 1.5 GB checkpoint keeps RSS growth well under the file size', () => {
  // BF16 [8192, 4096] = 64 MiB each.
  const specs: TensorSpec[] = Array.from({ length: TENSORS }, (_, i) => ({ name: `layers.${i}.weight`, dtype: 'BF16', shape: [8192, 4096] }));
  const { header, dataBytes } = layoutHeader(specs, { format: 'pt' });
  assert.equal(dataBytes, TENSORS * TENSOR_BYTES);
  const path = join(tmp.dir, 'model.safetensors');
  const dataStart = 8 + header.byteLength;
  const fileSize = dataStart + dataBytes;
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, lengthPrefix(header.byteLength), 0, 8, 0);
    writeSync(fd, header, 0, header.byteLength, 8);
    ftruncateSync(fd, fileSize); // the data area is a hole: reads as zeros
    // Markers at both ends of every tensor, to check each read lands on its own bytes.
    for (let i = 0; i < TENSORS; i++) {
      writeSync(fd, Uint8Array.of(i + 1), 0, 1, dataStart + i * TENSOR_BYTES);
      writeSync(fd, Uint8Array.of(200 + i), 0, 1, dataStart + (i + 1) * TENSOR_BYTES - 1);
    }
  } finally {
    closeSync(fd);
  }

  const ck = Checkpoint.open(tmp.dir);
  try {
    assert.equal(ck.tensors.size, TENSORS);
    const check = (i: number, b: Uint8Array): void => {
      assert.equal(b.byteLength, TENSOR_BYTES);
      assert.equal(b[0], i + 1, `first byte of tensor ${i}`);
      assert.equal(b[TENSOR_BYTES - 1], 200 + i, `last byte of tensor ${i}`);
      assert.equal(b[TENSOR_BYTES >> 1], 0);
    };
    check(0, ck.readBytes(specs[0]!.name)); // warm-up: allocator and code paths
    const base = process.memoryUsage.rss();
    let peak = base;
    for (let i = 0; i < TENSORS; i++) {
      check(i, ck.readBytes(specs[i]!.name)); // a fresh 64 MB buffer, dropped right away
      peak = Math.max(peak, process.memoryUsage.rss());
    }
    const dest = new Uint8Array(TENSOR_BYTES);
    for (let i = 0; i < TENSORS; i++) {
      ck.readInto(specs[i]!.name, dest);
      check(i, dest);
      peak = Math.max(peak, process.memoryUsage.rss());
    }
    const growth = peak - base;
    assert.ok(growth < 0.5 * fileSize,
      `peak RSS grew by ${(growth / 2 ** 20).toFixed(0)} MiB while reading a ${(fileSize / 2 ** 20).toFixed(0)} MiB checkpoint`);
  } finally {
    ck.close();
  }
});
