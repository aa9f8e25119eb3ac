// Typed failures of the expert-parallel communication layer (port of DeepEP's semantics, not its CUDA):
// https://github.com/deepseek-ai/DeepEP/blob/main/deep_ep/buffer.py

export type RankFailureReason = 'exited' | 'timeout' | 'closed' | 'desync';

/**
 * A peer rank died, closed its connection or stopped answering within the communicator's timeout while
 * `op` (e.g. 'dispatch', 'low_latency_combine', 'barrier') needed it. Every surviving rank that waits on
 * that peer rejects with this error instead of hanging.
 */
export class RankFailedError extends Error {
  override name = 'RankFailedError';
  constructor(readonly rank: number, readonly op: string, readonly reason: RankFailureReason, detail = '') {
    super(`rank ${rank} failed during ${op} (${reason})${detail ? `: ${detail}` : ''}`);
  }
}

/** The communicator was closed locally while an operation was still waiting. */
export class CommClosedError extends Error {
  override name = 'CommClosedError';
  constructor(readonly op: string) {
    super(`communicator closed during ${op}`);
  }
}

/** Bad arguments to a Buffer / layout call: wrong lengths, expert ids out of range, capacity exceeded. */
export class DeepEPShapeError extends Error {
  override name = 'DeepEPShapeError';
  constructor(readonly op: string, readonly field: string, detail: string) {
    super(`${op}: ${field}: ${detail}`);
  }
}
