// Typed errors for the expert-parallelism load balancer.

/** An argument of rebalanceExperts (or the recorder) that the algorithm cannot work with. */
export class EplbArgumentError extends Error {
  override name = 'EplbArgumentError';
  constructor(
    message: string,
    /** Which argument is wrong: 'weight', 'numReplicas', 'numGroups', 'numNodes', 'numGpus', ... */
    readonly argument: string,
    /** The offending value, when it is a scalar. */
    readonly value?: number,
  ) {
    super(message);
  }
}
