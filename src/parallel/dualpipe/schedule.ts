// The DualPipe and DualPipeV schedules as per-rank instruction lists.
// Reference: https://github.com/deepseek-ai/DualPipe/blob/main/dualpipe/dualpipe.py (DualPipe.step) and
// dualpipe/dualpipev.py (DualPipeV.step), commit 3da1bbe.
//
// One port of the reference's step() control flow produces, for each rank, the exact sequence of
// receives, sends, communication waits and compute blocks the reference issues. The runtime (runtime.ts)
// executes these lists on worker threads; the explorer (simulate.ts) times them.
//
// Modules: each rank holds two pipeline stages, module 0 and module 1.
//   DualPipe  (PP ranks):   module 0 = stage r, module 1 = stage PP−1−r. Module 0 runs the "forward
//     direction" (data enters at rank 0), module 1 the reverse direction (data enters at rank PP−1).
//   DualPipeV (PP/2 ranks = n): module 0 = stage r, module 1 = stage 2n−1−r. Data enters at rank 0,
//     goes down through module 0 to rank n−1, turns around locally into module 1 and comes back up;
//     the loss is computed on rank 0.
// In both, module m sends activations towards rank+1 when m = 0 and rank−1 when m = 1; gradients go the
// other way. (In the reference, DualPipe's "phase" is XORed with "rank in second half" to give m.)
import { PipelineConfigError } from './errors.ts';

export type PipeKind = 'dualpipe' | 'dualpipev';
export type Mod = 0 | 1;

export type Instr =
  | { op: 'recvF'; mod: Mod; peer: number } // receive an activation for module `mod`'s next forward
  | { op: 'recvB'; mod: Mod; peer: number } // receive a gradient of module `mod`'s next backward output
  | { op: 'sendF'; mod: Mod; peer: number } // send module `mod`'s oldest unsent forward output
  | { op: 'sendB'; mod: Mod; peer: number } // send module `mod`'s oldest unsent input gradient
  | { op: 'wait' } // commit queued sends and receives, wait for all of them (batch_isend_irecv + wait)
  | { op: 'F'; mod: Mod } // forward of the next chunk of module `mod` (+ loss on the last stage)
  | { op: 'B'; mod: Mod; zb: boolean } // backward; zb: weight gradients deferred to a later W
  | { op: 'FB'; fmod: Mod; bmod: Mod } // overlapped forward of fmod and backward of bmod
  | { op: 'W' }; // run the oldest group of deferred weight gradients

export interface ScheduleShape {
  kind: PipeKind;
  /** Ranks (devices): PP for DualPipe, PP/2 for DualPipeV. */
  numRanks: number;
  /** Micro-batches per step (all of them, both directions). */
  numChunks: number;
}

/** Number of pipeline stages the schedule runs (both kinds: 2 per rank in total across mirror copies). */
export function numStages(s: ScheduleShape): number {
  return s.kind === 'dualpipe' ? s.numRanks : 2 * s.numRanks;
}

/** Refuses configurations the reference asserts against. */
export function checkSchedule(s: ScheduleShape): void {
  const { kind, numRanks, numChunks } = s;
  if (!Number.isInteger(numRanks) || numRanks < 1) throw new PipelineConfigError(`number of ranks must be a positive integer, got ${numRanks}`, 'numRanks', numRanks);
  if (!Number.isInteger(numChunks) || numChunks < 1) throw new PipelineConfigError(`number of chunks must be a positive integer, got ${numChunks}`, 'numChunks', numChunks);
  if (kind === 'dualpipe') {
    if (numRanks % 2 !== 0) throw new PipelineConfigError(`DualPipe needs an even number of ranks (PP), got ${numRanks}`, 'numRanks', numRanks);
    if (numChunks % 2 !== 0) throw new PipelineConfigError(`DualPipe needs an even number of chunks, got ${numChunks}`, 'numChunks', numChunks);
  }
  if (numChunks < 2 * numRanks) throw new PipelineConfigError(`${kind === 'dualpipe' ? 'DualPipe' : 'DualPipeV'} needs at least 2×ranks = ${2 * numRanks} chunks, got ${numChunks}`, 'numChunks', numChunks);
}

/** Which stage module `mod` of `rank` is. */
export function stageOf(s: ScheduleShape, rank: number, mod: Mod): number {
  if (mod === 0) return rank;
  return s.kind === 'dualpipe' ? s.numRanks - 1 - rank : 2 * s.numRanks - 1 - rank;
}

/** True when module `mod` of `rank` is the first pipeline stage of its data (takes the step's inputs). */
export function isFirstStage(s: ScheduleShape, rank: number, mod: Mod): boolean {
  const first = rank === 0;
  const last = rank === s.numRanks - 1;
  return s.kind === 'dualpipe' ? (first && mod === 0) || (last && mod === 1) : first && mod === 0;
}

/** True when module `mod` of `rank` is the last stage of its data (computes the loss). */
export function isLastStage(s: ScheduleShape, rank: number, mod: Mod): boolean {
  const first = rank === 0;
  const last = rank === s.numRanks - 1;
  return s.kind === 'dualpipe' ? (first && mod === 1) || (last && mod === 0) : first && mod === 1;
}

/** DualPipeV's last rank hands module 0's outputs to module 1 locally (and gradients back). */
export function isTurnaround(s: ScheduleShape, rank: number): boolean {
  return s.kind === 'dualpipev' && rank === s.numRanks - 1;
}

/** The instruction list of one rank; forwardOnly gives the no-grad (inference) step. */
export function rankSchedule(s: ScheduleShape, rank: number, forwardOnly = false): Instr[] {
  checkSchedule(s);
  const { kind, numRanks } = s;
  const out: Instr[] = [];
  const dual = kind === 'dualpipe';
  const secondHalf = dual && rank >= numRanks / 2;
  // DualPipe: h = min(r, PP−1−r), H = PP/2, C = chunks/2; DualPipeV: h = r, H = ranks, C = chunks.
  const H = dual ? numRanks / 2 : numRanks;
  const h = dual ? Math.min(rank, numRanks - 1 - rank) : rank;
  const C = dual ? s.numChunks / 2 : s.numChunks;
  const middle = dual ? rank === numRanks / 2 - 1 || rank === numRanks / 2 : rank === numRanks - 1;
  const mod = (phase: number): Mod => ((phase ^ (secondHalf ? 1 : 0)) as Mod);
  const towards = (m: Mod, data: boolean) => (m === 0) === data ? rank + 1 : rank - 1;

  const recvForward = (p: number) => {
    const m = mod(p);
    // DualPipeV's last rank feeds module 1 from its own module 0.
    if (isFirstStage(s, rank, m) || (isTurnaround(s, rank) && m === 1)) return;
    out.push({ op: 'recvF', mod: m, peer: towards(m, false) });
  };
  const sendForward = (p: number) => {
    const m = mod(p);
    if (isLastStage(s, rank, m) || (isTurnaround(s, rank) && m === 0)) return;
    out.push({ op: 'sendF', mod: m, peer: towards(m, true) });
  };
  const recvBackward = (p: number) => {
    if (forwardOnly) return;
    const m = mod(p);
    if (isLastStage(s, rank, m) || (isTurnaround(s, rank) && m === 0)) return;
    out.push({ op: 'recvB', mod: m, peer: towards(m, true) });
  };
  const sendBackward = (p: number) => {
    if (forwardOnly) return;
    const m = mod(p);
    if (isFirstStage(s, rank, m) || (isTurnaround(s, rank) && m === 1)) return;
    out.push({ op: 'sendB', mod: m, peer: towards(m, false) });
  };
  const wait = () => out.push({ op: 'wait' });
  const forwardChunk = (p: number, recv = true, send = true) => {
    if (recv) recvForward(p);
    wait();
    out.push({ op: 'F', mod: mod(p) });
    if (send) sendForward(p);
  };
  const backwardChunk = (p: number, zb = false, recv = true, send = true) => {
    if (recv) recvBackward(p);
    wait();
    if (!forwardOnly) out.push({ op: 'B', mod: mod(p), zb });
    if (send) sendBackward(p);
  };
  const forwardBackwardChunk = (p0: number, p1: number, recv0 = true) => {
    if (recv0) recvForward(p0);
    recvBackward(p1);
    wait();
    out.push(forwardOnly ? { op: 'F', mod: mod(p0) } : { op: 'FB', fmod: mod(p0), bmod: mod(p1) });
    sendForward(p0);
    sendBackward(p1);
  };
  const weightChunk = () => {
    if (forwardOnly) return;
    wait();
    out.push({ op: 'W' });
  };

  // Step 1: nF0
  for (let i = 0; i < 2 * (H - h - 1); i++) forwardChunk(0);
  // Step 2: nF0F1
  const step2 = h + 1;
  recvForward(0);
  for (let i = 0; i < step2; i++) {
    forwardChunk(0, false, middle);
    recvForward(0);
    forwardChunk(1, true, !middle || i < step2 - 1);
    if (!middle) sendForward(0);
  }
  // Step 3: nB1W1F1 (zero bubble)
  for (let i = 0; i < H - h - 1; i++) {
    backwardChunk(1, true);
    recvForward(1);
    weightChunk();
    forwardChunk(1, false);
  }
  // Step 4 (main): nF0B1F1B0
  const step4 = C - 2 * H + h + 1;
  for (let i = 0; i < step4; i++) {
    if (i === 0) {
      if (middle) {
        // The reference does not overlap these two chunks, to shrink the bubble.
        forwardChunk(0, false, false);
        sendForward(1);
        backwardChunk(1, false, true, false);
        sendForward(0);
        sendBackward(1);
      } else {
        forwardBackwardChunk(0, 1, false);
      }
    } else {
      forwardBackwardChunk(0, 1);
    }
    forwardBackwardChunk(1, 0);
  }
  // Step 5: nB1F1B0
  for (let i = 0; i < H - h - 1; i++) {
    backwardChunk(1);
    forwardBackwardChunk(1, 0);
  }
  // Step 6: nB1B0 (the second half of the chunks use zero bubble)
  const step6 = h + 1;
  let zb = false;
  for (let i = 0; i < step6; i++) {
    if (i === Math.floor(step6 / 2) && h % 2 === 1) zb = true;
    backwardChunk(1, zb);
    if (i === Math.floor(step6 / 2) && h % 2 === 0) zb = true;
    backwardChunk(0, zb);
  }
  // Step 7: nWB0 (zero bubble)
  for (let i = 0; i < H - h - 1; i++) {
    weightChunk();
    backwardChunk(0, true);
  }
  // Step 8: nW
  for (let i = 0; i < h + 1; i++) weightChunk();
  wait();
  return out;
}

/** Counts of compute blocks in a rank's list (for tests and the explorer's summary). */
export function countOps(list: Instr[]): Record<'F' | 'B' | 'FB' | 'W' | 'zbB', number> {
  const c = { F: 0, B: 0, FB: 0, W: 0, zbB: 0 };
  for (const i of list) {
    if (i.op === 'F') c.F++;
    else if (i.op === 'B') { c.B++; if (i.zb) c.zbB++; }
    else if (i.op === 'FB') c.FB++;
    else if (i.op === 'W') c.W++;
  }
  return c;
}
