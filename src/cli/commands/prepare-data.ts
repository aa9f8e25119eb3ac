// `seekd prepare-data`: builds a training data directory (src/training/corpus/prepare.ts) from the
// Debian packages fortunes / fortunes-min (/usr/share/games/fortunes), bible-kjv + bible-kjv-text (the
// `bible` program) and dict-gcide (/usr/share/dictd/gcide.*): documents, held-out split, a BPE
// tokenizer learned on the training split, token files, held-out fortunes and a unigram baseline.
//   apt-get install -y fortunes bible-kjv dict-gcide && seekd prepare-data --out data/builtin
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { UsageError } from '../errors.ts';
import { prepareData } from '../../training/corpus/prepare.ts';

interface PrepareCliOptions {
  out: string; fortunes: string | false; gcide: string | false; bible: string | boolean; gcideEntries: string; vocab: string;
  bpeChars: string; heldout: string; seed: string; maxLength: string; json?: boolean;
}

const DEFAULT_FORTUNES = '/usr/share/games/fortunes';
const DEFAULT_GCIDE = '/usr/share/dictd';

function int(name: string, v: string, min: number): number {
  const x = Number(v);
  if (!Number.isInteger(x) || x < min) throw new UsageError(`--${name} must be an integer >= ${min}, got '${v}'`);
  return x;
}

export function register(program: Command): void {
  program.command('prepare-data').description('build a training data directory from Debian text packages (fortunes, bible-kjv, dict-gcide)')
    .requiredOption('--out <dir>', 'data directory to write')
    .option('--fortunes <dir>', 'strfile fortune sources', DEFAULT_FORTUNES)
    .option('--no-fortunes', 'leave fortunes out')
    .option('--gcide <dir>', 'directory with gcide.index and gcide.dict.dz', DEFAULT_GCIDE)
    .option('--no-gcide', 'leave GCIDE definitions out')
    .option('--bible <file>', "the `bible` program's output for the whole text (default: run `bible Gen1:1-Rev22:21`)")
    .option('--no-bible', 'leave the Bible out')
    .option('--gcide-entries <n>', 'at most this many definitions (as question-and-answer chat turns)', '30000')
    .option('--vocab <n>', 'vocabulary size of the tokenizer', '2048')
    .option('--bpe-chars <n>', 'characters of training text the BPE learns from', '500000')
    .option('--heldout <x>', 'fraction of documents held out', '0.05')
    .option('--seed <n>', 'shuffle seed', '1')
    .option('--max-length <n>', "tokenizer_config's model_max_length", '4096')
    .option('--json', 'print the statistics as JSON')
    .action((opts: PrepareCliOptions) => {
      const need = (what: string, path: string, pkg: string) => {
        if (!existsSync(path)) throw new UsageError(`${what}: ${path} does not exist (apt-get install -y ${pkg}, or --no-${what})`);
      };
      if (opts.fortunes !== false) need('fortunes', opts.fortunes, 'fortunes');
      if (opts.gcide !== false) need('gcide', join(opts.gcide, 'gcide.index'), 'dict-gcide');
      let bibleText: string | null = null;
      if (typeof opts.bible === 'string') {
        need('bible', opts.bible, 'bible-kjv');
        bibleText = readFileSync(opts.bible, 'utf8');
      } else if (opts.bible !== false) {
        try {
          bibleText = execFileSync('bible', ['Gen1:1-Rev22:21'], { encoding: 'utf8', maxBuffer: 64 << 20, env: { ...process.env, COLUMNS: '80' } });
        } catch {
          throw new UsageError('bible: the `bible` program did not run (apt-get install -y bible-kjv, or --bible FILE, or --no-bible)');
        }
      }
      const heldout = Number(opts.heldout);
      if (!(heldout >= 0 && heldout < 1)) throw new UsageError(`--heldout must be in [0, 1), got '${opts.heldout}'`);
      const stats = prepareData({
        out: opts.out, fortunes: opts.fortunes || null, gcide: opts.gcide || null, bibleText,
        gcideEntries: int('gcide-entries', opts.gcideEntries, 0), vocab: int('vocab', opts.vocab, 1), bpeChars: int('bpe-chars', opts.bpeChars, 1),
        heldout, seed: int('seed', opts.seed, 0), modelMaxLength: int('max-length', opts.maxLength, 2),
      }, (m) => process.stderr.write(`seekd prepare-data: ${m}\n`));
      if (opts.json) process.stdout.write(JSON.stringify(stats) + '\n');
    });
}
