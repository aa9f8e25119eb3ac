// Pipeline stages for DualPipe: the module interface the executor drives, and the Linear-GELU-Linear
// stage of DeepSeek's example (examples/example_dualpipe.py: bias-free Linear(H, 4H), GELU,
// Linear(4H, H), weight gradients deferrable through a WeightGradStore).
import { backward, linear, gelu, mseLoss, type Tensor, type FloatArray, type GeluApproximate, WeightGradStore } from '../../tensor/autograd/index.ts';

/** One pipeline stage: a differentiable function of one activation tensor. */
export interface StageModule {
  forward(x: Tensor): Tensor;
  /** Trainable leaves, in a fixed order (the order gradients are reported in). */
  parameters(): Tensor[];
}

export type Criterion = (output: Tensor, label: Tensor) => Tensor;

/**
 * The overlapped forward-backward hook (the reference's classmethod `overlapped_forward_backward`):
 * runs the forward of chunk 0 on m0 (and its loss when criterion0 is given) and the backward of chunk 1
 * on m1, either from loss1 or from outputs1 with their gradients outGrads1. A real implementation
 * interleaves the two so one chunk's compute hides the other's communication.
 */
export type OverlappedForwardBackward = (
  m0: StageModule, inputs0: Tensor, criterion0: Criterion | null, labels0: Tensor | null,
  m1: StageModule, loss1: Tensor | null, outputs1: Tensor | null, outGrads1: FloatArray | null,
) => { outputs0: Tensor; loss0: Tensor | null };

export const mseCriterion: Criterion = (output, label) => mseLoss(output, label);

export interface MlpStageParams {
  /** [4H, H] */
  w1: FloatArray;
  /** [H, 4H] */
  w2: FloatArray;
}

/** Linear(H→F, no bias) → GELU → Linear(F→H, no bias). */
export class MlpStage implements StageModule {
  readonly w1: Tensor;
  readonly w2: Tensor;

  constructor(
    w1: Tensor,
    w2: Tensor,
    readonly store: WeightGradStore | null = null,
    readonly approximate: GeluApproximate = 'none',
  ) {
    this.w1 = w1;
    this.w2 = w2;
  }

  forward(x: Tensor): Tensor {
    const opts = { store: this.store };
    return linear(gelu(linear(x, this.w1, null, opts), this.approximate), this.w2, null, opts);
  }

  parameters(): Tensor[] {
    return [this.w1, this.w2];
  }

  /** The example's hook: forward of chunk 0, then backward of chunk 1 (no real overlap on one thread). */
  static overlappedForwardBackward: OverlappedForwardBackward = (m0, inputs0, criterion0, labels0, m1, loss1, outputs1, outGrads1) => {
    void m1;
    const outputs0 = m0.forward(inputs0);
    const loss0 = criterion0 && labels0 ? criterion0(outputs0, labels0) : null;
    if (loss1) backward([loss1], [null]);
    else if (outputs1 && outGrads1) backward([outputs1], [outGrads1]);
    return { outputs0, loss0 };
  };
}
