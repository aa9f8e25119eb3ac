// Guided decoding combined with reasoning (vLLM's reasoning parser does the same): the grammar applies only
// after the model's `</think>` token, so the reasoning part is free text and the answer follows the grammar.
import type { ConstraintFactory, TokenConstraint } from '../engine/contracts.ts';

class ReasoningGate implements TokenConstraint {
  private thinking = true;
  constructor(private readonly inner: TokenConstraint, private readonly thinkEnd: number, private readonly free: Int32Array) {}
  mask(): Int32Array | Promise<Int32Array> {
    return this.thinking ? this.free : this.inner.mask();
  }
  accept(token: number): boolean {
    if (this.thinking) {
      if (token === this.thinkEnd) this.thinking = false;
      return true;
    }
    return this.inner.accept(token);
  }
  get done(): boolean {
    return !this.thinking && this.inner.done;
  }
  dispose(): void {
    this.inner.dispose();
  }
}

/** `inner`'s grammar from the token after `thinkEnd` on; before it every id below `vocabSize` is allowed. */
export function afterReasoning(inner: ConstraintFactory, thinkEnd: number, vocabSize: number): ConstraintFactory {
  const free = new Int32Array(Math.ceil(vocabSize / 32));
  for (let t = 0; t < vocabSize; t++) free[t >>> 5]! |= 1 << (t & 31);
  return {
    async create() {
      return new ReasoningGate(await inner.create(), thinkEnd, free);
    },
  };
}
