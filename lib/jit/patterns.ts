/**
 * Matching parameter names ('layer4.0.conv1.weight') against glob patterns ('layer4.**', 'fc.*'),
 * RegExps, or arrays of either. Globs go through picomatch with '.' as the path separator.
 */
import picomatch from 'picomatch';

/** A parameter selector: a glob over dotted names, a RegExp, or an array of either. */
export type NamePattern = string | RegExp | (string | RegExp)[];

/** Compiles `patterns` into a predicate over dotted names; undefined matches everything. */
export function nameMatcher(patterns: NamePattern | undefined, what: string): (name: string) => boolean {
  if (patterns === undefined) return () => true;
  const list = Array.isArray(patterns) ? patterns : [patterns];
  if (list.length === 0) throw new TypeError(`${what}: expected at least one pattern`);
  const tests = list.map((p) => {
    if (p instanceof RegExp) return (name: string) => { p.lastIndex = 0; return p.test(name); };
    if (typeof p !== 'string' || p === '') throw new TypeError(`${what}: patterns must be non-empty strings or RegExps, got ${String(p)}`);
    const m = picomatch(p.split('.').join('/'), { dot: true });
    return (name: string) => m(name.split('.').join('/'));
  });
  return (name) => tests.some((t) => t(name));
}
