// Typed errors for checkpoint loading. Every violation names the file and, where known, the tensor.

export type SafetensorsRule =
  | 'io' | 'file-too-small' | 'header-too-large' | 'header-out-of-bounds' | 'header-not-utf8'
  | 'header-not-json' | 'header-not-object' | 'bad-entry' | 'unknown-dtype' | 'bad-shape'
  | 'size-overflow' | 'size-mismatch' | 'bad-offsets' | 'overlap-or-gap' | 'trailing-data'
  | 'bad-metadata' | 'bad-index' | 'index-escapes-dir' | 'missing-shard' | 'missing-tensor'
  | 'duplicate-tensor' | 'dtype-mismatch';

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
  constructor(
    readonly rule: SafetensorsRule,
    readonly file: string,
    message: string,
    readonly tensor?: string,
  ) {
    super(`${file}${tensor !== undefined ? ` [${tensor}]` : ''}: ${message} (${rule})`);
  }
}
