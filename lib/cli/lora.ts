/** `finetune --lora r=8,alpha=16,targets=layer4.**`: the flag's parsing. */
import type { LoraOptions } from '../peft/lora';
import { parseNumber, UsageError } from './common';

/**
 * Parses `--lora`: comma-separated `key=value` pairs, `r` (or `rank`), `alpha`, `dropout` and
 * `targets` (required; several globs joined with '+': `targets=layer3.**+layer4.**`). Every
 * mistake is a UsageError that names the part that is wrong.
 *
 * @example
 * parseLoraFlag('r=8,alpha=16,targets=layer4.**'); // { rank: 8, alpha: 16, targets: ['layer4.**'] }
 */
export function parseLoraFlag(flag: string): Omit<LoraOptions, 'modulesToSave'> & { targets: string[] } {
  const out: { rank?: number; alpha?: number; dropout?: number; targets?: string[] } = {};
  for (const part of flag.split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq).trim();
    const value = eq < 0 ? '' : part.slice(eq + 1).trim();
    if (eq < 0 || value === '') throw new UsageError(`--lora: '${part}' must be key=value (keys: r, alpha, dropout, targets)`);
    if (key === 'r' || key === 'rank') out.rank = parseNumber(value, '--lora r', true, { atLeast: 1 });
    else if (key === 'alpha') out.alpha = parseNumber(value, '--lora alpha', false, { above: 0 });
    else if (key === 'dropout') {
      out.dropout = parseNumber(value, '--lora dropout');
      if (!(out.dropout >= 0 && out.dropout < 1)) throw new UsageError(`--lora dropout must be in [0, 1): got '${value}'`);
    } else if (key === 'targets') out.targets = value.split('+').map((s) => s.trim()).filter(Boolean);
    else throw new UsageError(`--lora: unknown key '${key}' (keys: r, alpha, dropout, targets)`);
  }
  if (!out.targets?.length) throw new UsageError(`--lora needs targets, e.g. --lora r=8,alpha=16,targets=layer4.**`);
  return { ...out, targets: out.targets };
}
