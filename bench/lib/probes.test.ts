// The paired-ratio probes (bench forward): they can be measured again and again (the copy workers' barrier
// keeps counting across calls), and a copy worker that dies makes the next call fail instead of hanging or
// crashing the process. No timing is asserted.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { CopyProbe } from './bandwidth.ts';
import { GemmProbe } from './gemm-peak.ts';

for (const threads of [1, 2]) {
  it(`CopyProbe, ${threads} thread(s): repeated measurements, each a positive bandwidth`, async () => {
    const p = await CopyProbe.create(threads, 8 << 20);
    try {
      for (let i = 0; i < 3; i++) {
        const m = await p.measure(2);
        assert.ok(m.median > 0 && Number.isFinite(m.median) && m.best >= m.median, JSON.stringify(m));
      }
    } finally {
      await p.close();
    }
  });
}

it('CopyProbe: a worker that exits fails the next measurement with a clear error', async () => {
  const p = await CopyProbe.create(2, 8 << 20);
  try {
    await p.measure(1);
    const workers = (p as unknown as { workers: Array<{ terminate(): Promise<number> }> }).workers;
    await workers[0]!.terminate();
    await assert.rejects(p.measure(1), /copy probe worker exited/);
  } finally {
    await p.close();
  }
});

it('GemmProbe: repeated measurements at a small shape', async () => {
  const p = await GemmProbe.create(1, { m: 16, n: 64, k: 128 });
  try {
    for (let i = 0; i < 2; i++) {
      const m = p.measure(2);
      assert.ok(m.gflops > 0 && m.best >= m.gflops && (m.kind === 'f32' || m.kind === 'bf16'), JSON.stringify(m));
    }
  } finally {
    await p.close();
  }
});
