// Builds the built-in model's tokenizer.json and tokenizer_config.json: a byte-level BPE learned
// from ./corpus.ts with DeepSeek-V3's pre-tokenizer and special tokens (same names, same order:
// BOS 0, EOS 1, pad 2, then the byte alphabet and merges, then FIM, role, tool-call and think
// tokens, then <｜place▁holder▁no▁N｜> up to the vocabulary size).
import { DEEPSEEK_SPLIT_PATTERNS, trainBpe } from './bpe.ts';
import { BUILTIN_CHAT_TEMPLATE } from './chat-template.ts';
import { CORPUS } from './corpus.ts';

export const BOS = '<｜begin▁of▁sentence｜>';
export const EOS = '<｜end▁of▁sentence｜>';
export const PAD = '<｜▁pad▁｜>';

/** Added tokens after the BPE vocabulary: [content, special]. Tool and think tokens are not special (they show in decoded text). */
export const TRAILING_TOKENS: [string, boolean][] = [
  ['<｜fim▁hole｜>', true], ['<｜fim▁begin｜>', true], ['<｜fim▁end｜>', true],
  ['<｜User｜>', true], ['<｜Assistant｜>', true], ['<|EOT|>', true],
  ['<｜tool▁calls▁begin｜>', false], ['<｜tool▁calls▁end｜>', false],
  ['<｜tool▁call▁begin｜>', false], ['<｜tool▁call▁end｜>', false],
  ['<｜tool▁outputs▁begin｜>', false], ['<｜tool▁outputs▁end｜>', false],
  ['<｜tool▁output▁begin｜>', false], ['<｜tool▁output▁end｜>', false],
  ['<｜tool▁sep｜>', false], ['<think>', false], ['</think>', false],
];

export interface BuiltinTokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  /** Number of ids (== the model's vocab_size). */
  vocabSize: number;
}

export function buildTokenizerFiles(vocabSize: number, modelMaxLength: number): BuiltinTokenizerFiles {
  const { tokenizerJson, tokenizerConfig } = bpeTokenizerFiles(CORPUS, vocabSize, modelMaxLength, 1);
  return { tokenizerJson, tokenizerConfig, vocabSize };
}

/**
 * tokenizer.json and tokenizer_config.json in this layout for a BPE learned from `text` (merges of pairs
 * seen at least minPairCount times; fewer than the room if the text runs out of them): the built-in
 * model's (CORPUS) and a trained model's (training/corpus) tokenizer.
 */
export function bpeTokenizerFiles(text: string, vocabSize: number, modelMaxLength: number, minPairCount: number):
  { tokenizerJson: Record<string, unknown>; tokenizerConfig: Record<string, unknown>; merges: number } {
  const leading = [BOS, EOS, PAD];
  const room = vocabSize - leading.length - 256 - TRAILING_TOKENS.length;
  if (room < 0) throw new RangeError(`vocab ${vocabSize} too small (at least ${vocabSize - room})`);
  const { symbols, merges } = trainBpe(text, room, minPairCount);
  const vocab: Record<string, number> = {};
  const added: Record<string, unknown>[] = [];
  const addToken = (content: string, id: number, special: boolean) => {
    vocab[content] = id;
    added.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special });
  };
  leading.forEach((t, i) => addToken(t, i, true));
  let id = leading.length;
  for (const s of symbols) vocab[s] = id++;
  for (const [t, special] of TRAILING_TOKENS) addToken(t, id++, special);
  for (let n = 0; id < vocabSize; n++) addToken(`<｜place▁holder▁no▁${n}｜>`, id++, true);
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'Sequence', normalizers: [] },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        ...DEEPSEEK_SPLIT_PATTERNS.map((p) => ({ type: 'Split', pattern: { Regex: p }, behavior: 'Isolated', invert: false })),
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
  const tokenizerConfig = {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: BOS,
    eos_token: EOS,
    pad_token: EOS,
    clean_up_tokenization_spaces: false,
    legacy: true,
    model_max_length: modelMaxLength,
    tokenizer_class: 'LlamaTokenizerFast',
    chat_template: BUILTIN_CHAT_TEMPLATE,
  };
  return { tokenizerJson, tokenizerConfig, merges: merges.length };
}
