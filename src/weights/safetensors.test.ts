// One hand-built bad file per validation rule of the safetensors reader, plus round trips through the
// writer and byte-exact files from the reference implementation's own tests.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { fromF32 } from '../tensor/dtypes.ts';
import { SafetensorsError } from './errors.ts';
import { MAX_HEADER_BYTES, MAX_RANK, parseHeader, SafetensorsFile } from './safetensors.ts';
import { craft, tempDir, throwsRule, writeTemp } from './testutil.ts';
import { serializeSafetensors, writeSafetensors } from './writer.ts';

const tmp = tempDir();
after(tmp.cleanup);

/** Opens a file built from header text + data and returns it (caller closes). */
const openCrafted = (header: string, data: Uint8Array | number = 0, len?: bigint): SafetensorsFile =>
  SafetensorsFile.open(writeTemp(tmp.dir, craft(header, data, len)));

/** Expects opening the crafted file to fail with `rule` (and `tensor`). */
function rejects(header: string, data: Uint8Array | number, rule: Parameters<typeof throwsRule>[1], tensor?: string): SafetensorsError {
  return throwsRule(() => openCrafted(header, data).close(), rule, tensor, header.length > 120 ? `${header.slice(0, 120)}...` : header);
}

const entry = (dtype: string, shape: unknown, offs: unknown): string =>
  `{"dtype":${JSON.stringify(dtype)},"shape":${typeof shape === 'string' ? shape : JSON.stringify(shape)},"data_offsets":${typeof offs === 'string' ? offs : JSON.stringify(offs)}}`;

// ------------------------------------------------------------------ valid files

test('writer -> reader round trip: every dtype, metadata, readBytes/readInto/readF32, offset order', () => {
  const f32 = Float32Array.of(1, -2, 3.5, 0.25, 7, 8);
  const tensors = [
    { name: 'b.bf16', dtype: 'BF16' as const, shape: [2, 2], data: fromF32([1, 2, 3, 4], 'BF16') },
    { name: 'a.f32', dtype: 'F32' as const, shape: [2, 3], data: f32 },
    { name: 'c.fp8', dtype: 'F8_E4M3' as const, shape: [3], data: fromF32([1, -448, 2 ** -9], 'F8_E4M3') },
    { name: 'd.f16', dtype: 'F16' as const, shape: [1], data: fromF32([65504], 'F16') },
    { name: 'e.i64', dtype: 'I64' as const, shape: [2], data: BigInt64Array.of(-1n, 2n ** 40n) },
    { name: 'f.scalar', dtype: 'F32' as const, shape: [], data: Float32Array.of(42) },
    { name: 'g.empty', dtype: 'F32' as const, shape: [0, 5], data: new Float32Array(0) },
    { name: 'h.u16', dtype: 'U16' as const, shape: [1], data: Uint16Array.of(65535) },
  ];
  const path = join(tmp.dir, 'roundtrip.safetensors');
  writeSafetensors(path, tensors, { format: 'pt', note: 'x' });
  const f = SafetensorsFile.open(path);
  try {
    assert.deepEqual(f.names(), tensors.map((t) => t.name)); // offset order = write order
    assert.deepEqual({ ...f.metadata }, { format: 'pt', note: 'x' });
    assert.equal(f.dataStart % 8, 0, 'header padded to 8');
    for (const t of tensors) {
      const info = f.info(t.name);
      assert.equal(info.dtype, t.dtype);
      assert.deepEqual(info.shape, t.shape);
      assert.deepEqual(f.readBytes(t.name), new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
    assert.deepEqual([...f.readF32('a.f32')], [...f32]);
    assert.deepEqual([...f.readF32('b.bf16')], [1, 2, 3, 4]);
    assert.deepEqual([...f.readF32('c.fp8')], [1, -448, 2 ** -9]);
    assert.deepEqual([...f.readF32('d.f16')], [65504]);
    assert.deepEqual([...f.readF32('f.scalar')], [42]);
    assert.equal(f.readF32('g.empty').length, 0);
    throwsRule(() => f.readF32('e.i64'), 'dtype-mismatch', 'e.i64');
    // readInto: any typed-array destination of the exact byte size, including a view into a bigger buffer.
    const big = new ArrayBuffer(64);
    const dest = new Float32Array(big, 8, 6);
    f.readInto('a.f32', dest);
    assert.deepEqual([...dest], [...f32]);
    assert.deepEqual([...new Uint8Array(big, 0, 8)], new Array(8).fill(0), 'nothing written before the view');
    f.readInto('e.i64', new DataView(new ArrayBuffer(16)));
    throwsRule(() => f.readInto('a.f32', new Float32Array(5)), 'bad-destination', 'a.f32');
    throwsRule(() => f.readInto('a.f32', new Uint8Array(25)), 'bad-destination', 'a.f32');
    throwsRule(() => f.readBytes('nope'), 'missing-tensor', 'nope');
  } finally {
    f.close();
  }
  throwsRule(() => f.readBytes('a.f32'), 'io', 'a.f32'); // closed
  f.close(); // idempotent
});

test('byte-exact files from the reference implementation tests open', () => {
  // safetensors/src/tensor.rs test_serialization: {"attn.0": F32 [1,2,3]} with values 0..5.
  const ref = Uint8Array.of(
    64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
    116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
    58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
    101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
    0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64);
  const f = SafetensorsFile.open(writeTemp(tmp.dir, ref));
  assert.deepEqual(f.info('attn.0').shape, [1, 2, 3]);
  assert.deepEqual([...f.readF32('attn.0')], [0, 1, 2, 3, 4, 5]);
  f.close();
  // test_empty: "{}" padded with spaces, and metadata only.
  const empty = SafetensorsFile.open(writeTemp(tmp.dir, Uint8Array.of(8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32)));
  assert.equal(empty.tensors.size, 0);
  empty.close();
  const meta = SafetensorsFile.open(writeTemp(tmp.dir, craft('{"__metadata__":{"framework":"pt"}}     ')));
  assert.equal(meta.metadata.framework, 'pt');
  meta.close();
  // Our writer produces the same bytes for the same tensor.
  const ours = serializeSafetensors([{ name: 'attn.0', dtype: 'F32', shape: [1, 2, 3], data: Float32Array.of(0, 1, 2, 3, 4, 5) }]);
  assert.deepEqual(ours, ref);
});

test('tolerated: any key order, whitespace, unknown fields, null metadata, escapes, odd tensor names', () => {
  const names = ['__proto__', 'constructor', 'toString', '', 'é ü', 'a"b\\c', 'hasOwnProperty'];
  const specs = names.map((n, i) => ({ name: n, dtype: 'U8' as const, shape: [1], data: Uint8Array.of(i) }));
  const f = SafetensorsFile.open(writeTemp(tmp.dir, serializeSafetensors(specs, JSON.parse('{"__proto__":"p","constructor":"c"}') as Record<string, string>)));
  assert.deepEqual(f.names(), names);
  for (let i = 0; i < names.length; i++) assert.deepEqual([...f.readBytes(names[i]!)], [i]);
  assert.equal(Object.getPrototypeOf(f.metadata), null);
  assert.equal(Object.prototype.hasOwnProperty.call(f.metadata, '__proto__'), true);
  assert.equal(f.metadata['__proto__'], 'p');
  assert.equal(f.metadata['constructor'], 'c');
  f.close();
  const g = openCrafted(
    ' \n\t{ "__metadata__" : null , "x\\u00e9\\ud83d\\ude00\\n" : { "data_offsets" : [ 0 , 4 ] , "extra" : {"deep": [1, {"k": null}]}, "shape" : [ 2 ] , "dtype" : "F16" } }\r\n  ',
    4);
  assert.deepEqual(g.names(), ['xé😀\n']);
  assert.deepEqual(g.info('xé😀\n').shape, [2]);
  g.close();
});

// ------------------------------------------------------------------ framing

test('file-too-small, header-too-large, header-out-of-bounds (without allocating the claimed size)', () => {
  throwsRule(() => SafetensorsFile.open(writeTemp(tmp.dir, new Uint8Array(0))), 'file-too-small');
  throwsRule(() => SafetensorsFile.open(writeTemp(tmp.dir, new Uint8Array(7))), 'file-too-small');
  throwsRule(() => openCrafted('{}', 1000, BigInt(MAX_HEADER_BYTES + 1)), 'header-too-large');
  throwsRule(() => openCrafted('{}', 1000, 2n ** 64n - 1n), 'header-too-large');
  throwsRule(() => openCrafted('{}', 1000, 2n ** 63n), 'header-too-large');
  // Exactly the limit, in a 1 KB file: rejected from the sizes alone.
  const before = process.memoryUsage().arrayBuffers;
  throwsRule(() => openCrafted('{}', 1000, BigInt(MAX_HEADER_BYTES)), 'header-out-of-bounds');
  assert.ok(process.memoryUsage().arrayBuffers - before < 10_000_000, 'no 100 MB buffer was allocated');
  throwsRule(() => openCrafted('{}', 0, 3n), 'header-out-of-bounds');
  // Header length 0: an empty header is not JSON.
  throwsRule(() => openCrafted('', 0), 'header-not-json');
});

test('header-not-utf8: invalid bytes, overlong forms, encoded surrogates', () => {
  for (const bad of [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf8, 0x88, 0x80, 0x80, 0x80]]) {
    const head = new TextEncoder().encode('{"a":"');
    const tail = new TextEncoder().encode('"}');
    const h = new Uint8Array([...head, ...bad, ...tail]);
    const bytes = new Uint8Array(8 + h.length);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(h.length), true);
    bytes.set(h, 8);
    throwsRule(() => SafetensorsFile.open(writeTemp(tmp.dir, bytes)), 'header-not-utf8', undefined, JSON.stringify(bad));
  }
});

// ------------------------------------------------------------------ JSON

test('header-not-json: syntax errors, BOM, nesting bombs, lone surrogates, control characters', () => {
  const ok = entry('F32', [1], [0, 4]);
  const cases = [
    '{"a":', '{} x', '{"t":' + ok + ',}', "{'a':1}", '{"t":' + ok + ' /* c */}', '{"t":' + ok + ' "u":' + ok + '}', '{"t":' + ok + '}}', '{"t" ' + ok + '}',
    '\ufeff{}', // BOM: not whitespace for the reference (serde) either
    '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":' + '['.repeat(200) + ']'.repeat(200) + '}}',
    '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":' + '['.repeat(300_000) + '}}', // unterminated bomb
    '[' .repeat(1_000_000), // top-level bomb, 1 MB deep: no stack overflow
    '{"\\ud800":' + ok + '}', '{"\\udc00":' + ok + '}', '{"\\ud800\\u0041":' + ok + '}',
    '{"a\u0001":' + ok + '}', '{"a\\x":' + ok + '}', '{"a\\u12g4":' + ok + '}',
    '{"t":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}', // leading zero
    '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":NaN}}',
    '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":-}}',
    '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1.}}',
    '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":tru}}',
    '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":"unterminated}}',
    '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}',
  ];
  for (const h of cases) rejects(h, 4, 'header-not-json');
  // Nesting just under the limit (128, like serde_json) is fine in an ignored field.
  const deep = '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":' + '['.repeat(120) + ']'.repeat(120) + '}}';
  openCrafted(deep, 4).close();
});

test('header-not-object: valid JSON of another type', () => {
  for (const h of ['[]', '"str"', '42', 'null', 'true', '[{"a":1}]']) rejects(h, 0, 'header-not-object');
});

test('duplicate-key: tensor names, entry fields, metadata keys, ignored fields', () => {
  const e = entry('F32', [1], [0, 4]);
  // Identical duplicates too: JSON.parse would silently keep one.
  rejects(`{"t":${e},"t":${e}}`, 4, 'duplicate-key', 't');
  rejects(`{"t":${entry('F32', [1], [0, 4])},"t":${entry('F32', [1], [4, 8])}}`, 8, 'duplicate-key', 't');
  rejects('{"t":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4, 'duplicate-key', 't');
  rejects('{"t":{"dtype":"F32","shape":[1],"shape":[1],"data_offsets":[0,4]}}', 4, 'duplicate-key', 't');
  rejects('{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"data_offsets":[0,4]}}', 4, 'duplicate-key', 't');
  rejects(`{"__metadata__":{"a":"1","a":"2"},"t":${e}}`, 4, 'duplicate-key');
  rejects(`{"__metadata__":{},"__metadata__":{},"t":${e}}`, 4, 'duplicate-key', '__metadata__');
  rejects('{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":{"k":1,"k":2}}}', 4, 'duplicate-key', 't');
  // Keys equal after unescaping are the same key.
  rejects(`{"t":${e},"\\u0074":${e}}`, 4, 'duplicate-key', 't');
  rejects('[{"a":1,"a":2}]', 0, 'duplicate-key');
});

// ------------------------------------------------------------------ entries

test('bad-entry, unknown-dtype, unsupported-dtype', () => {
  for (const v of ['5', '[]', '"x"', 'null', 'true']) rejects(`{"t":${v}}`, 0, 'bad-entry', 't');
  rejects('{"t":{"shape":[1],"data_offsets":[0,4]}}', 4, 'bad-entry', 't');
  rejects('{"t":{"dtype":"F32","data_offsets":[0,4]}}', 4, 'bad-entry', 't');
  rejects('{"t":{"dtype":"F32","shape":[1]}}', 4, 'bad-entry', 't');
  rejects('{"t":{}}', 0, 'bad-entry', 't');
  for (const d of ['F33', 'f32', 'float32', '', '__proto__', 'toString', 'F32 ']) rejects(`{"t":${entry(d, [1], [0, 4])}}`, 4, 'unknown-dtype', 't');
  for (const v of ['5', 'null', '["F32"]', '{}']) rejects(`{"t":{"dtype":${v},"shape":[1],"data_offsets":[0,4]}}`, 4, 'unknown-dtype', 't');
  for (const d of ['F4', 'F6_E2M3', 'F6_E3M2']) rejects(`{"t":${entry(d, [2], [0, 1])}}`, 1, 'unsupported-dtype', 't');
});

test('bad-shape: floats, strings, negatives, exponents, non-arrays, too many dimensions (no allocation)', () => {
  for (const s of ['[1.0]', '[1.5]', '["4"]', '[-1]', '[-0]', '[1e2]', '[4E0]', '[null]', '[true]', '[[1]]', '[{}]', '"4"', '4', '{}', 'null']) {
    rejects(`{"t":${entry('U8', s, [0, 4])}}`, 4, 'bad-shape', 't');
  }
  rejects(`{"t":${entry('U8', new Array(MAX_RANK + 1).fill(1), [0, 1])}}`, 1, 'bad-shape', 't');
  openCrafted(`{"t":${entry('U8', new Array(MAX_RANK).fill(1), [0, 1])}}`, 1).close();
  // Ten million dimensions: rejected after 64 without building the array.
  const huge = `{"t":{"dtype":"U8","shape":[${'1,'.repeat(10_000_000)}1],"data_offsets":[0,1]}}`;
  const t0 = performance.now();
  rejects(huge, 1, 'bad-shape', 't');
  assert.ok(performance.now() - t0 < 5000);
});

test('size-overflow: huge dimensions, element counts and byte sizes', () => {
  rejects(`{"t":${entry('U8', '[9007199254740992]', [0, 1])}}`, 1, 'size-overflow', 't'); // 2^53
  rejects(`{"t":${entry('U8', '[18446744073709551616]', [0, 1])}}`, 1, 'size-overflow', 't'); // 2^64
  rejects(`{"t":${entry('U8', '[99999999999999999999999999999999999999]', [0, 1])}}`, 1, 'size-overflow', 't');
  rejects(`{"t":${entry('F32', [2 ** 27, 2 ** 27], [0, 4])}}`, 4, 'size-overflow', 't'); // 2^54 elements
  rejects(`{"t":${entry('F64', [2 ** 51], [0, 8])}}`, 8, 'size-overflow', 't'); // 2^54 bytes
  rejects(`{"t":${entry('U8', [2 ** 20, 2 ** 20, 2 ** 20, 0], [0, 0])}}`, 0, 'size-overflow', 't'); // overflows before the 0
  openCrafted(`{"t":${entry('U8', [0, 2 ** 40, 2 ** 12], [0, 0])}}`, 0).close(); // a 0 first keeps it at 0
});

test('size-mismatch and bad-offsets', () => {
  rejects(`{"t":${entry('F32', [2], [0, 4])}}`, 4, 'size-mismatch', 't');
  rejects(`{"t":${entry('BF16', [3], [0, 4])}}`, 4, 'size-mismatch', 't');
  rejects(`{"t":${entry('U8', [], [0, 0])}}`, 0, 'size-mismatch', 't'); // a scalar has 1 element
  for (const o of ['[4,0]', '[0]', '[]', '[0,4,8]', '[-1,3]', '[0.0,4]', '[0,4.5]', '["0",4]', '[0,1e1]', '[0,null]', '{"0":0}', '"0,4"', '4',
    '[1152921504606846976,1152921504606846980]', '[0,99999999999999999999]']) {
    rejects(`{"t":${entry('U8', [4], o)}}`, 4, 'bad-offsets', 't');
  }
});

test('data-out-of-bounds, overlap-or-gap, trailing-data', () => {
  rejects(`{"t":${entry('U8', [8], [0, 8])}}`, 4, 'data-out-of-bounds', 't');
  rejects(`{"a":${entry('U8', [8], [0, 8])},"b":${entry('U8', [8], [4, 12])}}`, 12, 'overlap-or-gap', 'b');
  rejects(`{"a":${entry('U8', [4], [0, 4])},"b":${entry('U8', [4], [8, 12])}}`, 12, 'overlap-or-gap', 'b');
  rejects(`{"a":${entry('U8', [4], [4, 8])}}`, 8, 'overlap-or-gap', 'a');
  rejects(`{"a":${entry('U8', [4], [0, 4])},"b":${entry('U8', [4], [0, 4])}}`, 4, 'overlap-or-gap'); // same span twice
  rejects(`{"a":${entry('U8', [4], [0, 4])}}`, 5, 'trailing-data');
  rejects('{}', 1, 'trailing-data');
  // Zero-sized tensors may share an offset; declared in any order.
  const f = openCrafted(`{"z":${entry('F32', [0], [4, 4])},"b":${entry('U8', [4], [4, 8])},"a":${entry('U8', [4], [0, 4])},"y":${entry('U8', [0, 3], [4, 4])}}`, 8);
  assert.deepEqual(f.names().filter((n) => n === 'a' || n === 'b'), ['a', 'b']);
  f.close();
});

test('bad-metadata', () => {
  const e = entry('U8', [1], [0, 1]);
  for (const m of ['{"k":1}', '{"k":null}', '{"k":{"x":"y"}}', '{"k":["a"]}', '[]', '"x"', '5', 'true']) {
    rejects(`{"__metadata__":${m},"t":${e}}`, 1, 'bad-metadata');
  }
  openCrafted(`{"__metadata__":null,"t":${e}}`, 1).close();
  openCrafted(`{"__metadata__":{},"t":${e}}`, 1).close();
});

// ------------------------------------------------------------------ files

test('io and not-a-file: missing path, directory, FIFO, file truncated after opening', () => {
  throwsRule(() => SafetensorsFile.open(join(tmp.dir, 'does-not-exist.safetensors')), 'io');
  const d = join(tmp.dir, 'a-directory.safetensors');
  mkdirSync(d);
  throwsRule(() => SafetensorsFile.open(d), 'not-a-file');
  let fifo: string | undefined;
  try {
    fifo = join(tmp.dir, 'fifo.safetensors');
    execFileSync('mkfifo', [fifo]);
  } catch {
    fifo = undefined; // no mkfifo on this system: the directory case covers not-a-file
  }
  if (fifo) throwsRule(() => SafetensorsFile.open(fifo!), 'not-a-file'); // must not block
  const path = writeTemp(tmp.dir, craft(`{"a":${entry('U8', [4], [0, 4])},"b":${entry('U8', [4], [4, 8])}}`, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)));
  const f = SafetensorsFile.open(path);
  truncateSync(path, f.dataStart + 6);
  assert.deepEqual([...f.readBytes('a')], [1, 2, 3, 4]);
  throwsRule(() => f.readBytes('b'), 'io', 'b');
  throwsRule(() => f.readInto('b', new Uint8Array(4)), 'io', 'b');
  f.close();
});

test('parseHeader is usable on its own and reports the file name', () => {
  const h = new TextEncoder().encode(`{"t":${entry('U8', [2], [0, 2])}}`);
  const p = parseHeader('mem.safetensors', h, 8 + h.length, 8 + h.length + 2);
  assert.equal(p.tensors.get('t')!.fileOffset, 8 + h.length);
  const err = throwsRule(() => parseHeader('mem.safetensors', h, 8 + h.length, 8 + h.length + 1), 'data-out-of-bounds', 't');
  assert.equal(err.file, 'mem.safetensors');
  assert.match(err.message, /mem\.safetensors \["t"\]/);
});

test('readInto fills shared memory (wasm threads) in place; the writer refuses what the reader would reject', () => {
  const path = join(tmp.dir, 'shared-mem.safetensors');
  writeSafetensors(path, [{ name: 'w', dtype: 'F32', shape: [3], data: Float32Array.of(1, 2, 3) }]);
  const f = SafetensorsFile.open(path);
  const mem = new SharedArrayBuffer(256); // what a shared wasm Memory's buffer is
  const dest = new Float32Array(mem, 64, 3);
  f.readInto('w', dest);
  assert.deepEqual([...new Float32Array(mem, 64, 3)], [1, 2, 3]);
  f.close();
  const t = { name: 'x', dtype: 'U8' as const, shape: [1], data: Uint8Array.of(1) };
  assert.throws(() => serializeSafetensors([t, t]), RangeError);
  assert.throws(() => serializeSafetensors([{ ...t, name: '__metadata__' }]), RangeError);
  assert.throws(() => serializeSafetensors([{ ...t, shape: [2] }]), RangeError);
  assert.throws(() => serializeSafetensors([{ ...t, shape: [-1] }]), RangeError);
  assert.throws(() => serializeSafetensors([{ ...t, shape: [0.5] }]), RangeError);
});
