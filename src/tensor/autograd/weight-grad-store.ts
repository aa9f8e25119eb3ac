// Deferred weight gradients for zero-bubble pipeline schedules.
// Reference: https://github.com/deepseek-ai/DualPipe/blob/main/dualpipe/utils.py (WeightGradStore)
// While `enabled`, ops that own weights (Linear) put their dW computation here instead of running it;
// flush() closes the current group (one backward chunk), pop() runs the oldest group (FIFO), which is
// the "W" step of the schedule. Off, dW runs inside backward as usual.

export class WeightGradStore {
  enabled = false;
  private cache: Array<() => void> = [];
  private readonly queue: Array<Array<() => void>> = [];

  put(fn: () => void): void {
    this.cache.push(fn);
  }

  flush(): void {
    this.queue.push(this.cache);
    this.cache = [];
  }

  pop(): void {
    const group = this.queue.shift();
    if (!group) throw new Error('WeightGradStore.pop(): no deferred weight gradients');
    for (const fn of group) fn();
  }

  /** Pending groups (flushed, not yet popped). */
  get size(): number {
    return this.queue.length;
  }

  clear(): void {
    this.cache = [];
    this.queue.length = 0;
    this.enabled = false;
  }
}
