// bench serve --guided: the fixed requests carry vLLM's structured-output parameter and the server honours it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeServer } from '../server/testing.ts';
import { GUIDED_BENCH_CHOICES, GUIDED_BENCH_REGEX, GUIDED_BENCH_SCHEMA, planRequest, runLoad } from './loadgen.ts';

const srv = await startFakeServer();
after(() => srv.shutdown(1000));

test('bench serve --guided: the fixed requests carry the structured-output parameter, and the server honours it', async () => {
  const cfg = { seed: 0, inputWords: 8, outputLen: 24, model: undefined };
  assert.deepEqual(planRequest({ ...cfg, guided: 'json' }, 0).body.guided_json, GUIDED_BENCH_SCHEMA);
  assert.equal(planRequest({ ...cfg, guided: 'regex' }, 0).body.guided_regex, GUIDED_BENCH_REGEX);
  assert.deepEqual(planRequest({ ...cfg, guided: 'choice' }, 0).body.guided_choice, GUIDED_BENCH_CHOICES);
  assert.equal(planRequest(cfg, 0).body.guided_json, undefined);
  for (const kind of ['json', 'regex', 'choice'] as const) {
    const r = await runLoad({ url: srv.url, concurrency: 2, numPrompts: 2, inputWords: 8, outputLen: 24, seed: 0, guided: kind });
    assert.equal(r.completed, 2, kind);
  }
});
