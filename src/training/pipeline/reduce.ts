// Turns what the stages report for one optimizer step (per chunk: gradients, losses, balance terms,
// expert loads) into the step's gradients and numbers, in one fixed order whatever ran the chunks:
//   g_c   = Σ over the stages holding a parameter (stage order) of chunk c's gradient
//   grad  = (((g_0 + g_1) + g_2) + ...) · (1/C)          micro-batches in order, f32 adds
//   loss  = mean over chunks of (main + λ/D Σ_k MTP_k + Σ balance terms in layer order)
// Only the embedding (first stage; also the MTP module's, last stage) and a tied lm_head are held by
// two stages; with ≤ 2 contributions the sum is the same as the single-process backward's (a + b = b + a).
import type { FloatArray, Tensor } from '../../tensor/autograd/index.ts';
import type { ChunkGrads, ChunkStats } from './stage.ts';

export interface StepReport {
  /** Mean over chunks of each chunk's total objective. */
  loss: number;
  /** Mean main next-token cross-entropy. */
  mainLoss: number;
  /** Mean MTP cross-entropy per depth. */
  mtpLosses: number[];
  /** Mean balance loss (Σ over MoE layers). */
  balanceLoss: number;
  /** Expert loads summed over the step's chunks: layer → tokens per expert. */
  loads: Map<number, Int32Array>;
}

function addInto(dst: FloatArray, src: FloatArray): void {
  for (let i = 0; i < dst.length; i++) dst[i]! += src[i]!;
}

/** Sets `.grad` of each trainable tensor (null where no chunk reached it). */
export function reduceGradients(trainable: readonly Tensor[], parts: readonly ChunkGrads[], chunks: number): void {
  const total: Array<FloatArray | null> = trainable.map(() => null);
  for (let mb = 0; mb < chunks; mb++) {
    const contribs = parts.filter((p) => p.mb === mb).sort((a, b) => a.stage - b.stage);
    if (contribs.length === 0) throw new Error(`no gradients reported for micro-batch ${mb}`);
    const g = new Map<number, FloatArray>();
    for (const c of contribs) {
      for (const [i, d] of c.grads) {
        const prev = g.get(i);
        if (prev) addInto(prev, d);
        else g.set(i, d);
      }
    }
    for (const [i, d] of g) {
      const t = total[i];
      if (t) addInto(t, d);
      else total[i] = d;
    }
  }
  const inv = 1 / chunks;
  trainable.forEach((p, i) => {
    const t = total[i] ?? null;
    if (t) for (let j = 0; j < t.length; j++) t[j] = t[j]! * inv;
    p.grad = t;
  });
}

/** The step's losses and summed loads from the chunks' stats (see the file comment). */
export function reduceStats(stats: readonly (ChunkStats & { stage: number })[], chunks: number, mtpLambda: number, mtpDepth: number): StepReport {
  let loss = 0, main = 0, bal = 0;
  const mtp: number[] = [];
  const loads = new Map<number, Int32Array>();
  for (let mb = 0; mb < chunks; mb++) {
    const parts = stats.filter((s) => s.mb === mb).sort((a, b) => a.stage - b.stage);
    const last = parts.find((p) => p.mainLoss !== undefined);
    if (!last) throw new Error(`no loss reported for micro-batch ${mb}`);
    let b = 0;
    for (const p of parts) for (const v of p.balance) b += v;
    let m = 0;
    last.mtpLosses!.forEach((v, k) => { m += v; mtp[k] = (mtp[k] ?? 0) + v; });
    loss += last.mainLoss! + (mtpDepth > 0 ? (mtpLambda / mtpDepth) * m : 0) + b;
    main += last.mainLoss!;
    bal += b;
    for (const p of parts) {
      for (const [l, ld] of p.loads) {
        const acc = loads.get(l);
        if (acc) for (let e = 0; e < ld.length; e++) acc[e]! += ld[e]!;
        else loads.set(l, Int32Array.from(ld));
      }
    }
  }
  return { loss: loss / chunks, mainLoss: main / chunks, mtpLosses: mtp.map((v) => v / chunks), balanceLoss: bal / chunks, loads };
}
