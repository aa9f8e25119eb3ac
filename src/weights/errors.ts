// Typed errors for checkpoint loading. Every violation names the file and, where known, the tensor;
// `rule` is a stable machine-readable name (the full list, with what each means, is below).

export type SafetensorsRule =
  // file access
  | 'io' // open/read failed, or the file changed under us (short read)
  | 'not-a-file' // the path is a directory, FIFO, device...: never opened for reading
  | 'out-of-memory' // a tensor too large to allocate as one buffer
  | 'bad-destination' // readInto: destination size differs from the tensor's byte size; readRangeInto: range outside the tensor
  // header framing (reference: HeaderTooSmall, HeaderTooLarge, InvalidHeaderLength, InvalidHeader)
  | 'file-too-small' // fewer than the 8 bytes of the header length
  | 'header-too-large' // header length > 100,000,000 (the reference limit)
  | 'header-out-of-bounds' // header length runs past the end of the file
  | 'header-not-utf8' // header bytes are not valid UTF-8
  // header JSON (reference: InvalidHeaderDeserialization)
  | 'header-not-json' // JSON syntax error, nesting deeper than 128, trailing characters, lone surrogate escape
  | 'header-not-object' // valid JSON but not an object
  | 'duplicate-key' // a key repeated in the header, an entry, __metadata__ or the index
  | 'bad-entry' // a tensor entry is not an object or lacks dtype/shape/data_offsets
  | 'unknown-dtype' // dtype not a string or not a safetensors dtype
  | 'unsupported-dtype' // a sub-byte dtype of the reference (F4, F6_E2M3, F6_E3M2)
  | 'bad-shape' // shape not an array of non-negative integer literals, or rank > 64
  | 'bad-metadata' // __metadata__ is not null or an object of strings
  // layout (reference: Metadata::validate: ValidationOverflow, TensorInvalidInfo, InvalidOffset, MetadataIncompleteBuffer)
  | 'size-overflow' // element count or byte size exceeds 2^53 - 1
  | 'size-mismatch' // shape x dtype size != end - begin
  | 'bad-offsets' // data_offsets not [begin, end] non-negative integers with begin <= end
  | 'data-out-of-bounds' // a tensor ends past the end of the file
  | 'overlap-or-gap' // sorted by offset, a tensor does not start where the previous one ended (first at 0)
  | 'trailing-data' // bytes after the last tensor
  // checkpoints (directory, index, shards)
  | 'bad-index' // index unreadable, not strict JSON, no weight_map object, shard name not a non-empty string
  | 'index-escapes-dir' // a shard path is absolute, has NUL, leaves the model directory, or resolves outside it via symlinks
  | 'missing-shard' // a listed shard does not exist (or a dangling symlink), or no .safetensors file at all
  | 'missing-tensor' // tensor listed in the index but absent from its shard, or asked for and not present
  | 'duplicate-tensor' // the same tensor name in two shards
  | 'dtype-mismatch' // Checkpoint.expect: wrong dtype
  | 'shape-mismatch' // Checkpoint.expect: wrong shape
  // FP8 weight + scale pairs (pairing.ts)
  | 'fp8-missing-scale' // an F8_E4M3 tensor without its `<name>_scale_inv`
  | 'fp8-scale-dtype' // the scale is not F32
  | 'fp8-scale-shape' // the scale is not [ceil(rows/128), ceil(cols/128)]
  | 'fp8-bad-shape' // an F8_E4M3 weight that is not 2-D
  | 'fp8-orphan-scale'; // a `*_scale_inv` tensor with no F8_E4M3 tensor beside it

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
  constructor(
    readonly rule: SafetensorsRule,
    readonly file: string,
    message: string,
    readonly tensor?: string,
  ) {
    super(`${file}${tensor !== undefined ? ` [${quoteName(tensor)}]` : ''}: ${message} (${rule})`);
  }
}

/** A name for a message: JSON-quoted (control characters visible) and cut at 200 characters. */
export function quoteName(name: string): string {
  return name.length > 200 ? `${JSON.stringify(name.slice(0, 200))}... (${name.length} chars)` : JSON.stringify(name);
}
