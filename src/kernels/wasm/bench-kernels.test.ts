// The benchmark baselines' kernels (ops.ts copyBytes, readBytes): they must really touch every byte of
// their range, or the bandwidths divided by would be fiction. readBytes' checksum is compared with a JS
// sum over the same bytes (i32 lanes of the 256-byte-aligned body, wrapping; the tail as bytes) for
// ranges with and without a tail, unaligned starts, and the column split two pool threads get.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WasmRuntime } from './runtime.ts';
import { splitColumns } from './matmul.ts';

function refChecksum(bytes: Uint8Array, i0: number, i1: number): number {
  const n = (i1 - i0) & ~255;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let s = 0;
  for (let i = i0; i < i0 + n; i += 4) s = (s + dv.getInt32(i, true)) | 0;
  for (let i = i0 + n; i < i1; i++) s = (s + bytes[i]!) | 0;
  return s;
}

test('readBytes sums every byte of its range (body in i32 lanes, tail as bytes), with unaligned starts and per-thread ranges', async () => {
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const len = 70_000;
    const src = rt.heap.alloc(len);
    const bytes = new Uint8Array(rt.memory.buffer, src, len);
    let x = 12345;
    for (let i = 0; i < len; i++) { x = (x * 1103515245 + 12345) >>> 0; bytes[i] = x >>> 24; }
    const k = rt.pool.exports('kernels');
    for (const [i0, i1] of [[0, 65536], [0, 65536 + 17], [3, 40_003], [1, 255], [100, 100], [7, 69_999]] as const) {
      assert.equal(k.readBytes!(src, i0, i1), refChecksum(bytes, i0, i1), `range [${i0}, ${i1})`);
    }
    // A changed byte changes the checksum (the body and the tail alike).
    const before = k.readBytes!(src, 0, 1000);
    bytes[10]! ^= 1;
    assert.notEqual(k.readBytes!(src, 0, 1000), before);
    bytes[10]! ^= 1;
    bytes[999]! ^= 1;
    assert.notEqual(k.readBytes!(src, 0, 1000), before);
    // The bench's split: the two threads' parts cover the range, and their checksums add up to the whole's
    // (a body-aligned length, so each part's tail is empty or read bytewise like the whole's).
    const parts = splitColumns(65536, 2).filter((r): r is [number, number] => r !== null);
    assert.deepEqual([parts[0]![0], parts.at(-1)![1]], [0, 65536]);
    let sum = 0;
    for (const [a, b] of parts) sum = (sum + (k.readBytes!(src, a, b) as number)) | 0;
    assert.equal(sum, refChecksum(bytes, 0, 65536));
    // The same split dispatched as the bench does, one part per pool thread: it must run without error.
    rt.pool.run('kernels', 'readBytes', (t) => { const r = parts[t]; return r ? [src, r[0], r[1]] : null; });
    // copyBytes copies exactly bytes [i0, i1) of its range (the neighbours stay as they were).
    const dst = rt.heap.alloc(len);
    new Uint8Array(rt.memory.buffer, dst, len).fill(0xee);
    k.copyBytes!(src, dst, 5, 60_005);
    const want = new Uint8Array(len).fill(0xee);
    want.set(new Uint8Array(rt.memory.buffer, src + 5, 60_000), 5);
    assert.deepEqual(new Uint8Array(rt.memory.buffer, dst, len), want);
  } finally {
    await rt.dispose();
  }
});
