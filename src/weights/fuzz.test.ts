// Fuzzing the reader with a real checkpoint: thousands of byte mutations (mostly in the header) and
// truncations of the reference BF16 file, plus mutations of the FP8 checkpoint's shard index. Every
// outcome must be a success or a SafetensorsError; a RangeError, TypeError, crash or hang fails.
// The loop runs in a worker thread so that a hang is caught by the deadline and reported with the seed.
// Seeded: set SEEKD_FUZZ_SEED to reproduce a failure (the seed is printed in the failure message).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawnWorker } from '../platform/worker.ts';
import type { FuzzJob, FuzzResult } from './fuzz.worker.ts';
import { SHARED_REF, tempDir } from './testutil.ts';

const tmp = tempDir('seekd-fuzz-', true); // ~25 MB of files rewritten thousands of times: keep it off the disk
after(tmp.cleanup);

// Sized for about 4 s of CPU on 2 cores (wall time ~10 s measured with the machine at load 20).
const FILE_ITERATIONS = 2000;
const INDEX_ITERATIONS = 300;
const DEADLINE_MS = 60_000;

test('fuzz: byte flips and truncations of real checkpoints give success or a SafetensorsError, never anything else', async () => {
  const seed = Number(process.env.SEEKD_FUZZ_SEED ?? 20261129);
  const job: FuzzJob = {
    seed, fileIterations: FILE_ITERATIONS, indexIterations: INDEX_ITERATIONS, tmp: tmp.dir,
    singleFile: join(SHARED_REF, 'tiny-v3-bf16', 'model.safetensors'),
    shardedDir: join(SHARED_REF, 'tiny-v3-fp8'),
  };
  const worker = spawnWorker(new URL('./fuzz.worker.ts', import.meta.url), job);
  const result = await new Promise<FuzzResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`fuzz worker did not finish in ${DEADLINE_MS} ms (hang?); seed ${seed}`));
    }, DEADLINE_MS);
    worker.once('message', (r: FuzzResult) => { clearTimeout(timer); resolve(r); });
    worker.once('error', (e) => { clearTimeout(timer); reject(new Error(`fuzz worker crashed (seed ${seed}): ${e.stack ?? e}`)); });
    worker.once('exit', (code) => { clearTimeout(timer); reject(new Error(`fuzz worker exited with ${code} (seed ${seed})`)); });
  });
  await worker.terminate();
  const failures = result.failures.slice(0, 5).map((f) => `#${f.iteration} ${f.mutation}: ${f.error}`).join('\n');
  assert.equal(result.failures.length, 0, `seed ${seed}: ${result.failures.length} bad outcomes, first ones:\n${failures}`);
  const errors = Object.values(result.rules).reduce((a, b) => a + b, 0);
  assert.equal(result.ok + errors, FILE_ITERATIONS + INDEX_ITERATIONS);
  // The loop must exercise both outcomes and many different rules, or it tests nothing.
  assert.ok(result.ok > 200, `only ${result.ok} successes`);
  assert.ok(errors > 1000, `only ${errors} errors`);
  const rules = Object.keys(result.rules);
  for (const r of ['header-not-json', 'header-out-of-bounds', 'file-too-small', 'data-out-of-bounds', 'bad-index']) {
    assert.ok(rules.includes(r), `rule ${r} never hit: ${JSON.stringify(result.rules)}`);
  }
  assert.ok(rules.length >= 10, `only ${rules.length} rules hit: ${JSON.stringify(result.rules)}`);
  assert.ok(result.dataFlipsChecked > 30, `only ${result.dataFlipsChecked} data flips verified`);
});
