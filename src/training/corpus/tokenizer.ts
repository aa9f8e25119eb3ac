// A DeepSeek-style byte-level BPE tokenizer learned from a given text with the project's trainer
// (engine/builtin/bpe.ts), in the built-in model's layout (engine/builtin/tokenizer-files.ts): BOS 0,
// EOS 1, pad 2, the 256 byte symbols and the merges, then the FIM, role, tool-call and think tokens,
// then placeholders up to the vocabulary size; DeepSeek-V3's pre-tokenizer; the built-in chat template.
import { DEEPSEEK_SPLIT_PATTERNS, trainBpe } from '../../engine/builtin/bpe.ts';
import { BUILTIN_CHAT_TEMPLATE } from '../../engine/builtin/chat-template.ts';
import { BOS, EOS, PAD, TRAILING_TOKENS } from '../../engine/builtin/tokenizer-files.ts';

export interface TokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  merges: number;
}

/** Learns vocabSize − 3 − 256 − |trailing| merges (fewer if the text runs out of pairs seen twice). */
export function buildTokenizer(text: string, vocabSize: number, modelMaxLength: number): TokenizerFiles {
  const leading = [BOS, EOS, PAD];
  const room = vocabSize - leading.length - 256 - TRAILING_TOKENS.length;
  if (room < 0) throw new RangeError(`vocabulary ${vocabSize} too small (at least ${vocabSize - room})`);
  const { symbols, merges } = trainBpe(text, room, 2);
  const vocab: Record<string, number> = {};
  const added: Array<Record<string, unknown>> = [];
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
    version: '1.0', truncation: null, padding: null, added_tokens: added,
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
    add_bos_token: true, add_eos_token: false, bos_token: BOS, eos_token: EOS, pad_token: EOS,
    clean_up_tokenization_spaces: false, legacy: true, model_max_length: modelMaxLength,
    tokenizer_class: 'LlamaTokenizerFast', chat_template: BUILTIN_CHAT_TEMPLATE,
  };
  return { tokenizerJson, tokenizerConfig, merges: merges.length };
}
