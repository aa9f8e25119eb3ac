// A random Linear-GELU-Linear pipeline problem (DeepSeek's example_dualpipe.py shape), shared by the
// `seekd dualpipe --run` explorer and the dualpipe benchmark so both train the same thing.
import type { StageWeights } from './runtime.ts';

export interface MlpProblem {
  /** Per stage: w1 [4H, H], w2 [H, 4H], scaled by 1/sqrt(fan_in). */
  weights: StageWeights[];
  /** Inputs and labels for all chunks: [chunks * microBatch * seq, H]. */
  x: Float64Array;
  labels: Float64Array;
}

/** Deterministic (LCG from `seed`) uniform values in [-1, 1). */
export function randomMlpProblem(p: { stages: number; chunks: number; microBatch: number; seq: number; hidden: number; seed: number }): MlpProblem {
  const ffn = 4 * p.hidden;
  let s = p.seed >>> 0;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const weights: StageWeights[] = Array.from({ length: p.stages }, () => ({
    w1: Float64Array.from({ length: ffn * p.hidden }, () => rnd() / Math.sqrt(p.hidden)),
    w2: Float64Array.from({ length: ffn * p.hidden }, () => rnd() / Math.sqrt(ffn)),
  }));
  const n = p.chunks * p.microBatch * p.seq * p.hidden;
  const x = Float64Array.from({ length: n }, rnd);
  const labels = Float64Array.from({ length: n }, rnd);
  return { weights, x, labels };
}
