// The data pipeline on a tiny committed sample in the Debian packages' formats (testdata/: strfile
// fortunes, the `bible` program's output, a dictd GCIDE index + gzip data written for these tests).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChatTokenizer } from '../../engine/tokenizer.ts';
import { loadTrainData, readIds } from '../data.ts';
import { definitionTurn, fnv1a, prepareData, unigramNll } from './prepare.ts';
import { dictNumber, parseBible, parseGcideEntry, readFortuneDir, readGcideDir } from './sources.ts';

const DATA = fileURLToPath(new URL('./testdata/', import.meta.url));

test('fortunes: entries split at "%" lines, trimmed, tabs as spaces; pictures and non-prose files skipped', () => {
  const f = readFortuneDir(join(DATA, 'fortunes'));
  assert.deepEqual(f.map((x) => x.text), [
    'A stitch in time saves nine.',
    'Early to bed and early to rise\n makes a man healthy, wealthy and wise.\n -- Proverb',
    'The early bird gets the worm, but the second mouse gets the cheese.',
    'Never put off until tomorrow what you can do today.',
    'Where there is smoke, there is fire.',
  ]);
  assert.ok(f.every((x) => x.file === 'proverbs'));
});

test('bible: chapters with their titles (multi-word and numbered books), verse numbers dropped, wrapped lines joined', () => {
  const b = parseBible(readFileSync(join(DATA, 'bible.txt'), 'utf8'));
  assert.deepEqual(b.map((c) => c.title), ['Genesis 1', 'Song of Solomon 1', '1 John 1']);
  assert.equal(b[0]!.text.split('\n')[3], 'And the earth was without form, and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.');
  assert.equal(b[2]!.text, '1 John 1\n\nThat which was from the beginning, which we have heard, which we have seen with our eyes.');
});

test('gcide: dictd numbers, first sense without etymology, quotations, tags or synonyms; cross-references and repeats skipped', () => {
  assert.equal(dictNumber('A'), 0);
  assert.equal(dictNumber('Fi'), 5 * 64 + 34);
  const g = readGcideDir(DATA);
  assert.deepEqual(g, [
    { word: 'Kettle', pos: 'noun', definition: 'A metal vessel with a spout and a handle, used for boiling water.' },
    { word: 'Glimmer', pos: 'intransitive verb', definition: 'To shine faintly and unsteadily; as, a light glimmered in the window.' },
    { word: 'Brightly', pos: 'adverb', definition: 'In a bright manner; with brightness; as, the sun shone brightly.' },
  ]);
  assert.equal(parseGcideEntry('no pronunciation here'), null);
  const turn = definitionTurn(g[0]!) as { messages: Array<{ role: string; content: string }> };
  assert.equal(turn.messages[0]!.role, 'user');
  assert.ok(turn.messages[0]!.content.includes('kettle'));
  assert.equal(turn.messages[1]!.content, '"kettle" is a noun: a metal vessel with a spout and a handle, used for boiling water.');
});

test('prepareData: tokenizer learned on the training split, split by hash, token files, held-out fortunes and the unigram baseline', () => {
  const out = mkdtempSync(join(tmpdir(), 'seekd-corpus-'));
  try {
    const o = { out, fortunes: join(DATA, 'fortunes'), gcide: DATA, bibleText: readFileSync(join(DATA, 'bible.txt'), 'utf8'), gcideEntries: 2, vocab: 300, bpeChars: 100000, heldout: 0.3, seed: 1, modelMaxLength: 256 };
    const s = prepareData(o);
    assert.equal(s.documents.fortunes.train + s.documents.fortunes.val, 5);
    assert.equal(s.documents.bible.train + s.documents.bible.val, 3);
    assert.equal(s.documents.gcide.train + s.documents.gcide.val, 2);
    assert.ok(s.documents.fortunes.val > 0 && s.documents.fortunes.train > 0, JSON.stringify(s.documents));
    assert.equal(s.merges, 300 - 3 - 256 - 17);
    // The split depends on each document alone.
    const cut = Math.round(0.3 * 2 ** 32);
    const heldout = readFileSync(join(out, 'heldout-fortunes.txt'), 'utf8').trim().split('\n\n');
    assert.equal(heldout.length, s.documents.fortunes.val);
    for (const f of heldout) assert.ok(fnv1a(f) < cut, f);
    const d = loadTrainData(out);
    assert.equal(d.train.length, s.trainTokens);
    assert.deepEqual(readIds(join(out, 'val.ids')), d.val);
    assert.equal(d.tokenizer.vocabSize, 300);
    // Chat documents are rendered by the template (BOS, user and assistant turns, EOS).
    const tok = ChatTokenizer.load(out);
    const user = tok.idOf('<｜User｜>')!, asst = tok.idOf('<｜Assistant｜>')!;
    const all = [...d.train, ...d.val!];
    assert.equal(all.filter((t) => t === user).length, 2);
    assert.equal(all.filter((t) => t === asst).length, 2); // no generation prompt after the answer
    assert.equal(all.filter((t) => t === tok.eosTokenIds[0]).length, 10);
    assert.equal(all.filter((t) => t === tok.bosId).length, 10);
    // The baseline: add-one unigram counts of the training tokens on BOS + the held-out text.
    const seq = [tok.bosId!, ...tok.encodePlain(heldout.join('\n\n') + '\n')];
    assert.equal(s.heldoutFortunes!.tokens, seq.length - 1);
    assert.ok(Math.abs(s.heldoutFortunes!.unigramPpl - Math.exp(unigramNll(d.train, 300, seq))) < 1e-9);
    assert.ok(Math.abs(unigramNll(Int32Array.from([0, 0, 1]), 2, [0, 1]) + Math.log(2 / 5)) < 1e-12);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
