// The single-process reference for DualPipe checks: a plain loop over micro-batches through all stages
// (example_dualpipe.py's ref_step), accumulating gradients into the stages' parameters.
import { backward, noGrad, Tensor, type FloatArray } from '../../tensor/autograd/index.ts';
import type { Criterion, StageModule } from './stage.ts';

export function referenceStep(
  stages: StageModule[], x: FloatArray, labels: FloatArray, numChunks: number, mbShape: number[], criterion: Criterion,
  opts: { forwardOnly?: boolean } = {},
): { losses: number[]; outputs: FloatArray[] } {
  const n = mbShape.reduce((a, b) => a * b, 1);
  const ctor = x.constructor as Float64ArrayConstructor;
  const losses: number[] = [];
  const outputs: FloatArray[] = [];
  for (let i = 0; i < numChunks; i++) {
    const run = () => {
      let h = new Tensor(new ctor(x.buffer, x.byteOffset + i * n * ctor.BYTES_PER_ELEMENT, n), mbShape);
      for (const s of stages) h = s.forward(h);
      const loss = criterion(h, new Tensor(new ctor(labels.buffer, labels.byteOffset + i * n * ctor.BYTES_PER_ELEMENT, n), mbShape));
      return { h, loss };
    };
    const { h, loss } = opts.forwardOnly ? noGrad(run) : run();
    if (!opts.forwardOnly) backward([loss], [null]);
    losses.push(loss.item());
    outputs.push(h.data);
  }
  return { losses, outputs };
}
