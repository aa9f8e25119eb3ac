// The chat page in a real browser (playwright-core + Debian chromium): type a message, see a streamed
// answer, stop a long one. Runs against the random-weight test model; skips only where chromium is absent
// from this machine (CI installs it: see .ci/run).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { Llm } from '../engine/llm.ts';
import { ensureRandomModel } from '../engine/builtin/random-model.ts';
import { backendNames } from '../kernels/index.ts';
import { startServer } from './http.ts';

const CHROMIUM = '/usr/bin/chromium';

test('chat page: type a message, see a streamed answer, stop a generation', { skip: !existsSync(CHROMIUM) && 'chromium not installed', timeout: 180_000 }, async (t) => {
  const llm = await Llm.load({ model: ensureRandomModel(), backend: backendNames().includes('wasm') ? 'wasm' : 'ref', maxModelLen: 1024, maxNumSeqs: 4 });
  const srv = await startServer({ port: 0 }, llm);
  // A fresh profile directory (playwright passes it to chromium as --user-data-dir).
  const profile = mkdtempSync(join(tmpdir(), 'seekd-chromium-'));
  after(async () => { await srv.shutdown(1000); await llm.close(); });
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  // Close chromium before removing its profile (it writes there until it exits: ENOTEMPTY otherwise).
  after(async () => { await browser.close(); rmSync(profile, { recursive: true, force: true }); });
  const page = await browser.newPage();
  page.setDefaultTimeout(60_000);
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(srv.url + '/');
  await page.waitForFunction("document.getElementById('model').options.length > 0");
  assert.equal(await page.inputValue('#model'), llm.modelId);

  // Count streamed updates of the answer bubble: a streamed answer changes many times. The page applies
  // every event of one network read at once, and under load (CI runs two test files at a time) several
  // events arrive per read, so the answer is long enough (96 tokens) to leave many reads either way.
  // (Browser-side code as strings: this project's TypeScript has no DOM types.)
  await page.evaluate(`window.updates = 0;
    new MutationObserver(() => { window.updates++; })
      .observe(document.getElementById('log'), { subtree: true, characterData: true, childList: true });`);
  await page.fill('#maxtokens', '96');
  await page.fill('#input', 'Hello! Who are you?');
  await page.press('#input', 'Enter');
  await page.waitForFunction("document.getElementById('status').textContent.startsWith('Done')", null, { timeout: 60_000 });
  const answer = await page.textContent('.assistant .content');
  assert.ok(answer && answer.length > 0, 'an answer appeared');
  const updates = (await page.evaluate('window.updates')) as number;
  t.diagnostic(`the answer bubble changed ${updates} times`);
  assert.ok(updates > 5, `the answer arrived in pieces (${updates} updates)`);
  assert.equal(await page.textContent('.user'), 'Hello! Who are you?');
  await page.screenshot({ path: join(process.env.SEEKD_SCREENSHOT_DIR ?? tmpdir(), 'seekd-chat.png') });

  // Stop: a long generation is cut off and its KV blocks are freed.
  await page.fill('#maxtokens', '800'); // prompt (with the first exchange) + 800 stays within maxModelLen 1024
  await page.fill('#input', 'Tell me a long story.');
  await page.press('#input', 'Enter');
  await page.waitForFunction("(document.querySelectorAll('.assistant .content')[1]?.textContent ?? '').length > 0", null, { timeout: 60_000 });
  await page.click('#stop');
  await page.waitForFunction("document.getElementById('status').textContent === 'Stopped.'");
  for (let i = 0; i < 100 && llm.engine.numLive > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(llm.engine.kvUsage(), 0);
  assert.deepEqual(errors, []);
});
