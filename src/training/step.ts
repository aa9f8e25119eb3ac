// One optimizer step of DeepSeek-V3-style training on the autograd: forward of the batch, backward of
// the total loss, global-norm clipping, AdamW at the scheduled learning rate, then the
// auxiliary-loss-free bias step of every MoE layer from the batch's expert loads (arXiv 2412.19437
// §2.1.2: the bias moves after each step, it is not a gradient). The same function runs every step of a
// run, so a run is a deterministic function of (parameters, optimizer state, data, step).
import { backward } from '../tensor/autograd/index.ts';
import { isMoeLayer } from '../model/config.ts';
import type { TrainModel } from './model.ts';
import { clipGradNorm, learningRate, type AdamW, type ScheduleOptions } from './optim.ts';
import { updateRoutingBias } from './routing.ts';

export interface StepOptions {
  schedule: ScheduleOptions;
  /** Max global gradient norm (DeepSeek-V3: 1.0); 0 or Infinity: no clipping. */
  clip: number;
  /** Bias update speed γ (DeepSeek-V3: 0.001 for most of pre-training). */
  biasSpeed: number;
}

export interface StepStats {
  step: number;
  lr: number;
  loss: number;
  mainLoss: number;
  mtpLosses: number[];
  balanceLoss: number;
  /** Gradient norm before clipping. */
  gradNorm: number;
  tokens: number;
}

export function trainStep(model: TrainModel, opt: AdamW, windows: readonly Int32Array[], o: StepOptions): StepStats {
  const res = model.forward(windows);
  opt.zeroGrad();
  backward([res.loss], [null]);
  const gradNorm = clipGradNorm(opt.params, o.clip > 0 ? o.clip : Infinity);
  const step = opt.state.step + 1;
  const lr = learningRate(o.schedule, step);
  opt.step(lr);
  const c = model.config, p = model.params;
  for (const [l, load] of res.loads) {
    const moe = l < c.num_hidden_layers ? (isMoeLayer(c, l) ? p.layers[l]!.moe : undefined) : p.mtp[l - c.num_hidden_layers]!.block.moe;
    if (moe?.bias) updateRoutingBias(moe.bias.data, load, o.biasSpeed);
  }
  return {
    step, lr, loss: res.loss.item(), mainLoss: res.mainLoss, mtpLosses: res.mtpLosses, balanceLoss: res.balanceLoss, gradNorm,
    tokens: windows.reduce((a, w) => a + w.length - 1, 0),
  };
}
