// `seekd quantize` end to end: the written directory scores like `--quantize fp8` on the BF16 original,
// the JSON and human summaries, and one-line errors (exit code 2) for an existing output and FP8 input.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REF_DIR, seekd } from '../../../test/helpers.ts';

const BF16 = join(REF_DIR, 'tiny-v3-bf16');
const FP8 = join(REF_DIR, 'tiny-v3-fp8');

describe('seekd quantize', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'seekd-quantize-cli-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('--json: one summary object; the output scores as --quantize fp8 does on the original', async () => {
    const out = join(dir, 'fp8');
    const r = await seekd(['quantize', '--model', BF16, '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '', 'no progress output with --json');
    const s = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(s.tensors, 207);
    assert.equal(s.quantized, 176);
    assert.equal(s.bytesIn, statSync(join(BF16, 'model.safetensors')).size);
    assert.equal(s.bytesOut, statSync(join(out, 'model.safetensors')).size);
    assert.equal(typeof s.seconds, 'number');
    const ids = '3,141,59,265';
    const [a, b] = await Promise.all([
      seekd(['score', '--model', out, '--backend', 'ref', '--ids', ids, '--json']),
      seekd(['score', '--model', BF16, '--quantize', 'fp8', '--backend', 'ref', '--ids', ids, '--json']),
    ]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    const la = (JSON.parse(a.stdout) as { logits: number[] }).logits;
    assert.equal(la.length, 512);
    assert.deepEqual(la, (JSON.parse(b.stdout) as { logits: number[] }).logits);
  });

  it('refuses an existing --out without --force (exit 2, one line); --force replaces it with a human summary', async () => {
    const out = join(dir, 'fp8');
    const r = await seekd(['quantize', '--model', BF16, '--out', out]);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^seekd: QuantizeCheckpointError: .*already exists.*--force.*\(output-exists\)\n$/);
    const f = await seekd(['quantize', '--model', BF16, '--out', out, '--force']);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /: 176 of 207 tensors quantized to FP8, 8\.8 MB -> 5\.1 MB in \d+\.\d\d s\n$/);
  });

  it('refuses an FP8 input (exit 2, one line naming the tensor)', async () => {
    const r = await seekd(['quantize', '--model', FP8, '--out', join(dir, 'again')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^seekd: QuantizeCheckpointError: .*"model\.layers\..*" is F8_E4M3: the input is already quantized.*\(already-fp8\)\n$/);
  });
});
