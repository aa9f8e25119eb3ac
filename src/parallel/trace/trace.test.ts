import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChromeTraceRecorder, mergeTraces } from './chrome-trace.ts';
import { checkChromeTrace, validateChromeTrace, TraceFormatError } from './validate.ts';

test('recorder: sync, nested and async spans on named tracks, M metadata, valid trace', async () => {
  const rec = new ChromeTraceRecorder({ pid: 3, processName: 'rank 3' });
  const v = rec.span('outer', 'compute', () => rec.span('inner', 'compute', () => 42, { k: 1 }));
  assert.equal(v, 42);
  const a = await rec.span('send', 'comm', async () => { await new Promise((r) => setTimeout(r, 5)); return 'ok'; });
  assert.equal(a, 'ok');
  assert.throws(() => rec.span('boom', 'compute', () => { throw new Error('x'); }), /x/);
  const trace = rec.toJSON({ note: 'test' });
  const s = validateChromeTrace(trace);
  assert.equal(s.processes.get(3), 'rank 3');
  assert.deepEqual([...s.threads.values()].sort(), ['communication', 'compute']);
  assert.deepEqual([...s.names].sort(), ['boom', 'inner', 'outer', 'send']);
  const send = trace.traceEvents.find((e) => e.name === 'send')!;
  assert.ok(send.dur! >= 4000, `async span lasts until the promise settles, in µs: ${send.dur}`);
  const outer = trace.traceEvents.find((e) => e.name === 'outer')!;
  const inner = trace.traceEvents.find((e) => e.name === 'inner')!;
  assert.ok(inner.ts! >= outer.ts! && inner.ts! + inner.dur! <= outer.ts! + outer.dur!);
  assert.deepEqual(inner.args, { k: 1 });
  // Timestamps are epoch µs.
  assert.ok(Math.abs(outer.ts! / 1000 - Date.now()) < 60_000);
  // Merged traces of several recorders stay valid.
  const other = new ChromeTraceRecorder({ pid: 4, processName: 'rank 4' });
  other.span('F0', 'compute', () => 0);
  validateChromeTrace(mergeTraces([rec.getEvents(), other.getEvents()]));
});

test('validator rejects what the spec (or Perfetto) does not accept', () => {
  const M = (tid = 1) => ({ name: 'thread_name', ph: 'M', pid: 0, tid, args: { name: 't' } });
  const X = (o: Record<string, unknown> = {}) => ({ name: 'a', ph: 'X', ts: 10, dur: 5, pid: 0, tid: 1, ...o });
  assert.deepEqual(checkChromeTrace({ traceEvents: [M(), X()] }), []);
  assert.deepEqual(checkChromeTrace([M(), X()]), []);
  const bad: Array<[unknown, RegExp]> = [
    [{ traceEvents: [M(), X({ dur: -1 })] }, /dur must be/],
    [{ traceEvents: [M(), X({ dur: undefined })] }, /dur must be/],
    [{ traceEvents: [M(), X({ ts: '10' })] }, /ts must be/],
    [{ traceEvents: [M(), X({ ph: 'Q' })] }, /unknown phase/],
    [{ traceEvents: [M(), X({ pid: 'a' })] }, /pid must be an integer/],
    [{ traceEvents: [M(), X({ name: 3 })] }, /name must be a string/],
    [{ traceEvents: [X()] }, /no thread_name/],
    [{ traceEvents: [M(), X(), X({ ts: 12, dur: 10 })] }, /without nesting/],
    [{ traceEvents: [M(), { name: 'a', ph: 'E', ts: 1, pid: 0, tid: 1 }] }, /E without a matching B/],
    [{ traceEvents: [M(), { name: 'a', ph: 'B', ts: 1, pid: 0, tid: 1 }] }, /never ended/],
    [{ traceEvents: [{ name: 'thread_name', ph: 'M', pid: 0, tid: 1, args: {} }] }, /needs args.name/],
    [{ traceEvents: [{ name: 'bogus_meta', ph: 'M', pid: 0, tid: 1, args: {} }] }, /unknown metadata/],
    [{ traceEvents: 5 }, /traceEvents array/],
    [{ traceEvents: [], displayTimeUnit: 's' }, /displayTimeUnit/],
  ];
  for (const [t, re] of bad) {
    const p = checkChromeTrace(t);
    assert.ok(p.some((m) => re.test(m)), `${JSON.stringify(t)} -> ${JSON.stringify(p)}`);
  }
  assert.throws(() => validateChromeTrace({ traceEvents: [X()] }), TraceFormatError);
  // Nested (contained) and disjoint X events are fine.
  assert.deepEqual(checkChromeTrace({ traceEvents: [M(), X({ dur: 20 }), X({ ts: 12, dur: 3 }), X({ ts: 40 })] }), []);
});
