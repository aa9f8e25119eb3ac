// The engine over expert-parallel ranks (Llm.load with routedExperts, as `serve --ep` / `run --ep` pass it):
// continuous batching through the EP runtime gives the tokens of the plain runner; a rank killed
// mid-request fails the requests in flight with EngineFailedError, and the rebuilt runner starts new ranks
// and serves the same tokens again; close() stops every rank it started.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Llm } from './llm.ts';
import { defaultSamplingParams } from './contracts.ts';
import { EngineFailedError } from './engine.ts';
import { ExpertParallel } from '../parallel/deepep/ep/runtime.ts';

const PROMPTS = [[1, 5, 17, 30], [2, 9], [100, 200, 300, 400, 500, 600, 7], [42]];
const OPTS = { backend: 'wasm', maxModelLen: 256, maxNumSeqs: 8, maxNumBatchedTokens: 64 } as const;

async function greedy(llm: Llm, prompt: number[], maxTokens: number, onToken?: () => void): Promise<number[]> {
  const ids: number[] = [];
  const params = defaultSamplingParams({ temperature: 0, maxTokens, ignoreEos: true });
  for await (const d of llm.engine.generate({ prompt, params })) {
    if (d.type === 'text') {
      ids.push(...d.tokenIds);
      onToken?.();
    }
  }
  return ids;
}

function allDone(rt: ExpertParallel): Promise<boolean> {
  return Promise.race([rt.group.outcomes.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5_000).unref())]);
}

test('engine over 2 expert-parallel ranks: concurrent greedy requests equal the plain runner; a killed rank gives EngineFailedError, the rebuild starts new ranks', { timeout: 240_000 }, async () => {
  const plain = await Llm.load(OPTS);
  let want: number[][];
  try {
    want = await Promise.all(PROMPTS.map((p) => greedy(plain, p, 12)));
  } finally {
    await plain.close();
  }
  const started: ExpertParallel[] = [];
  const llm = await Llm.load({
    ...OPTS,
    routedExperts: async (dir) => {
      const rt = await ExpertParallel.start(dir, { ranks: 2, backend: 'wasm', timeoutMs: 1_500 });
      started.push(rt);
      return rt;
    },
  });
  try {
    assert.equal(started.length, 1);
    // Several requests at once: batched steps go through the EP executor (prefill and decode).
    const got = await Promise.all(PROMPTS.map((p) => greedy(llm, p, 12)));
    assert.deepEqual(got, want);
    assert.ok(started[0]!.stats.lowLatencySteps > 0);

    // Rank 1 dies while two requests are decoding: both fail with the engine's typed error.
    const first = started[0]!;
    let killed = false;
    const kill = () => { if (!killed) { killed = true; first.group.kill(1); } };
    const recovered = new Promise<void>((res) => llm.engine.onHealthChange((h) => { if (h === 'ok') res(); }));
    const results = await Promise.allSettled([greedy(llm, PROMPTS[0]!, 200, kill), greedy(llm, PROMPTS[1]!, 200)]);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.ok(r.reason instanceof EngineFailedError, String(r.reason));
      assert.equal(r.reason.cause.name, 'RankFailedError');
    }
    await recovered;
    // The failed runner's ranks are gone; the rebuilt runner started its own.
    assert.equal(started.length, 2);
    assert.equal(await allDone(first), true);
    assert.deepEqual(await Promise.all(PROMPTS.map((p) => greedy(llm, p, 12))), want);
  } finally {
    await llm.close();
  }
  for (const rt of started) assert.equal(await allDone(rt), true, 'every expert rank stopped after close()');
});
