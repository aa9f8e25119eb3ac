// The 1F1B schedule (PipeDream-Flush / Megatron's non-interleaved schedule) for the training stages:
// rank r holds stage r; it runs min(S − r − 1, C) warm-up forwards, then one forward and one backward
// per micro-batch, then the cool-down backwards. Activations go to rank r + 1 and gradients to r − 1
// over the same tagged channels as DualPipe (parallel/dualpipe/comm.ts). The instruction order is
// the simulator's (parallel/dualpipe/simulate.ts oneFOneB), so its closed-form bubble (S − 1)(F + B)
// applies. Reference: Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters
// Using Megatron-LM" (2021), §2.2.1.
import { backward, Tensor, type FloatArray } from '../../tensor/autograd/index.ts';
import type { Tracer } from '../../platform/tracer.ts';
import type { P2P } from '../../parallel/dualpipe/comm.ts';
import type { Criterion, StageModule } from '../../parallel/dualpipe/stage.ts';

export interface OneFOneBOptions {
  rank: number;
  numRanks: number;
  module: StageModule;
  p2p: P2P;
  /** Shape of the activations / gradients exchanged: [T, H]. */
  p2pShape: readonly number[];
  criterion: Criterion;
  tracer?: Tracer | null;
}

/** Runs one training step of `inputs.length` (first rank) / `labels.length` (last rank) micro-batches. */
export async function oneFOneBStep(o: OneFOneBOptions, chunks: number, inputs: Tensor[] | null, labels: Tensor[] | null): Promise<void> {
  const { rank, numRanks: S, module, p2p } = o;
  const first = rank === 0, last = rank === S - 1;
  if (first && inputs?.length !== chunks) throw new Error(`rank ${rank}: needs ${chunks} input micro-batches`);
  if (last && labels?.length !== chunks) throw new Error(`rank ${rank}: needs ${chunks} label micro-batches`);
  const span = <T>(name: string, fn: () => T, args: Record<string, unknown>): T => (o.tracer ? o.tracer.span(name, 'compute', fn, args) : fn());
  const ins: Tensor[] = [];
  const outs: Tensor[] = [];
  let f = 0, b = 0;
  const F = async () => {
    const c = f++;
    let x: Tensor;
    if (first) x = inputs![c]!.detach(true);
    else {
      const m = await p2p.recv(rank - 1, 'F0');
      if (m.chunk !== c) throw new Error(`rank ${rank}: expected activation chunk ${c}, got ${m.chunk}`);
      x = new Tensor(m.data, m.shape, true);
    }
    ins[c] = x;
    span('F0', () => {
      const y = module.forward(x);
      outs[c] = last ? o.criterion(y, labels![c]!) : y;
    }, { chunk: c });
    if (!last) p2p.send(rank + 1, { tag: 'F0', chunk: c, shape: [...o.p2pShape], data: new Float32Array(outs[c]!.data) });
  };
  const B = async () => {
    const c = b++;
    let g: FloatArray | null = null;
    if (!last) {
      const m = await p2p.recv(rank + 1, 'B0');
      if (m.chunk !== c) throw new Error(`rank ${rank}: expected gradient chunk ${c}, got ${m.chunk}`);
      g = m.data;
    }
    span('B0', () => backward([outs[c]!], [g]), { chunk: c });
    const x = ins[c]!;
    if (!x.grad) throw new Error(`rank ${rank}: chunk ${c} input got no gradient`);
    if (!first) p2p.send(rank - 1, { tag: 'B0', chunk: c, shape: [...o.p2pShape], data: new Float32Array(x.grad) });
    delete ins[c];
    delete outs[c];
  };
  const warm = Math.min(S - rank - 1, chunks);
  for (let i = 0; i < warm; i++) await F();
  for (let i = warm; i < chunks; i++) { await F(); await B(); }
  for (let i = 0; i < warm; i++) await B();
}
