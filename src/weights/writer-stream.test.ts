// SafetensorsFileWriter: a file written in pieces (or finished as sparse zeros) reads back through the
// strict reader exactly like one written whole; byte counts are checked both ways.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint } from './checkpoint.ts';
import { SafetensorsFileWriter, serializeSafetensors, type TensorToWrite } from './writer.ts';

const TENSORS: TensorToWrite[] = [
  { name: 'a', dtype: 'F8_E4M3', shape: [3, 5], data: Uint8Array.from({ length: 15 }, (_, i) => i + 1) },
  { name: 'b', dtype: 'BF16', shape: [2, 3], data: Uint16Array.of(1, 2, 3, 4, 5, 0x3f80) },
  { name: 'c', dtype: 'F32', shape: [2], data: Float32Array.of(0.5, -2) },
];

test('pieces of any size give the same file as serializeSafetensors; zeros finish reads back as zeros', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-wstream-'));
  try {
    const whole = serializeSafetensors(TENSORS, { format: 'pt' });
    const data = Buffer.concat(TENSORS.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)));
    const w = SafetensorsFileWriter.create(join(dir, 'p.safetensors'), TENSORS, { format: 'pt' });
    assert.equal(w.dataBytes, data.length);
    for (let i = 0; i < data.length; i += 7) w.write(data.subarray(i, Math.min(i + 7, data.length)));
    assert.throws(() => w.write(Uint8Array.of(0)), RangeError);
    w.finish();
    assert.ok(readFileSync(join(dir, 'p.safetensors')).equals(Buffer.from(whole)));
    assert.equal(w.headerBytes + w.dataBytes, whole.byteLength);

    const z = SafetensorsFileWriter.create(join(dir, 'z.safetensors'), TENSORS);
    z.write(Uint8Array.of(9, 9));
    z.finishWithZeros();
    const ck = Checkpoint.open(join(dir, 'z.safetensors'));
    try {
      assert.deepEqual([...ck.readBytes('a')], [9, 9, ...new Array(13).fill(0)]);
      assert.ok(ck.readBytes('c').every((x) => x === 0));
    } finally {
      ck.close();
    }

    const short = SafetensorsFileWriter.create(join(dir, 's.safetensors'), TENSORS);
    short.write(data.subarray(0, 10));
    assert.throws(() => short.finish(), /10 of 35 data bytes written/);
    assert.throws(() => short.write(data), /already closed/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
