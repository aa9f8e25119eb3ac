// The strict JSON reader: agrees with JSON.parse on valid JSON without duplicate keys, and rejects
// what JSON.parse accepts silently (duplicate keys) or handles badly (depth bombs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JsonCursor, JsonDuplicateKeyError, JsonSyntaxError, MAX_JSON_DEPTH, parseJsonStrict } from './json.ts';
import { rng } from './testutil.ts';

/** Plain-object copy (our objects have a null prototype). */
const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v));

test('agrees with JSON.parse on random valid JSON', () => {
  const r = rng(3);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  const str = (): string => Array.from({ length: Math.floor(r() * 6) }, () => pick(['a', 'é', '"', '\\', '\n', '\u0001', '😀', '/', ' ', '\u2028'])).join('');
  const gen = (d: number): unknown => {
    const k = Math.floor(r() * (d > 4 ? 4 : 6));
    switch (k) {
      case 0: return pick([0, -0, 1, -1.5, 1e300, 2 ** 53 + 2, 123456789, 1e-7]);
      case 1: return str();
      case 2: return pick([true, false, null]);
      case 3: return Math.floor(r() * 1000);
      case 4: return Array.from({ length: Math.floor(r() * 4) }, () => gen(d + 1));
      default: {
        const o: Record<string, unknown> = {};
        for (let i = Math.floor(r() * 4); i > 0; i--) o[str() + i] = gen(d + 1);
        return o;
      }
    }
  };
  for (let i = 0; i < 2000; i++) {
    const v = gen(0);
    const text = JSON.stringify(v, null, i % 2 ? 1 : undefined);
    assert.deepEqual(plain(parseJsonStrict(text)), JSON.parse(text), text);
  }
  // Escapes JSON.stringify does not produce.
  assert.equal(parseJsonStrict('"\\u00e9\\/\\b\\f\\ud83d\\ude00"'), 'é/\b\f😀');
  assert.equal(parseJsonStrict(' 1E+2 '), 100);
});

test('duplicate keys, __proto__, depth, surrogates, grammar', () => {
  assert.throws(() => parseJsonStrict('{"a":1,"a":1}'), JsonDuplicateKeyError);
  assert.throws(() => parseJsonStrict('{"a":1,"\\u0061":2}'), JsonDuplicateKeyError);
  const e = (() => { try { parseJsonStrict('{"x":{"y":[{"k":1,"k":2}]}}'); } catch (err) { return err as JsonDuplicateKeyError; } })()!;
  assert.deepEqual([e.key, e.path], ['k', ['x', 'y']]);
  const o = parseJsonStrict('{"__proto__":{"polluted":true},"constructor":1}') as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(o), null);
  assert.deepEqual(plain(o.__proto__), { polluted: true });
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.doesNotThrow(() => parseJsonStrict('['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH)));
  assert.throws(() => parseJsonStrict('['.repeat(MAX_JSON_DEPTH + 1) + ']'.repeat(MAX_JSON_DEPTH + 1)), JsonSyntaxError);
  assert.throws(() => parseJsonStrict('{"a":'.repeat(1_000_000)), JsonSyntaxError);
  for (const bad of ['', ' ', '01', '1.', '.5', '+1', '-', '1e', '1e+', '0x10', 'NaN', 'Infinity', 'undefined', "'a'", '"\\ud800"',
    '"\\udc00x"', '"\\ud800\\u0041"', '"\\x"', '"a\tb"', '"abc', '[1,]', '[,1]', '{"a"}', '{"a":1,}', '{,}', '{1:2}', 'tru', 'nul',
    '[1] [2]', '\ufeff1', '1 //c', '\u00a01']) {
    assert.throws(() => parseJsonStrict(bad), JsonSyntaxError, JSON.stringify(bad));
  }
});

test('number tokens are classified without precision loss', () => {
  const n = (s: string): ReturnType<JsonCursor['number']> => new JsonCursor(s).number();
  assert.deepEqual(n('0'), { kind: 'uint', value: 0, safe: true });
  assert.deepEqual(n('9007199254740991'), { kind: 'uint', value: 9007199254740991, safe: true });
  assert.deepEqual(n('9007199254740992'), { kind: 'uint', value: Infinity, safe: false });
  assert.deepEqual(n('18446744073709551616'), { kind: 'uint', value: Infinity, safe: false });
  for (const s of ['-0', '-1', '1.0', '1e0', '2E3', '0.5']) assert.equal(n(s).kind, 'other', s);
});
