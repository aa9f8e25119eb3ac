// Registers the `ref` backend (plain TypeScript, single thread). Importing this module is enough.
import { registerBackend } from '../api.ts';
import { refOps } from './ops.ts';

registerBackend({
  name: 'ref',
  async create() {
    return { ...refOps };
  },
});

export { refOps };
