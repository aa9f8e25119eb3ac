// The list of subcommands. Add one line per command module.
import type { Command } from 'commander';
import { register as eplb } from './eplb.ts';

export type RegisterCommand = (program: Command) => void;

export const COMMANDS: RegisterCommand[] = [eplb];
