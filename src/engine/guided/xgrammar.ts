// Loads xgrammar's WebAssembly build (@mlc-ai/web-xgrammar 0.1.27) under Node's ESM loader. Its
// lib/index.js is a UMD bundle inside a "type": "module" package: imported as ESM it exports nothing and
// sets globalThis.xgrammar instead, and its Emscripten loader calls require('url') and reads __filename
// when there is no document. Both globals are provided before the import (and left in place: the
// loader reads them again when it instantiates the module).
import { createRequire } from 'node:module';
import type * as XG from '@mlc-ai/web-xgrammar';

export type Xgrammar = typeof XG;

let loading: Promise<Xgrammar> | null = null;

export function loadXgrammar(): Promise<Xgrammar> {
  loading ??= (async () => {
    const g = globalThis as Record<string, unknown>;
    const require = createRequire(import.meta.url);
    const file = require.resolve('@mlc-ai/web-xgrammar');
    g.require ??= require;
    g.__filename ??= file;
    if (!g.xgrammar) await import('@mlc-ai/web-xgrammar');
    const xg = g.xgrammar as Xgrammar | undefined;
    if (!xg?.GrammarCompiler) throw new Error('@mlc-ai/web-xgrammar did not load (globalThis.xgrammar is missing)');
    return xg;
  })();
  return loading;
}
