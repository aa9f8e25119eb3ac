// DeepEP semantics (layout, dispatch order and remapping, combine sums, low-latency counts, handles and
// weighted combine, FP8 payloads) at R = 2, 4, 8 worker-thread ranks and R = 2 process ranks over
// loopback TCP. Shapes are scaled down from DeepEP's tests (T=4096, H=7168, K=8, E=256 normal;
// T=128 low latency) to T=24, H=256 (two FP8 groups), K=4, E=4R·2, low-latency T=12 so the whole file
// runs in a few seconds on 2 cores; the full shapes run in `npm run bench -- ep`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launchProcessRanks, launchThreadRanks, type RankOutcome } from './launch.ts';
import type { CheckParams } from './testing/checks.ts';

const RANK = new URL('./testing/checks-rank.ts', import.meta.url);

const params = (R: number, seed: number): CheckParams => ({ seed, T: 24, H: 256, K: 4, E: 8 * R, llT: 12, llMaxT: 16 });

function assertAllPassed(outcomes: RankOutcome[], R: number): void {
  assert.equal(outcomes.length, R);
  for (const o of outcomes) {
    if (!o.ok) assert.fail(`rank ${o.rank}: ${o.error.name}: ${o.error.message}`);
    assert.ok((o.value as number) > 20, `rank ${o.rank} ran ${o.value} checks`);
  }
}

for (const R of [2, 4, 8]) {
  test(`DeepEP semantics on ${R} worker-thread ranks`, { timeout: 60_000 }, async () => {
    // A small ring (64 KiB) so that messages stream through it in many pieces.
    const { group } = launchThreadRanks(RANK, R, params(R, R), { capacity: 64 << 10, timeoutMs: 20_000 });
    try {
      assertAllPassed(await group.outcomes, R);
    } finally {
      await group.close();
    }
  });
}

test('DeepEP semantics with the caller as rank 0 of 2 thread ranks', { timeout: 60_000 }, async () => {
  const { runDeepEPChecks } = await import('./testing/checks.ts');
  const { group, comm } = launchThreadRanks(RANK, 2, params(2, 11), { callerIsRank0: true, timeoutMs: 20_000 });
  try {
    const mine = await runDeepEPChecks(comm!, params(2, 11));
    assert.ok(mine > 20);
    const others = await group.outcomes;
    assertAllPassed(others, 1);
  } finally {
    await comm!.close();
    await group.close();
  }
});

test('blocking API: the caller is rank 0 of 4 thread ranks with a SyncThreadCommunicator', { timeout: 60_000 }, async () => {
  const { runDeepEPChecks } = await import('./testing/checks.ts');
  // A small ring so that large messages need several blocking rounds in both directions.
  const { group, comm } = launchThreadRanks(RANK, 4, params(4, 13), { callerIsRank0: true, syncRank0: true, capacity: 16 << 10, timeoutMs: 20_000 });
  try {
    const mine = await runDeepEPChecks(comm!, params(4, 13), true).catch(async (e: Error) => {
      await comm!.close();
      const o = await Promise.race([group.outcomes, new Promise((r) => setTimeout(() => r('no outcomes'), 3000))]);
      throw new Error(`${e.message}; workers: ${JSON.stringify(o)}`);
    });
    assert.ok(mine > 20);
    assertAllPassed(await group.outcomes, 3);
  } finally {
    await comm!.close();
    await group.close();
  }
});

test('DeepEP semantics on 2 process ranks over loopback TCP', { timeout: 60_000 }, async () => {
  const { group } = launchProcessRanks(RANK, 2, params(2, 5), { timeoutMs: 20_000 });
  try {
    assertAllPassed(await group.outcomes, 2);
  } finally {
    await group.close();
  }
});
