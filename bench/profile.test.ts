// bench/profile.ts on the tiny reference checkpoint: rows of the documented shape, FLOPs counted per
// product call (their sum must equal 2 × active matmul parameters per prompt token plus the lm_head's last
// position, bench forward's model FLOPs without attention), rates over the probed peak, FlashMLA timed in
// every profile of the process, and "other" never below zero (the untimed 1-token prefill before the decode steps once leaked into the prefill's ops).
// No timing is asserted.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import profileBench from './profile.ts';
import { loadBackend } from '../src/kernels/index.ts';
import { DeepseekModel } from '../src/model/deepseek.ts';
import { weightTraffic } from './forward.ts';

const TINY = '/work/shared/testdata/deepseek-ref/tiny-v3-bf16';

for (const prompt of [8, 96]) {
  it(`tiny-v3, ${prompt}-token prefill (${prompt < 64 ? 'absorbed' : 'decompressed'} attention): product FLOPs, rates, other >= 0`, async () => {
    const r = await profileBench(['--model', TINY, '--threads', '1', '--prompt', String(prompt), '--decode', '2', '--reps', '1']);
    const k = await loadBackend('ref');
    const m = await DeepseekModel.load(TINY, k, { mtp: false });
    const t = weightTraffic(m.weights, m.config);
    m.close();
    await k.dispose();
    const want = (2 * t.bodyMatmulParams * prompt + 2 * t.lmHeadParams) / 1e9;
    const got = r.baseline.prefill_products_GFLOP as number;
    assert.ok(Math.abs(got / want - 1) < 1e-9, `products ${got} GFLOP, want ${want}`);
    assert.ok((r.baseline.prefill_model_GFLOP as number) > got, 'model FLOPs add attention');
    const peaks = String(r.baseline.gemm_paired_GFLOPs).split(',').map(Number);
    assert.equal(peaks.length, 1);
    const rates = r.rows.filter((x) => x.metric === 'prefill rate');
    assert.ok(rates.length >= 5 && rates.some((x) => / matmul /.test(x.case)) && rates.some((x) => /groupedMatmul/.test(x.case)), JSON.stringify(rates.map((x) => x.case)));
    for (const x of rates) {
      assert.equal(x.unit, 'GFLOP/s');
      assert.ok(x.value > 0 && Number.isFinite(x.value), JSON.stringify(x));
      assert.ok(x.ratio !== null && x.ratio > 0 && Number.isFinite(x.ratio), JSON.stringify(x));
      // One run: the ratio is its rate over the pair mean of the probes before and after it (listed, 0.01).
      assert.ok(Math.abs((x.ratio! * peaks[0]!) / x.value - 1) < 0.01 / peaks[0]! + 1e-9, `${x.case}: ratio ${x.ratio}, value ${x.value}, peak ${peaks[0]}`);
    }
    // FlashMLA's wrapper is installed once per process; each profile must still see its own calls.
    assert.ok(r.rows.some((x) => x.metric === 'prefill' && x.case.endsWith(' flashMla') && x.value > 0), 'prefill flashMla time recorded');
    for (const metric of ['prefill', 'decode']) {
      const other = r.rows.find((x) => x.metric === metric && x.case.endsWith('other (outside ops)'));
      assert.ok(other && other.value >= 0, JSON.stringify(other));
    }
  });
}
