// The list of subcommands. Add one line per command module.
import type { Command } from 'commander';
import { register as bench } from './bench.ts';
import { register as dualpipe } from './dualpipe.ts';
import { register as eplb } from './eplb.ts';
import { register as generate } from './generate.ts';
import { register as info } from './info.ts';
import { register as makeCheckpoint } from './make-checkpoint.ts';
import { register as perplexity } from './perplexity.ts';
import { register as prepareData } from './prepare-data.ts';
import { register as quantize } from './quantize.ts';
import { register as run } from './run.ts';
import { register as score } from './score.ts';
import { register as serve } from './serve.ts';
import { register as train } from './train.ts';

export type RegisterCommand = (program: Command) => void;

export const COMMANDS: RegisterCommand[] = [bench, dualpipe, eplb, generate, info, makeCheckpoint, perplexity, prepareData, quantize, run, score, serve, train];
