import { runOpSuite } from '../ops.test-suite.ts';

runOpSuite('ref');
