/**
 * Matching parameter names ('layer4.0.conv1.weight') against glob patterns ('layer4.**', 'fc.*'),
 * RegExps, or arrays of either. Globs go through picomatch with '.' as the path separator.
 */
import picomatch from 'picomatch';

/** A parameter selector: a glob over dotted names, a RegExp, or an array of either. */
export type NamePattern = string | RegExp | (string | RegExp)[];

function compileList(patterns: NamePattern, what: string): { pattern: string | RegExp; test: (name: string) => boolean }[] {
  const list = Array.isArray(patterns) ? patterns : [patterns];
  if (list.length === 0) throw new TypeError(`${what}: expected at least one pattern`);
  return list.map((p) => {
    if (p instanceof RegExp) return { pattern: p, test: (name: string) => { p.lastIndex = 0; return p.test(name); } };
    if (typeof p !== 'string' || p === '') throw new TypeError(`${what}: patterns must be non-empty strings or RegExps, got ${String(p)}`);
    const m = picomatch(p.split('.').join('/'), { dot: true });
    return { pattern: p, test: (name: string) => m(name.split('.').join('/')) };
  });
}

/** Compiles `patterns` into a predicate over dotted names; undefined matches everything. */
export function nameMatcher(patterns: NamePattern | undefined, what: string): (name: string) => boolean {
  if (patterns === undefined) return () => true;
  const tests = compileList(patterns, what);
  return (name) => tests.some((t) => t.test(name));
}

/**
 * The patterns (in the order given) that match none of `names`: a typo in one entry of a list
 * would otherwise pass unnoticed behind the entries that do match.
 */
export function unmatchedPatterns(patterns: NamePattern, names: readonly string[], what: string): (string | RegExp)[] {
  return compileList(patterns, what).filter((t) => !names.some(t.test)).map((t) => t.pattern);
}
