// The built-in model: a DeepSeek-V3-architecture checkpoint that seekd trained itself (`seekd train
// --config data/builtin/train.json`, on English text from Debian packages; see the model card,
// data/builtin/model/README.md) and stores in DeepSeek's native FP8 layout (128x128 weight blocks).
// It ships in the repository, so `seekd serve` with no --model answers at once, offline.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BUILTIN_MODEL_ID = 'seekd-builtin';

/**
 * The committed checkpoint directory (Hugging Face layout). A function, not a module constant: the browser
 * page bundles the engine with `node:url` emptied, and a top-level fileURLToPath call would stop it loading.
 */
export function builtinModelPath(): string {
  return fileURLToPath(new URL('../../../data/builtin/model/', import.meta.url));
}

const REQUIRED_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];

/** The built-in checkpoint is not where it belongs (a partial checkout, a package without data/). */
export class BuiltinModelMissingError extends Error {
  override name = 'BuiltinModelMissingError';
  constructor(readonly dir: string, readonly missing: string[]) {
    super(`the built-in model is incomplete: ${missing.join(', ')} missing in ${dir} (restore data/builtin/model from the repository, or pass --model DIR)`);
  }
}

/** Returns the built-in model's directory, after checking that its files are there. */
export function builtinModelDir(dir = builtinModelPath()): string {
  const missing = REQUIRED_FILES.filter((f) => !existsSync(join(dir, f)));
  if (missing.length > 0) throw new BuiltinModelMissingError(dir, missing);
  return dir;
}
