/**
 * The checks jit.load runs on an archive's contents after the zip layer and before libtorch:
 * pickles (lib/jit/pickle.ts, a stack machine over the opcode stream) and class bodies of the code
 * entries (native/code_check.cc, libtorch's own parser). Both exist because libtorch 1.13 dies by
 * SIGSEGV, instead of throwing, on such damage once the zip CRC has been rewritten to match it.
 *
 * Real inputs: archives written by real PyTorch (models with every attribute kind, NamedTuple,
 * Enum, hooks), pickles written by Python's pickle module in protocols 0-4, and Python's
 * pickletools as the reference for which damaged streams are broken.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import { checkArchive, readEntry } from '../lib/jit/archive';
import { checkPickle, PickleError } from '../lib/jit/pickle';
import { Rng } from '../lib/data';
import { runPython, scratchDir } from './helpers/python';

let tmp: string;

// Archives with much in their pickles and class bodies, written by torch.jit.save; plus a copy of
// each with one class-body line damaged the way the fuzzer found (__buffers__ -> __beffers__), the
// zip rewritten by Python's zipfile so every CRC matches; plus plain pickles in every protocol.
const MAKE = `
import enum, json, os, pickle, sys, zipfile, torch
from typing import Dict, List, NamedTuple, Optional, Tuple
d = sys.argv[1]

class Color(enum.Enum):
    RED = 1
    GREEN = 2

class Out(NamedTuple):
    logits: torch.Tensor
    scale: float

class Rich(torch.nn.Module):
    limit: torch.jit.Final[int]
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.bn = torch.nn.BatchNorm1d(3)
        self.names: List[str] = ['a', 'b', 'c']
        self.table: Dict[str, float] = {'x': 1.5, 'y': -2.0}
        self.pair: Tuple[int, str] = (7, 'seven')
        self.maybe: Optional[torch.Tensor] = None
        self.flag = True
        self.limit = 3
        self.register_buffer('steps', torch.zeros(2, dtype=torch.int64))
        self.color = Color.RED
    def forward(self, x: torch.Tensor) -> Out:
        y = self.bn(self.lin(x))
        c = Color.GREEN
        s = self.table['x'] + float(self.pair[0]) + float(len(self.names))
        if c == Color.GREEN and self.flag and self.color == Color.RED:
            s = s + 1.0
        return Out(y, s)

torch.manual_seed(0)
rich = torch.jit.script(Rich()).eval()
def double(self, input: Tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
    return output * 2
hooked = torch.nn.Linear(4, 2)
hooked.register_forward_hook(double)
hooked = torch.jit.script(hooked)
for name, m in [('rich.pt', rich), ('hooked.pt', hooked)]:
    torch.jit.save(m, os.path.join(d, name))

def damage(src, dst, old, new):
    with zipfile.ZipFile(os.path.join(d, src)) as z, zipfile.ZipFile(os.path.join(d, dst), 'w') as out:
        hit = None
        for info in z.infolist():
            data = z.read(info)
            if hit is None and info.filename.endswith('.py') and old in data:
                data = data.replace(old, new, 1)
                hit = info.filename
            out.writestr(info.filename, data)
    assert hit, (src, old)
    return hit
hits = {
  'beffers.pt': damage('rich.pt', 'beffers.pt', b'__buffers__ = [', b'__beffers__ = ['),
  'params.pt': damage('rich.pt', 'params.pt', b'__parameters__ = [', b'__xarameters__ = ['),
}

x = torch.randn(5, 4)
out = rich(x)
json.dump({'hits': hits, 'x': x.tolist(), 'logits': out.logits.tolist(), 'scale': out.scale}, open(os.path.join(d, 'rich.json'), 'w'))

values = [None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1, 2**62, -2**63, 1.5, -0.0,
          float('inf'), 'text', 'ünïcode', b'bytes', (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, [2, [3]]],
          {}, {'a': 1, 'b': [1, 2]}, {1: (2, 3)}, 'x' * 300, b'y' * 300]
shared = [1, 2]
values.append([shared, shared, {'again': shared}])
for proto in range(5):
    with open(os.path.join(d, f'plain-{proto}.pkl'), 'wb') as f:
        pickle.dump(values, f, protocol=proto)
`;

// Reads the pickles named on the command line and prints, for each, whether pickletools finds
// its structure broken (its disassembler checks stack depth, marks, memo and STOP as it goes).
// Text it cannot decode (UTF-8, decimal literals) is not structure: libtorch keeps such bytes.
const PICKLETOOLS = `
import io, json, pickletools, sys
out = []
for f in sys.argv[1:]:
    try:
        pickletools.dis(open(f, 'rb').read(), out=io.StringIO())
        out.append('ok')
    except UnicodeDecodeError:
        out.append('text')
    except ValueError as e:
        out.append('text' if 'invalid literal' in str(e) else 'broken')
    except Exception:
        out.append('broken')
print(json.dumps(out))
`;

interface Made { hits: Record<string, string>; x: number[][]; logits: number[][]; scale: number }
let made: Made;

beforeAll(() => {
  tmp = scratchDir('jit-contents');
  runPython(MAKE, undefined, [tmp]);
  made = JSON.parse(fs.readFileSync(path.join(tmp, 'rich.json'), 'utf8')) as Made;
}, 120_000);

afterAll(() => {
  if (tmp && !process.env.FINETORCH_KEEP_MUTANTS) fs.rmSync(tmp, { recursive: true, force: true });
});

/** Every pickle entry of an archive: [name, bytes]. */
function pickles(file: string): [string, Buffer][] {
  const buf = fs.readFileSync(file);
  return checkArchive(buf, file)
    .filter((e) => /(\.|_)pkl$/.test(e.name))
    .map((e) => [e.name, Buffer.from(readEntry(buf, e))]);
}

describe('checkPickle', () => {
  test('accepts every pickle PyTorch writes into an archive (data, constants, debug info)', () => {
    const all = [...pickles(path.join(tmp, 'rich.pt')), ...pickles(path.join(tmp, 'hooked.pt'))];
    expect(all.some(([n]) => n.endsWith('/data.pkl'))).toBe(true);
    expect(all.some(([n]) => n.endsWith('/constants.pkl'))).toBe(true);
    expect(all.some(([n]) => n.endsWith('.debug_pkl'))).toBe(true);
    for (const [name, data] of all) {
      try {
        checkPickle(data);
      } catch (err) {
        throw new Error(`${name}: ${(err as Error).message}`);
      }
    }
  });

  test('accepts what Python pickle writes in protocols 0 to 4', () => {
    for (let proto = 0; proto <= 4; proto++) {
      expect(() => checkPickle(fs.readFileSync(path.join(tmp, `plain-${proto}.pkl`)))).not.toThrow();
    }
  });

  test.each([
    ['TUPLE1 on an empty stack', [0x80, 2, 0x85, 0x2e], /0x85 at byte 2: needs 1 item on the stack, there are 0/],
    ['TUPLE3 with two items', [0x80, 2, 0x4e, 0x4e, 0x87, 0x2e], /0x87 at byte 4: needs 3 items on the stack, there are 2/],
    ['TUPLE without a MARK', [0x80, 2, 0x4e, 0x74, 0x2e], /0x74 at byte 3: needs a MARK on the stack, there is none/],
    ['POP of a MARK', [0x80, 2, 0x28, 0x30, 0x4e, 0x2e], /0x30 at byte 3: would pop a MARK as a value/],
    ['SETITEMS with an odd count', [0x80, 2, 0x7d, 0x28, 0x4e, 0x75, 0x2e], /0x75 at byte 5: needs key\/value pairs/],
    ['APPENDS onto a dict', [0x80, 2, 0x7d, 0x28, 0x4e, 0x65, 0x2e], /0x65 at byte 5: needs a list below the MARK, found a dict/],
    ['APPENDS with nothing below the MARK', [0x80, 2, 0x28, 0x4e, 0x65, 0x2e], /0x65 at byte 4: needs a list below the MARK, the stack is empty there/],
    ['BINGET of a slot never written', [0x80, 2, 0x4e, 0x71, 0, 0x68, 1, 0x2e], /0x68 at byte 5: reads memo slot 1, which was never written/],
    ['BINPUT on an empty stack', [0x80, 2, 0x71, 0, 0x4e, 0x2e], /0x71 at byte 2: needs an item on the stack, it is empty/],
    ['REDUCE on a list', [0x80, 2, 0x5d, 0x29, 0x52, 0x2e], /0x52 at byte 4: REDUCE needs a callable, found a list/],
    ['BUILD with one item', [0x80, 2, 0x4e, 0x62, 0x2e], /0x62 at byte 3: needs an item on the stack, it is empty/],
    ['STOP with two items', [0x80, 2, 0x4e, 0x4e, 0x2e], /0x2e at byte 4: STOP needs exactly one value on the stack, there are 2 items/],
    ['STOP on a MARK', [0x80, 2, 0x28, 0x2e], /STOP needs exactly one value on the stack, there is a MARK/],
    ['no STOP', [0x80, 2, 0x4e], /ends without a STOP opcode/],
    ['a string longer than the pickle', [0x80, 2, 0x58, 0xff, 0xff, 0xff, 0x7f, 0x61, 0x2e], /0x58 at byte 2: needs 2147483647 argument bytes, only 2 are left/],
    ['a 9-byte integer', [0x80, 2, 0x8a, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x2e], /0x8a at byte 2: a 9-byte integer does not fit 64 bits/],
    ['a memo slot written twice', [0x80, 2, 0x4e, 0x71, 0, 0x71, 0, 0x2e], /0x71 at byte 5: writes memo slot 0 a second time/],
    ['a huge memo id', [0x80, 2, 0x4e, 0x72, 0xff, 0xff, 0xff, 0x7f, 0x2e], /memo id 2147483647 is out of range/],
    ['an unknown opcode', [0x80, 2, 0xff, 0x2e], /0xff at byte 2: is not an opcode a TorchScript pickle uses/],
    ['GLOBAL without an end of line', [0x80, 2, 0x63, 0x61, 0x0a, 0x62], /0x63 at byte 2: its text argument has no end of line/],
  ])('rejects %s', (_name, bytes, message) => {
    expect(() => checkPickle(Buffer.from(bytes))).toThrow(PickleError);
    expect(() => checkPickle(Buffer.from(bytes))).toThrow(message);
  });

  test('never accepts a damaged pickle that pickletools finds broken (800 seeded mutants of a real data.pkl)', () => {
    const data = pickles(path.join(tmp, 'rich.pt')).find(([n]) => n.endsWith('/data.pkl'))![1];
    const rng = new Rng(7);
    const dir = path.join(tmp, 'mutants');
    fs.mkdirSync(dir, { recursive: true });
    if (process.env.FINETORCH_KEEP_MUTANTS) process.stdout.write(`mutants in ${dir}\n`);
    const files: string[] = [];
    const ours: boolean[] = [];
    for (let i = 0; i < 800; i++) {
      const b = Buffer.from(data);
      const kind = i % 4;
      const at = Math.floor(rng.random() * b.length);
      if (kind === 0) b[at] = Math.floor(rng.random() * 256); // one byte anything
      else if (kind === 1) b[at] ^= 1 << Math.floor(rng.random() * 8); // one bit
      else if (kind === 2) { const j = Math.min(b.length - 1, at + 1); [b[at], b[j]] = [b[j], b[at]]; } // swap neighbours
      const m = kind === 3 ? b.subarray(0, at) : b; // truncated
      const file = path.join(dir, `${i}.pkl`);
      fs.writeFileSync(file, m);
      files.push(file);
      let ok = true;
      try {
        checkPickle(m);
      } catch (err) {
        expect(err).toBeInstanceOf(PickleError);
        ok = false;
      }
      ours.push(ok);
    }
    const reference = JSON.parse(runPython(PICKLETOOLS, undefined, files)) as ('ok' | 'text' | 'broken')[];
    const acceptedButBroken = files.filter((f, i) => ours[i] && reference[i] === 'broken').map((f) => path.basename(f));
    expect(acceptedButBroken).toEqual([]);
    // and the check is not just rejecting everything: many mutants (changed literal bytes) stay valid
    expect(ours.filter(Boolean).length).toBeGreaterThan(100);
    expect(ours.filter((x) => !x).length).toBeGreaterThan(100);
    // what pickletools reads cleanly we accept too, with one rule of ours on top (REDUCE, NEWOBJ and
    // the containers' targets must be of the right kind), so nearly all of it
    const rejectedButOk = files.filter((f, i) => !ours[i] && reference[i] === 'ok').length;
    expect(rejectedButOk).toBeLessThan(files.filter((f, i) => reference[i] === 'ok').length / 10);
  });
});

describe('class body check (native, libtorch parser)', () => {
  test('a rich model (Final, NamedTuple, Enum, containers) and a hooked one load and match PyTorch', async () => {
    // the archive really holds the class kinds the check treats apart
    const buf = fs.readFileSync(path.join(tmp, 'rich.pt'));
    const code = checkArchive(buf, 'rich.pt').filter((e) => e.name.endsWith('.py')).map((e) => readEntry(buf, e).toString('utf8')).join('\n');
    for (const kind of ['(Module):', '(Enum):', '(NamedTuple):', ': Final[int] = 3']) expect(code).toContain(kind);
    const rich = await torch.jit.load(path.join(tmp, 'rich.pt'));
    try {
      const out = (await rich.forward(torch.tensor(made.x))) as torch.Tensor[];
      const [logits, scale] = out as unknown as [torch.Tensor, number];
      const got = (await logits.tolist()) as number[][];
      got.flat().forEach((v, i) => expect(v).toBeCloseTo(made.logits.flat()[i], 5));
      expect(scale).toBeCloseTo(made.scale, 6);
    } finally {
      rich.dispose();
    }
    const hooked = await torch.jit.load(path.join(tmp, 'hooked.pt'));
    hooked.dispose();
  });

  test.each([
    ['beffers.pt', "__beffers__"],
    ['params.pt', "__xarameters__"],
  ])('%s (a special name damaged, CRC repaired) is an Error naming entry, line and name; the process lives', async (file, name) => {
    const full = path.join(tmp, file);
    expect(() => checkArchive(fs.readFileSync(full), file)).not.toThrow(); // the zip layer cannot see it
    const err = await torch.jit.load(full).then(() => null, (e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    const entry = made.hits[file].replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    expect(err!.message).toMatch(new RegExp(`not a loadable TorchScript model: ${entry} line \\d+: class \\w+ assigns '${name}' a value without a type`));
    // the same bytes as a Buffer take the same path
    await expect(torch.jit.load(fs.readFileSync(full))).rejects.toThrow(`assigns '${name}' a value without a type`);
    const ok = await torch.jit.load(path.join(tmp, 'hooked.pt'));
    ok.dispose();
  });
});
