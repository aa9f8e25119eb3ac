// Issue #14, security: API key compared in constant time (digests + timingSafeEqual), explicit CORS,
// the chat page's static route serves only its own files, tokenizer files stay inside the model dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync, copyFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllowedOrigins } from '../cli/commands/serve.ts';
import { UsageError } from '../cli/errors.ts';
import { buildTokenizerFiles } from '../engine/builtin/tokenizer-files.ts';
import { ChatTokenizer, TokenizerLoadError } from '../engine/tokenizer.ts';
import { createApp, CorsConfigError } from './app.ts';
import { startFakeServer } from './testing.ts';

const WEB = new URL('../../web/', import.meta.url).pathname;

test('API key: only the exact key passes (same length, prefix, suffix, case and spacing variants fail)', async () => {
  const key = 'sk-0123456789abcdef';
  const srv = await startFakeServer({ apiKey: key });
  try {
    const status = async (auth: string | null) => (await fetch(`${srv.url}/v1/models`, auth === null ? {} : { headers: { authorization: auth } })).status;
    assert.equal(await status(`Bearer ${key}`), 200);
    assert.equal(await status(`bearer ${key}`), 200);
    assert.equal(await status(`Bearer   ${key}  `), 200);
    for (const wrong of [null, '', 'Bearer', 'Bearer ', key, `Bearer ${key.slice(0, -1)}X`, `Bearer ${key.slice(0, -1)}`, `Bearer ${key}0`,
      `Bearer ${key.toUpperCase()}`, `Bearer ${key} ${key}`, `Basic ${key}`, `Bearer\u00a0${key}`, `Bearer ${'a'.repeat(10_000)}`]) {
      assert.equal(await status(wrong), 401, String(wrong));
    }
  } finally {
    await srv.shutdown(500);
  }
});

test('CORS: none by default; explicit origins get preflight and headers, others 403; wildcard never with a key', async () => {
  const plain = await startFakeServer();
  try {
    const r = await fetch(`${plain.url}/v1/models`, { headers: { origin: 'http://evil.example' } });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('access-control-allow-origin'), null);
  } finally {
    await plain.shutdown(500);
  }
  const srv = await startFakeServer({ apiKey: 'k', allowedOrigins: ['http://app.example', 'https://b.example:8443'] });
  try {
    const pre = await fetch(`${srv.url}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin: 'http://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' } });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), 'http://app.example');
    assert.match(pre.headers.get('access-control-allow-headers') ?? '', /authorization/);
    assert.equal(pre.headers.get('access-control-allow-credentials'), null);
    const ok = await fetch(`${srv.url}/v1/models`, { headers: { origin: 'https://b.example:8443', authorization: 'Bearer k' } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('access-control-allow-origin'), 'https://b.example:8443');
    assert.match(ok.headers.get('vary') ?? '', /origin/i);
    // Errors carry the header too (the page can read the 401).
    const unauth = await fetch(`${srv.url}/v1/models`, { headers: { origin: 'http://app.example' } });
    assert.equal(unauth.status, 401);
    assert.equal(unauth.headers.get('access-control-allow-origin'), 'http://app.example');
    for (const origin of ['http://evil.example', 'http://app.example.evil.example', 'null', 'http://app.example:80x', 'https://app.example']) {
      const pf = await fetch(`${srv.url}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' } });
      assert.equal(pf.status, 403, origin);
      assert.equal(pf.headers.get('access-control-allow-origin'), null);
      const rq = await fetch(`${srv.url}/v1/models`, { headers: { origin, authorization: 'Bearer k' } });
      assert.equal(rq.status, 403, origin);
      assert.equal(((await rq.json()) as { error: { code: string } }).error.code, 'origin_not_allowed');
    }
    // The server's own origin (its chat page) is always allowed.
    assert.equal((await fetch(`${srv.url}/v1/models`, { headers: { origin: srv.url, authorization: 'Bearer k' } })).status, 200);
  } finally {
    await srv.shutdown(500);
  }
  assert.throws(() => createApp({ llm: null, draining: false, metrics: null }, { apiKey: 'k', allowedOrigins: ['*'] }), CorsConfigError);
  const any = await startFakeServer({ allowedOrigins: ['*'] });
  try {
    const r = await fetch(`${any.url}/v1/models`, { headers: { origin: 'http://x.example' } });
    assert.equal(r.headers.get('access-control-allow-origin'), '*');
    assert.equal(r.headers.get('access-control-allow-credentials'), null);
  } finally {
    await any.shutdown(500);
  }
  // CLI parsing.
  assert.deepEqual(parseAllowedOrigins('http://a.example, https://b.example:9', null), ['http://a.example', 'https://b.example:9']);
  assert.equal(parseAllowedOrigins(undefined, 'k'), null);
  assert.deepEqual(parseAllowedOrigins('*', null), ['*']);
  for (const bad of ['*', 'http://a.example,*']) assert.throws(() => parseAllowedOrigins(bad, 'k'), UsageError);
  for (const bad of ['', ',', 'a.example', 'http://a.example/', 'http://a.example/path', 'ftp://a.example', 'javascript:alert(1)']) assert.throws(() => parseAllowedOrigins(bad, null), UsageError, bad);
});

/** A raw HTTP/1.1 GET with the path exactly as given (fetch and node:http normalise some). */
function rawGet(url: string, path: string): Promise<{ status: number; text: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(u.port), u.hostname, () => sock.end(`GET ${path} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n\r\n`));
    let data = '';
    sock.setEncoding('latin1');
    sock.on('data', (d) => { data += d; });
    sock.on('end', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? -1), text: data }));
    sock.on('error', reject);
  });
}

test('static route: only the chat page files; traversal, encodings, backslashes, absolute paths and symlinks out get nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'seekd-web-'));
  const outside = mkdtempSync(join(tmpdir(), 'seekd-secret-'));
  writeFileSync(join(outside, 'secret.txt'), 'TOP-SECRET-CONTENT');
  copyFileSync(join(WEB, 'index.html'), join(dir, 'index.html'));
  symlinkSync(join(outside, 'secret.txt'), join(dir, 'app.js')); // a symlink out: refused
  mkdirSync(join(dir, 'sub'));
  writeFileSync(join(dir, 'sub', 'style.css'), 'body{}');
  symlinkSync(join(dir, 'sub', 'style.css'), join(dir, 'style.css')); // a symlink inside: served
  for (const apiKey of [null, 'k']) {
    const srv = await startFakeServer({ webDir: dir, apiKey });
    try {
      assert.equal((await rawGet(srv.url, '/')).status, 200);
      assert.match((await rawGet(srv.url, '/style.css')).text, /body\{\}/);
      const app = await rawGet(srv.url, '/app.js');
      assert.ok(app.status === 404 || app.status === 401, String(app.status));
      for (const p of ['/app.js', '/../package.json', '/%2e%2e/package.json', '/%2E%2E%2Fpackage.json', '/..%2fpackage.json', '/..%5cpackage.json',
        '/..\\package.json', '/\\..\\..\\package.json', '//etc/passwd', '/etc/passwd', '/' + join(outside, 'secret.txt'), '/index.html/../../package.json',
        '/%2e%2e%2f%2e%2e%2fetc%2fpasswd', '/static/..%252f..%252fpackage.json', '/index.html%00', '/C:/Windows/win.ini', '/sub/style.css', '/secret.txt',
        '/%2fetc%2fpasswd', '/.%2e/package.json', '/app.js?x=../../package.json', '/web/app.js', '/..;/package.json']) {
        const r = await rawGet(srv.url, p);
        assert.ok([400, 401, 404].includes(r.status), `${p}: ${r.status}`);
        assert.doesNotMatch(r.text, /TOP-SECRET|"name": "seekd"|root:x:0/, p);
      }
    } finally {
      await srv.shutdown(500);
    }
  }
  rmSync(dir, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
});

test('tokenizer files resolve inside the model directory (symlinks out refused, symlinks within accepted)', () => {
  const f = buildTokenizerFiles(2048, 4096);
  const outside = mkdtempSync(join(tmpdir(), 'seekd-tok-out-'));
  const model = mkdtempSync(join(tmpdir(), 'seekd-tok-model-'));
  try {
    writeFileSync(join(outside, 'tokenizer.json'), JSON.stringify(f.tokenizerJson));
    writeFileSync(join(outside, 'tokenizer_config.json'), JSON.stringify(f.tokenizerConfig));
    symlinkSync(join(outside, 'tokenizer.json'), join(model, 'tokenizer.json'));
    writeFileSync(join(model, 'tokenizer_config.json'), JSON.stringify(f.tokenizerConfig));
    assert.throws(() => ChatTokenizer.load(model), (e: unknown) => e instanceof TokenizerLoadError && /outside the model directory/.test(e.message));
    rmSync(join(model, 'tokenizer.json'));
    mkdirSync(join(model, 'files'));
    writeFileSync(join(model, 'files', 'tokenizer.json'), JSON.stringify(f.tokenizerJson));
    symlinkSync(join(model, 'files', 'tokenizer.json'), join(model, 'tokenizer.json'));
    assert.equal(ChatTokenizer.load(model).vocabSize, 2048);
    for (const name of ['tokenizer_config.json', 'generation_config.json']) {
      rmSync(join(model, name), { force: true });
      symlinkSync(join(outside, 'tokenizer_config.json'), join(model, name));
      assert.throws(() => ChatTokenizer.load(model), (e: unknown) => e instanceof TokenizerLoadError && /outside the model directory/.test(e.message), name);
      rmSync(join(model, name));
    }
    writeFileSync(join(model, 'tokenizer_config.json'), JSON.stringify(f.tokenizerConfig));
    assert.ok(ChatTokenizer.load(model).hasChatTemplate);
  } finally {
    rmSync(outside, { recursive: true, force: true });
    rmSync(model, { recursive: true, force: true });
  }
});
