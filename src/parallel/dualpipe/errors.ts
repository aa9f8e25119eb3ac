// Typed errors for the DualPipe schedules and runtime.

/** A pipeline configuration the schedule cannot run (odd rank count, too few or odd chunks, ...). */
export class PipelineConfigError extends Error {
  override name = 'PipelineConfigError';
  constructor(message: string, readonly field: string, readonly value: number) {
    super(message);
  }
}

/** A failure inside a pipeline rank (its worker thread), with the rank that failed. */
export class PipelineRankError extends Error {
  override name = 'PipelineRankError';
  constructor(message: string, readonly rank: number) {
    super(`rank ${rank}: ${message}`);
  }
}
