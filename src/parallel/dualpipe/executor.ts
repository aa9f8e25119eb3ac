// Executes one rank's DualPipe / DualPipeV instruction list (schedule.ts) on its two stage modules.
// Reference: https://github.com/deepseek-ai/DualPipe/blob/main/dualpipe/dualpipe.py (the _*_chunk,
// _recv_*/_send_* and _commit_and_wait_comm methods) and dualpipe/dualpipev.py.
//
// Bookkeeping per module m mirrors the reference: input chunks (leaf tensors whose .grad becomes the
// input gradient), output chunks (kept for backward), output-gradient chunks (received), input-gradient
// chunks (to send), loss chunks, and per-module counters. Sends are queued and posted at the next
// "wait" together with the queued receives, which the rank then waits for.
import { Tensor, backward, noGrad, type FloatArray, type FloatArrayCtor, WeightGradStore } from '../../tensor/autograd/index.ts';
import type { Tracer } from '../../platform/tracer.ts';
import type { P2P } from './comm.ts';
import { PipelineRankError } from './errors.ts';
import { isFirstStage, isLastStage, isTurnaround, rankSchedule, type Instr, type Mod, type ScheduleShape } from './schedule.ts';
import type { Criterion, OverlappedForwardBackward, StageModule } from './stage.ts';

export interface ExecutorOptions {
  shape: ScheduleShape;
  rank: number;
  modules: [StageModule, StageModule];
  store: WeightGradStore;
  p2p: P2P;
  ctor: FloatArrayCtor;
  /** Shape of every tensor exchanged between ranks (the reference's set_p2p_tensor_shapes). */
  p2pShape: readonly number[];
  criterion: Criterion | null;
  /** The overlapped F&B hook; when absent FB blocks run forward then backward. */
  overlapped?: OverlappedForwardBackward | null;
  /** Compute spans go through this tracer (track "compute"), waits on a "communication" track. */
  tracer?: { compute: Tracer; comm: Tracer } | null;
}

export interface StepInput {
  /** Micro-batches entering this rank's first-stage module (if any), in order. */
  inputs?: Tensor[];
  /** Labels for this rank's last-stage module (if any), in order. */
  labels?: Tensor[];
  forwardOnly?: boolean;
  returnOutputs?: boolean;
}

export interface StepOutput {
  /** Loss of each chunk this rank computed (last-stage module), in chunk order; null when none. */
  losses: number[] | null;
  /** Outputs of the last-stage module, when returnOutputs. */
  outputs: FloatArray[] | null;
}

type Slot<T> = Array<T | null>;

export class RankExecutor {
  private readonly o: ExecutorOptions;

  constructor(opts: ExecutorOptions) {
    this.o = opts;
  }

  async step(input: StepInput): Promise<StepOutput> {
    const { shape, rank, modules, store, p2p, ctor, criterion } = this.o;
    const forwardOnly = input.forwardOnly ?? false;
    const returnOutputs = input.returnOutputs ?? false;
    const schedule = rankSchedule(shape, rank, forwardOnly);
    const trace = this.o.tracer ?? null;
    const span = <T>(name: string, fn: () => T, args?: Record<string, unknown>): T => (trace ? trace.compute.span(name, 'compute', fn, args) : fn());

    store.clear();
    const inputChunks: [Slot<Tensor>, Slot<Tensor>] = [[], []];
    const outputChunks: [Slot<Tensor>, Slot<Tensor>] = [[], []];
    const outputGradChunks: [Slot<FloatArray>, Slot<FloatArray>] = [[], []];
    const inputGradChunks: [Slot<FloatArray>, Slot<FloatArray>] = [[], []];
    const labels: [Tensor[], Tensor[]] = [[], []];
    const lossChunks: Tensor[] = [];
    const fChunk = [0, 0];
    const bChunk = [0, 0];
    const sendFChunk = [0, 0];
    const sendBChunk = [0, 0];
    const chunkOfRecvF = [0, 0];
    const chunkOfRecvB = [0, 0];

    for (const m of [0, 1] as Mod[]) {
      if (isFirstStage(shape, rank, m)) {
        if (!input.inputs) throw new PipelineRankError(`module ${m} is a first stage and needs inputs`, rank);
        for (const x of input.inputs) inputChunks[m].push(x.detach(!forwardOnly));
      }
      if (isLastStage(shape, rank, m) && criterion) {
        if (!input.labels) throw new PipelineRankError(`module ${m} is a last stage and needs labels`, rank);
        labels[m] = input.labels;
      }
    }
    const needed = (m: Mod) => (shape.kind === 'dualpipe' ? shape.numChunks / 2 : shape.numChunks) * (isFirstStage(shape, rank, m) ? 1 : 0);
    for (const m of [0, 1] as Mod[]) {
      if (inputChunks[m].length !== needed(m)) throw new PipelineRankError(`module ${m} got ${inputChunks[m].length} input chunks, the schedule needs ${needed(m)}`, rank);
    }

    let pendingSends: Array<{ peer: number; tag: string; chunk: number; data: FloatArray; shape: number[] }> = [];
    let pendingRecvs: Array<Promise<void>> = [];
    let pendingDesc: string[] = [];

    const take = <T>(list: Slot<T>, i: number, what: string): T => {
      const v = list[i];
      if (v === null || v === undefined) throw new PipelineRankError(`missing ${what} for chunk ${i}`, rank);
      return v;
    };

    const forwardCompute = (m: Mod) => {
      const chunk = fChunk[m]!++;
      const x = take(inputChunks[m], chunk, `module ${m} input`);
      if (forwardOnly) inputChunks[m][chunk] = null;
      const last = isLastStage(shape, rank, m);
      span(`F${m}`, () => {
        const out = forwardOnly ? noGrad(() => modules[m].forward(x)) : modules[m].forward(x);
        if (last && criterion) lossChunks.push(forwardOnly ? noGrad(() => criterion(out, labels[m][chunk]!)) : criterion(out, labels[m][chunk]!));
        if (isTurnaround(shape, rank) && m === 0) inputChunks[1].push(out.detach(!forwardOnly));
        if (!last || returnOutputs) outputChunks[m].push(out);
      }, { chunk });
    };

    const finishBackward = (m: Mod, chunk: number) => {
      const x = take(inputChunks[m], chunk, `module ${m} input`);
      inputChunks[m][chunk] = null;
      const g = x.grad;
      if (!g) throw new PipelineRankError(`module ${m} chunk ${chunk}: input got no gradient`, rank);
      if (isTurnaround(shape, rank) && m === 1) outputGradChunks[0].push(g);
      else inputGradChunks[m].push(g);
    };

    const backwardCompute = (m: Mod, zb: boolean) => {
      const chunk = bChunk[m]!++;
      span(zb ? `B${m} (zb)` : `B${m}`, () => {
        store.enabled = zb;
        if (isLastStage(shape, rank, m)) {
          backward([take(lossChunks, chunk, 'loss')], [null]);
        } else {
          const out = take(outputChunks[m], chunk, `module ${m} output`);
          if (!returnOutputs) outputChunks[m][chunk] = null;
          const g = take(outputGradChunks[m], chunk, `module ${m} output gradient`);
          outputGradChunks[m][chunk] = null;
          backward([out], [g]);
        }
        store.enabled = false;
        if (zb) store.flush();
        finishBackward(m, chunk);
      }, { chunk });
    };

    const forwardBackwardCompute = (fm: Mod, bm: Mod) => {
      const overlapped = this.o.overlapped;
      if (!overlapped) {
        forwardCompute(fm);
        backwardCompute(bm, false);
        return;
      }
      const c0 = fChunk[fm]!++;
      const x0 = take(inputChunks[fm], c0, `module ${fm} input`);
      const last0 = isLastStage(shape, rank, fm);
      const crit0 = last0 && criterion ? criterion : null;
      const labels0 = crit0 ? labels[fm][c0]! : null;
      const c1 = bChunk[bm]!++;
      let loss1: Tensor | null = null;
      let out1: Tensor | null = null;
      let g1: FloatArray | null = null;
      if (isLastStage(shape, rank, bm)) loss1 = take(lossChunks, c1, 'loss');
      else {
        out1 = take(outputChunks[bm], c1, `module ${bm} output`);
        if (!returnOutputs) outputChunks[bm][c1] = null;
        g1 = take(outputGradChunks[bm], c1, `module ${bm} output gradient`);
        outputGradChunks[bm][c1] = null;
      }
      span(`F${fm}&B${bm}`, () => {
        const { outputs0, loss0 } = overlapped(modules[fm], x0, crit0, labels0, modules[bm], loss1, out1, g1);
        if (isTurnaround(shape, rank) && fm === 0) inputChunks[1].push(outputs0.detach(true));
        if (!last0 || returnOutputs) outputChunks[fm].push(outputs0);
        if (last0 && crit0) {
          if (!loss0) throw new PipelineRankError('overlapped hook returned no loss for a last stage', rank);
          lossChunks.push(loss0);
        }
        finishBackward(bm, c1);
      }, { fchunk: c0, bchunk: c1 });
    };

    const p2pSize = this.o.p2pShape.reduce((a, b) => a * b, 1);
    const checkMsg = (data: FloatArray, shp: number[]) => {
      if (data.length !== p2pSize || shp.length !== this.o.p2pShape.length || !(data instanceof ctor)) {
        throw new PipelineRankError(`received a tensor of shape [${shp.join(', ')}], expected [${this.o.p2pShape.join(', ')}] ${ctor.name}`, rank);
      }
    };

    const exec = async (ins: Instr) => {
      switch (ins.op) {
        case 'recvF': {
          const m = ins.mod;
          const idx = inputChunks[m].length;
          inputChunks[m].push(null);
          const chunk = chunkOfRecvF[m]!++;
          pendingDesc.push(`recv F${m}#${chunk}<-${ins.peer}`);
          pendingRecvs.push(p2p.recv(ins.peer, `F${m}`).then((msg) => {
            checkMsg(msg.data, msg.shape);
            if (msg.chunk !== chunk) throw new PipelineRankError(`expected activation chunk ${chunk} of module ${m}, got ${msg.chunk}`, rank);
            inputChunks[m][idx] = new Tensor(msg.data, msg.shape, !forwardOnly);
          }));
          return;
        }
        case 'recvB': {
          const m = ins.mod;
          const idx = outputGradChunks[m].length;
          outputGradChunks[m].push(null);
          const chunk = chunkOfRecvB[m]!++;
          pendingDesc.push(`recv B${m}#${chunk}<-${ins.peer}`);
          pendingRecvs.push(p2p.recv(ins.peer, `B${m}`).then((msg) => {
            checkMsg(msg.data, msg.shape);
            if (msg.chunk !== chunk) throw new PipelineRankError(`expected gradient chunk ${chunk} of module ${m}, got ${msg.chunk}`, rank);
            outputGradChunks[m][idx] = msg.data;
          }));
          return;
        }
        case 'sendF': {
          const m = ins.mod;
          const chunk = sendFChunk[m]!++;
          const t = take(outputChunks[m], chunk, `module ${m} output to send`);
          pendingSends.push({ peer: ins.peer, tag: `F${m}`, chunk, data: new ctor(t.data), shape: [...t.shape] });
          return;
        }
        case 'sendB': {
          const m = ins.mod;
          const chunk = sendBChunk[m]!++;
          const g = take(inputGradChunks[m], chunk, `module ${m} input gradient to send`);
          inputGradChunks[m][chunk] = null;
          pendingSends.push({ peer: ins.peer, tag: `B${m}`, chunk, data: new ctor(g), shape: [...this.o.p2pShape] });
          return;
        }
        case 'wait': {
          if (pendingSends.length === 0 && pendingRecvs.length === 0) return;
          const sends = pendingSends;
          const recvs = pendingRecvs;
          const desc = [...sends.map((s) => `send ${s.tag}#${s.chunk}->${s.peer}`), ...pendingDesc];
          pendingSends = [];
          pendingRecvs = [];
          pendingDesc = [];
          const run = async () => {
            for (const s of sends) p2p.send(s.peer, { tag: s.tag, chunk: s.chunk, shape: s.shape, data: s.data });
            await Promise.all(recvs);
          };
          await (trace ? trace.comm.span('p2p wait', 'comm', run, { ops: desc }) : run());
          return;
        }
        case 'F':
          forwardCompute(ins.mod);
          return;
        case 'B':
          backwardCompute(ins.mod, ins.zb);
          return;
        case 'FB':
          forwardBackwardCompute(ins.fmod, ins.bmod);
          return;
        case 'W':
          span('W', () => store.pop());
          return;
      }
    };

    for (const ins of schedule) await exec(ins);
    if (!forwardOnly && store.size !== 0) throw new PipelineRankError(`${store.size} deferred weight-gradient groups left`, rank);

    const lossModule = ([0, 1] as Mod[]).find((m) => isLastStage(shape, rank, m));
    const losses = lossModule !== undefined && criterion ? lossChunks.map((l) => l.item()) : null;
    const outputs = lossModule !== undefined && returnOutputs ? outputChunks[lossModule].map((t) => take([t], 0, 'output').data) : null;
    return { losses, outputs };
  }
}
