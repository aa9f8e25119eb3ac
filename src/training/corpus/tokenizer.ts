// A DeepSeek-style byte-level BPE tokenizer learned from a given text with the project's trainer
// (engine/builtin/bpe.ts), in the built-in model's layout (engine/builtin/tokenizer-files.ts): BOS 0,
// EOS 1, pad 2, the 256 byte symbols and the merges, then the FIM, role, tool-call and think tokens,
// then placeholders up to the vocabulary size; DeepSeek-V3's pre-tokenizer; the built-in chat template.
import { bpeTokenizerFiles } from '../../engine/builtin/tokenizer-files.ts';

export interface TokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  merges: number;
}

/** Learns vocabSize − 3 − 256 − |trailing| merges of pairs seen at least twice (fewer if the text runs out of them). */
export function buildTokenizer(text: string, vocabSize: number, modelMaxLength: number): TokenizerFiles {
  return bpeTokenizerFiles(text, vocabSize, modelMaxLength, 2);
}
