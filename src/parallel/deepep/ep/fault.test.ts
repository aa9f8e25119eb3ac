// A dead expert rank during expert-parallel generation: the model's thread (blocked in the synchronous
// forward pass) fails with RankFailedError instead of hanging — through the rank's status word when its
// exit was seen, through the timeout otherwise — and close() still releases everything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadBackend } from '../../../kernels/index.ts';
import { DeepseekModel } from '../../../model/deepseek.ts';
import { generate } from '../../../model/generate.ts';
import { REF_DIR } from '../../../../test/helpers.ts';
import { RankFailedError } from '../errors.ts';
import { ExpertParallel } from './runtime.ts';

const DIR = join(REF_DIR, 'tiny-v3-bf16');
const TIMEOUT_MS = 1_500;

for (const seen of [true, false]) {
  test(`an expert rank killed ${seen ? 'before' : 'while'} generating: RankFailedError (${seen ? 'exited' : 'timeout'})`, { timeout: 60_000 }, async () => {
    const kernels = await loadBackend('ref');
    const rt = await ExpertParallel.start(DIR, { ranks: 4, timeoutMs: TIMEOUT_MS });
    try {
      const model = await DeepseekModel.load(DIR, kernels, { moe: rt.factory, mtp: false });
      const exited = new Promise((res) => rt.group.once('outcome', res));
      rt.group.kill(2);
      // With `seen`, the launcher handles the exit first (status word set); otherwise this thread blocks
      // in the forward pass before the exit event can run, and only the timeout can tell.
      if (seen) await exited;
      const t0 = Date.now();
      let err: unknown = null;
      try {
        generate(model, [1, 2, 3], { maxTokens: 2 });
      } catch (e) {
        err = e;
      }
      const elapsed = Date.now() - t0;
      assert.ok(err instanceof RankFailedError, String(err));
      assert.equal(err.rank, 2);
      assert.equal(err.reason, seen ? 'exited' : 'timeout');
      assert.ok(elapsed < TIMEOUT_MS + 2_000, `failed after ${elapsed} ms`);
      model.close();
    } finally {
      const t1 = Date.now();
      await rt.close();
      assert.ok(Date.now() - t1 < TIMEOUT_MS + 3_000, 'close() is bounded');
      await kernels.dispose();
    }
  });
}
