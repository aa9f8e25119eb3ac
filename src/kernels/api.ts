// The op interface every compute backend implements, and the registry keyed by (op, backend).
// Shapes are row-major; comments use  M rows of activations, K input features, N output features.
// Kernels know nothing of models: they see matrices, rows and scales.
import type { DType } from '../tensor/dtypes.ts';

/** Block edge of DeepSeek's FP8 weight scales (128x128) and activation scales (1x128). */
export const FP8_BLOCK = 128;

/**
 * A weight matrix W[N, K] in its stored format; linear layers compute y[M, N] = x[M, K] · Wᵀ.
 * - `f32`: data[N*K].
 * - `bf16`: data[N*K] holds bf16 bits.
 * - `fp8`: data[N*K] holds e4m3fn codes; `scaleInv[ceil(N/128), ceil(K/128)]` multiplies each
 *   128x128 block (DeepSeek's `weight_scale_inv`, partial edge blocks allowed).
 */
export type WeightMatrix =
  | { readonly dtype: 'f32'; readonly rows: number; readonly cols: number; readonly data: Float32Array }
  | { readonly dtype: 'bf16'; readonly rows: number; readonly cols: number; readonly data: Uint16Array }
  | {
      readonly dtype: 'fp8'; readonly rows: number; readonly cols: number; readonly data: Uint8Array;
      readonly scaleInv: Float32Array;
    };

export type WeightDType = WeightMatrix['dtype'];

/**
 * G weight matrices of one shape stacked as [G, rows, cols] in one stored format (for example a layer's
 * routed experts), so one grouped product covers every group. Group g's matrix is
 * data[g·rows·cols, (g+1)·rows·cols); FP8 scales are [G, ceil(rows/128), ceil(cols/128)].
 */
export type GroupedWeight =
  | { readonly dtype: 'f32'; readonly groups: number; readonly rows: number; readonly cols: number; readonly data: Float32Array }
  | { readonly dtype: 'bf16'; readonly groups: number; readonly rows: number; readonly cols: number; readonly data: Uint16Array }
  | {
      readonly dtype: 'fp8'; readonly groups: number; readonly rows: number; readonly cols: number; readonly data: Uint8Array;
      readonly scaleInv: Float32Array;
    };

/**
 * Which rows of a grouped product's activations use which group: rows [start[g], start[g] + count[g])
 * use matrix g (count 0: group unused). Segments must not overlap; rows in no segment are written 0.
 * - Contiguous layout (DeepGEMM's `psum` form, no padding): start = exclusive prefix sum of count.
 * - Masked layout [G, mMax]: start[g] = g·mMax, count = masked_m.
 */
export interface GroupSegments {
  readonly start: Int32Array;
  readonly count: Int32Array;
}

/** Group g of a grouped weight as a WeightMatrix (views, no copy). */
export function groupSlice(w: GroupedWeight, g: number): WeightMatrix {
  if (!(Number.isInteger(g) && g >= 0 && g < w.groups)) throw new RangeError(`group ${g} outside [0, ${w.groups})`);
  const n = w.rows * w.cols;
  const { rows, cols } = w;
  switch (w.dtype) {
    case 'f32': return { dtype: 'f32', rows, cols, data: w.data.subarray(g * n, (g + 1) * n) };
    case 'bf16': return { dtype: 'bf16', rows, cols, data: w.data.subarray(g * n, (g + 1) * n) };
    case 'fp8': {
      const s = Math.ceil(rows / FP8_BLOCK) * Math.ceil(cols / FP8_BLOCK);
      return { dtype: 'fp8', rows, cols, data: w.data.subarray(g * n, (g + 1) * n), scaleInv: w.scaleInv.subarray(g * s, (g + 1) * s) };
    }
  }
}

/** Storage dtype of a checkpoint tensor -> weight format. */
export function weightDTypeOf(d: DType): WeightDType {
  switch (d) {
    case 'F32': return 'f32';
    case 'BF16': return 'bf16';
    case 'F8_E4M3': return 'fp8';
    default: throw new TypeError(`no weight format for ${d}`);
  }
}

export interface TopK {
  /** [rows, k] indices in descending order of value (ties: lower index first). */
  indices: Int32Array;
  /** [rows, k] the values at those indices. */
  values: Float32Array;
}

/**
 * The ops a forward pass needs. `out` arguments are optional destination buffers; when given, they
 * must have the right length and the op writes there and returns them.
 */
export interface KernelOps {
  /**
   * Allocates an empty weight matrix in memory the backend can compute on directly (for wasm: inside
   * its linear memory), so loaders copy each weight exactly once. Fill `data`/`scaleInv` in place.
   */
  allocWeight(dtype: WeightDType, rows: number, cols: number): WeightMatrix;
  /** y[M, N] = x[M, K] · Wᵀ with f32 accumulation (weights dequantized on the fly). */
  matmul(x: Float32Array, m: number, w: WeightMatrix, out?: Float32Array): Float32Array;
  /** Allocates an empty grouped weight [groups, rows, cols] in backend memory (like allocWeight). */
  allocGroupedWeight(dtype: WeightDType, groups: number, rows: number, cols: number): GroupedWeight;
  /**
   * Grouped product (DeepGEMM's m-grouped GEMM): y[M, N] where rows of segment g are x[r, :] · W_gᵀ
   * and rows in no segment are 0; W is [G, N, K]. One call for all groups (one thread-pool dispatch).
   */
  groupedMatmul(x: Float32Array, m: number, w: GroupedWeight, segments: GroupSegments, out?: Float32Array): Float32Array;
  /** y[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) * weight, for x[rows, weight.length]. */
  rmsNorm(x: Float32Array, rows: number, weight: Float32Array, eps: number, out?: Float32Array): Float32Array;
  /**
   * Rotates interleaved pairs (x[2i], x[2i+1]) in place by the angle whose cos/sin are given, for
   * `rows` vectors of `dim` values starting at `offset` with `stride` between rows; cos/sin are
   * [rows, dim/2] (one row per vector, so callers repeat a position's row for every head).
   */
  rope(x: Float32Array, rows: number, stride: number, offset: number, dim: number, cos: Float32Array, sin: Float32Array): void;
  /** Row-wise softmax in place over x[rows, cols] (max-subtracted, f32). */
  softmax(x: Float32Array, rows: number, cols: number): void;
  /** out[i] = silu(gate[i]) * up[i]. */
  siluMul(gate: Float32Array, up: Float32Array, out?: Float32Array): Float32Array;
  /** Per row of x[rows, cols]: the k largest values, descending, ties to the lower index. */
  topk(x: Float32Array, rows: number, cols: number, k: number): TopK;
  /**
   * out[r, :] = x[index[r], :] for x [*, cols] and r < index.length (the rows a grouped product reads:
   * DeepEP's dispatch within one rank). out is [index.length, cols].
   */
  gatherRows(x: Float32Array, cols: number, index: Int32Array, out?: Float32Array): Float32Array;
  /**
   * out[index[r], :] += weight[r] · y[r, :] for r = 0, 1, .. index.length − 1 in that order, y [index.length, cols]
   * (the weighted combine of expert outputs: DeepEP's combine within one rank). Each update is
   * computed as JS arithmetic on Float32Arrays does it: the product exact in float64, the sum rounded
   * to float64 and stored as f32; so the bits do not depend on the backend or its thread split. Rows
   * that share an index add up in r order. Returns out.
   */
  scatterAddRows(y: Float32Array, cols: number, index: Int32Array, weight: Float32Array, out: Float32Array): Float32Array;
  /**
   * A strided block copy (a 3-D memcpy, as for changing a tensor's layout): for i < shape[0],
   * j < shape[1], c < shape[2]: dst[d.offset + i·d.strides[0] + j·d.strides[1] + c] =
   * src[s.offset + i·s.strides[0] + j·s.strides[1] + c]. Offsets and strides are non-negative integers
   * (a stride of 0 repeats a source row); both spans must lie inside their arrays and must not overlap
   * each other, and the destination rows must not overlap one another (ordered by stride, each dst
   * stride at least the span it steps over). dst's other elements are left as they are.
   */
  copyStrided(src: Float32Array, s: StridedAt, dst: Float32Array, d: StridedAt, shape: readonly [number, number, number]): void;
}

/** Where a copyStrided operand starts and how its two outer dimensions step (in elements). */
export interface StridedAt {
  readonly offset: number;
  readonly strides: readonly [number, number];
}

export type OpName = keyof KernelOps;
export const OP_NAMES: readonly OpName[] = ['allocWeight', 'matmul', 'allocGroupedWeight', 'groupedMatmul', 'rmsNorm', 'rope', 'softmax', 'siluMul', 'topk', 'gatherRows', 'scatterAddRows', 'copyStrided'];

export interface BackendOptions {
  /** Worker threads to use (backends without threads ignore it). Default: 1. */
  threads?: number;
}

/**
 * Makes room ahead of loading for allocations of these sizes in bytes, in load order (what
 * allocWeight / allocGroupedWeight will take). Backends whose memory is split (wasm: several 4 GiB
 * memories) create it here, asynchronously, since the allocators are synchronous.
 */
export type ReserveFn = (sizes: readonly number[]) => Promise<void>;

/** Where a backend keeps weights: how many separate memories (wasm: 4 GiB each; 0 = the JS heap) and bytes placed. */
export interface MemoryStats { memories: number; weightBytes: number }

/** A loaded backend: every op callable, plus which ones are its own (the rest come from `ref`). */
export interface Kernels extends KernelOps {
  readonly backend: string;
  readonly threads: number;
  readonly native: ReadonlySet<OpName>;
  reserve: ReserveFn;
  memoryStats(): MemoryStats;
  dispose(): Promise<void>;
}

export interface BackendModule {
  readonly name: string;
  /** Instantiates the backend (compile wasm, start workers, open a device...). */
  create(opts: Required<BackendOptions>): Promise<Partial<KernelOps> & { reserve?: ReserveFn; memoryStats?(): MemoryStats; dispose?(): Promise<void> }>;
}

const backends = new Map<string, BackendModule>();

/** Registers a backend module; each backend's index.ts calls this once. */
export function registerBackend(mod: BackendModule): void {
  backends.set(mod.name, mod);
}

export function backendNames(): string[] {
  return [...backends.keys()];
}

export class UnknownBackendError extends Error {
  override name = 'UnknownBackendError';
  constructor(readonly backend: string) {
    super(`unknown backend "${backend}" (available: ${[...backends.keys()].join(', ')})`);
  }
}

/**
 * Loads a backend. Ops it does not implement fall back to `fallback` (normally `ref`), and `native`
 * says which are its own, so tests run each op on each backend that really implements it.
 */
export async function loadBackend(name: string, opts: BackendOptions = {}, fallback: string | null = 'ref'): Promise<Kernels> {
  const mod = backends.get(name);
  if (!mod) throw new UnknownBackendError(name);
  const threads = Math.max(1, Math.floor(opts.threads ?? 1));
  const impl = await mod.create({ threads });
  const base = fallback && fallback !== name ? await loadBackend(fallback, { threads }, null) : null;
  const native = new Set<OpName>();
  const table: Partial<KernelOps> = {};
  for (const op of OP_NAMES) {
    const own = impl[op];
    if (own) {
      native.add(op);
      (table as Record<string, unknown>)[op] = own.bind(impl);
    } else if (base) {
      (table as Record<string, unknown>)[op] = base[op].bind(base);
    } else {
      throw new Error(`backend ${name} does not implement ${op} and has no fallback`);
    }
  }
  return {
    ...(table as KernelOps),
    backend: name,
    threads,
    native,
    reserve: impl.reserve ? impl.reserve.bind(impl) : async () => {},
    memoryStats: impl.memoryStats ? impl.memoryStats.bind(impl) : () => ({ memories: 0, weightBytes: 0 }),
    async dispose() {
      await impl.dispose?.();
      await base?.dispose();
    },
  };
}
