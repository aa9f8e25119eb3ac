// A small reverse-mode autograd for training-style code paths (pipeline-parallel stages today, a
// DeepSeek-V3-architecture trainer later). It lives under src/tensor because it imports nothing and
// every layer above (kernels' reference checks, model, parallel) may use it.
//
// Conventions: row-major dense arrays, the last dimension contiguous, e.g. activations [T, H] and Linear
// weights [out, in] (the torch layout). A tensor's element type is Float64Array or Float32Array; ops keep
// the type of their first input (Float32 results are rounded on store, arithmetic runs in double).
// Gradients follow torch's rules: backward(outputs, grads) accumulates into `.grad` of every leaf that
// requires grad (parameters and stage inputs), and intermediate gradients are freed once consumed.

export type FloatArray = Float64Array | Float32Array;
export type FloatArrayCtor = Float64ArrayConstructor | Float32ArrayConstructor;

/** Thrown for shape or dtype mismatches and misuse of backward(). */
export class AutogradError extends Error {
  override name = 'AutogradError';
  constructor(message: string, readonly op: string) {
    super(`${op}: ${message}`);
  }
}

/** How gradients flow out of a node: given d(out), return d(input_i) for each input (null = none). */
export interface GradFn {
  readonly name: string;
  readonly inputs: readonly Tensor[];
  backward(gradOut: FloatArray): (FloatArray | null)[];
}

let nextId = 0;

export class Tensor {
  readonly id = nextId++;
  grad: FloatArray | null = null;
  /** Set by ops on their outputs; null for leaves. */
  gradFn: GradFn | null = null;

  constructor(
    public data: FloatArray,
    readonly shape: readonly number[],
    public requiresGrad = false,
  ) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new AutogradError(`shape [${shape.join(', ')}] needs ${n} elements, data has ${data.length}`, 'Tensor');
  }

  get size(): number {
    return this.data.length;
  }

  /** The data's constructor (Float64Array or Float32Array), used to allocate results of the same type. */
  get ctor(): FloatArrayCtor {
    return this.data instanceof Float32Array ? Float32Array : Float64Array;
  }

  /** A leaf sharing this data, cut from the graph (torch's detach()). */
  detach(requiresGrad = false): Tensor {
    return new Tensor(this.data, this.shape, requiresGrad);
  }

  /** The only element of a one-element tensor. */
  item(): number {
    if (this.data.length !== 1) throw new AutogradError(`item() on ${this.data.length} elements`, 'Tensor');
    return this.data[0]!;
  }

  zeroGrad(): void {
    this.grad = null;
  }
}

export function zeros(ctor: FloatArrayCtor, shape: readonly number[], requiresGrad = false): Tensor {
  return new Tensor(new ctor(shape.reduce((a, b) => a * b, 1)), shape, requiresGrad);
}

/** Wraps an op result: attaches gradFn when any input requires grad and grad mode is on. */
export function makeResult(data: FloatArray, shape: readonly number[], fn: GradFn): Tensor {
  const needs = gradEnabled && fn.inputs.some((t) => t.requiresGrad);
  const out = new Tensor(data, shape, needs);
  if (needs) out.gradFn = fn;
  return out;
}

let gradEnabled = true;

/** Runs fn with graph recording off (torch.no_grad()). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

function addInto(dst: FloatArray, src: FloatArray): void {
  for (let i = 0; i < dst.length; i++) dst[i]! += src[i]!;
}

/**
 * Back-propagates `grads` (d loss / d output_i) from `outputs` through the recorded graph, accumulating
 * into `.grad` of leaves that require grad. A one-element output may pass grad null (= 1, loss.backward()).
 * The graph is released afterwards (gradFn cleared), like torch without retain_graph.
 */
export function backward(outputs: readonly Tensor[], grads: readonly (FloatArray | null)[]): void {
  if (outputs.length !== grads.length) throw new AutogradError(`${outputs.length} outputs, ${grads.length} grads`, 'backward');
  // Topological order by DFS from the outputs (iterative: graphs can be deep).
  const order: Tensor[] = [];
  const seen = new Set<number>();
  for (const root of outputs) {
    if (seen.has(root.id)) continue;
    const stack: Array<[Tensor, number]> = [[root, 0]];
    seen.add(root.id);
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const [t, i] = top;
      const ins = t.gradFn?.inputs ?? [];
      if (i < ins.length) {
        top[1]++;
        const c = ins[i]!;
        if (c.requiresGrad && !seen.has(c.id)) {
          seen.add(c.id);
          stack.push([c, 0]);
        }
      } else {
        order.push(t);
        stack.pop();
      }
    }
  }
  const pending = new Map<number, FloatArray>();
  outputs.forEach((o, i) => {
    let g = grads[i] ?? null;
    if (!o.requiresGrad) throw new AutogradError('output does not require grad (no graph)', 'backward');
    if (g === null) {
      if (o.size !== 1) throw new AutogradError('grad can be omitted only for one-element outputs', 'backward');
      g = new (o.ctor)(1).fill(1);
    }
    if (g.length !== o.size) throw new AutogradError(`grad has ${g.length} elements, output ${o.size}`, 'backward');
    const prev = pending.get(o.id);
    if (prev) addInto(prev, g);
    else pending.set(o.id, new (o.ctor)(g));
  });
  for (let k = order.length - 1; k >= 0; k--) {
    const t = order[k]!;
    const g = pending.get(t.id);
    if (!g) continue;
    pending.delete(t.id);
    if (!t.gradFn) {
      if (t.grad) addInto(t.grad, g);
      else t.grad = g;
      continue;
    }
    const fn = t.gradFn;
    const gin = fn.backward(g);
    fn.inputs.forEach((inp, i) => {
      const gi = gin[i];
      if (!gi || !inp.requiresGrad) return;
      const prev = pending.get(inp.id);
      if (prev) addInto(prev, gi);
      else pending.set(inp.id, gi);
    });
    t.gradFn = null;
  }
}
