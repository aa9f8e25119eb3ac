import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StopMatcher, StreamingDetokenizer, type TokenDecoder } from './detokenizer.ts';

const bytesDecoder: TokenDecoder = { tokenBytes: (id) => Uint8Array.of(id), decode: () => { throw new Error('unused'); } };

test('multi-byte characters split over byte tokens are held back until complete', () => {
  const d = new StreamingDetokenizer(bytesDecoder);
  const text = 'a🚀é中b';
  const pieces = [...Buffer.from(text, 'utf8')].map((b) => d.push(b));
  for (const p of pieces) assert.ok(!p.includes('\uFFFD'), JSON.stringify(pieces));
  assert.equal(pieces.join('') + d.flush(), text);
  // The rocket's 4 bytes: nothing until the last one.
  assert.deepEqual(pieces.slice(1, 5), ['', '', '', '🚀']);
});

test('an incomplete sequence at the end becomes one U+FFFD on flush', () => {
  const d = new StreamingDetokenizer(bytesDecoder);
  assert.equal(d.push(0xf0) + d.push(0x9f), '');
  assert.equal(d.flush(), '\uFFFD');
});

test('non byte-level tokenizers: window decode holds back while the text ends in U+FFFD', () => {
  // Token t decodes as one byte of "🚀" (4 bytes); decode() joins and decodes them like a real tokenizer.
  const rocket = [...Buffer.from('x🚀y', 'utf8')];
  const dec: TokenDecoder = {
    tokenBytes: () => null,
    decode: (ids) => Buffer.from(ids.map((i) => rocket[i]!)).toString('utf8'),
  };
  const d = new StreamingDetokenizer(dec);
  const out = rocket.map((_, i) => d.push(i));
  assert.deepEqual(out, ['x', '', '', '', '🚀', 'y']);
});

test('stop strings: held back while they could start, cut before, straddling deltas', () => {
  const m = new StopMatcher(['END', '\n\n']);
  assert.deepEqual(m.push('hello E'), { emit: 'hello ', stop: null });
  assert.deepEqual(m.push('N'), { emit: '', stop: null });
  assert.deepEqual(m.push('x'), { emit: 'ENx', stop: null });
  assert.deepEqual(m.push(' ok\n'), { emit: ' ok', stop: null });
  assert.deepEqual(m.push('\nmore'), { emit: '', stop: '\n\n' });
  const m2 = new StopMatcher(['ab']);
  assert.deepEqual(m2.push('xxa'), { emit: 'xx', stop: null });
  assert.equal(m2.flush(), 'a');
  assert.deepEqual(new StopMatcher([]).push('ab'), { emit: 'ab', stop: null });
});
