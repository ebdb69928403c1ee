// The benchmarks' command lines: node's util.parseArgs (`--steps 20` or `--steps=20`), integers
// checked, `--help` printing the usage line, option names camelCased (`--same-malloc` -> sameMalloc).
'use strict';
const util = require('util');

/**
 * @param {string[]} argv the arguments after the script's name
 * @param {Record<string, { type: 'int' | 'ints' | 'list' | 'flag', default?: unknown, min?: number }>} spec
 *   int: an integer >= min (default 1); ints: a comma-separated list of them; list: comma-separated words
 * @param {string} usage printed by --help
 * @returns {Record<string, unknown>}
 */
function benchOptions(argv, spec, usage) {
  const options = { help: { type: 'boolean', short: 'h' } };
  for (const [name, s] of Object.entries(spec)) options[name] = { type: s.type === 'flag' ? 'boolean' : 'string' };
  let values;
  try {
    ({ values } = util.parseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (e) {
    throw new Error(`${e.message} (usage: ${usage})`);
  }
  if (values.help) {
    console.log(`usage: ${usage}`);
    process.exit(0);
  }
  const integer = (v, name, min) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
    return n;
  };
  const out = {};
  for (const [name, s] of Object.entries(spec)) {
    const key = name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const v = values[name];
    const min = s.min ?? 1;
    if (v === undefined) out[key] = s.type === 'flag' ? false : s.default;
    else if (s.type === 'int') out[key] = integer(v, name, min);
    else if (s.type === 'ints') out[key] = v.split(',').filter(Boolean).map((x) => integer(x, name, min));
    else if (s.type === 'list') out[key] = v.split(',').filter(Boolean);
    else out[key] = v;
  }
  return out;
}

module.exports = { benchOptions };
