/**
 * Structural check of the pickles inside a TorchScript archive, done before libtorch reads them.
 *
 * Why: libtorch 1.13's unpickler trusts the opcode stream. A pickle whose bytes were damaged (and
 * whose zip CRC was rewritten to match, so the zip layer cannot tell) can make it read past the
 * end of its stack, e.g. `TUPLE1` on an empty stack, and that is a SIGSEGV, not an exception.
 * Python's own `pickletools` rules catch every such stream: this module runs the opcode stream
 * through a stack machine that tracks only how many items (and marks) there are and what kind of
 * thing each is, and rejects any stream that would pop what is not there, use a mark that was
 * never set, read a memo slot never written (or write one twice), or end without STOP. A valid
 * pickle always passes. (Unlike pickletools it does not decode text, which libtorch keeps as bytes.)
 * It never builds any value, so it cannot be made to allocate much or run anything.
 */

/** What the checker knows of one stack item. */
type Kind = 'mark' | 'tuple' | 'list' | 'dict' | 'global' | 'value';

/** A pickle that breaks the rules; the caller adds which entry it came from. */
export class PickleError extends Error {}

/** Opcodes whose argument is one line of text (GLOBAL, with two lines, reads its own). */
const LINE_ARG = new Set([0x70 /* p PUT */, 0x67 /* g GET */, 0x49 /* I INT */, 0x4c /* L LONG */, 0x46 /* F FLOAT */, 0x53 /* S STRING */, 0x50 /* P PERSID */, 0x56 /* V UNICODE */]);

/**
 * Checks one pickle (protocol 0-2 opcodes, the ones PyTorch's TorchScript writer uses, plus
 * the protocol 0/3/4 forms of the same operations).
 *
 * @param data the pickle's bytes
 * @throws PickleError saying which opcode at which offset breaks which rule
 * @example
 * checkPickle(Buffer.from([0x80, 0x02, 0x29, 0x2e])); // PROTO 2, EMPTY_TUPLE, STOP: fine
 * checkPickle(Buffer.from([0x80, 0x02, 0x85, 0x2e])); // throws: TUPLE1 needs 1 item, the stack has 0
 */
export function checkPickle(data: Uint8Array): void {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const stack: Kind[] = [];
  const memo = new Map<number, Kind>();
  let pos = 0;

  const fail = (at: number, op: number, why: string): never => {
    throw new PickleError(`pickle opcode 0x${op.toString(16).padStart(2, '0')} at byte ${at}: ${why}`);
  };
  const need = (at: number, op: number, n: number) => {
    if (pos + n > buf.length) fail(at, op, `needs ${n} argument bytes, only ${buf.length - pos} are left`);
    const start = pos;
    pos += n;
    return start;
  };
  const line = (at: number, op: number) => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) fail(at, op, 'its text argument has no end of line');
    const text = buf.toString('latin1', pos, end);
    pos = end + 1;
    return text;
  };
  /** Pops `n` items, none of which may be a mark. */
  const pop = (at: number, op: number, n: number): Kind[] => {
    if (stack.length < n) fail(at, op, `needs ${n} item${n === 1 ? '' : 's'} on the stack, there ${stack.length === 1 ? 'is' : 'are'} ${stack.length}`);
    const items = stack.splice(stack.length - n, n);
    if (items.includes('mark')) fail(at, op, 'would pop a MARK as a value');
    return items;
  };
  /** Pops everything down to and including the topmost mark; returns the items above it. */
  const popMark = (at: number, op: number): Kind[] => {
    const m = stack.lastIndexOf('mark');
    if (m < 0) fail(at, op, 'needs a MARK on the stack, there is none');
    const items = stack.slice(m + 1);
    stack.length = m;
    return items;
  };
  const top = (at: number, op: number): Kind => {
    if (stack.length === 0) fail(at, op, 'needs an item on the stack, it is empty');
    const k = stack[stack.length - 1];
    if (k === 'mark') fail(at, op, 'needs a value on top of the stack, found a MARK');
    return k;
  };
  const put = (at: number, op: number, id: number) => {
    // Ids are handed out one by one, so a valid id is below the number of bytes read so far.
    if (id > pos) fail(at, op, `memo id ${id} is out of range`);
    if (memo.has(id)) fail(at, op, `writes memo slot ${id} a second time`);
    memo.set(id, top(at, op));
  };
  const get = (at: number, op: number, id: number) => {
    const k = memo.get(id);
    if (k === undefined) fail(at, op, `reads memo slot ${id}, which was never written`);
    stack.push(k!);
  };
  const container = (at: number, op: number, want: Kind, below: Kind | undefined) => {
    if (below === undefined) fail(at, op, `needs a ${want} below the MARK, the stack is empty there`);
    if (below !== want && below !== 'value') fail(at, op, `needs a ${want} below the MARK, found a ${below}`);
  };

  for (;;) {
    if (pos >= buf.length) throw new PickleError('the pickle ends without a STOP opcode');
    const at = pos;
    const op = buf[pos++];
    const text = LINE_ARG.has(op) ? line(at, op) : '';
    switch (op) {
      case 0x80: need(at, op, 1); break; // PROTO
      case 0x95: need(at, op, 8); break; // FRAME
      case 0x2e: { // STOP
        if (stack.length !== 1 || stack[0] === 'mark') fail(at, op, `STOP needs exactly one value on the stack, there ${stack.length === 1 ? 'is a MARK' : `are ${stack.length} items`}`);
        return;
      }
      case 0x28: stack.push('mark'); break; // MARK
      case 0x31: popMark(at, op); break; // POP_MARK
      case 0x30: pop(at, op, 1); break; // POP
      case 0x32: stack.push(top(at, op)); break; // DUP
      // literals
      case 0x4e: case 0x88: case 0x89: stack.push('value'); break; // NONE NEWTRUE NEWFALSE
      case 0x4a: need(at, op, 4); stack.push('value'); break; // BININT
      case 0x4b: need(at, op, 1); stack.push('value'); break; // BININT1
      case 0x4d: need(at, op, 2); stack.push('value'); break; // BININT2
      case 0x47: need(at, op, 8); stack.push('value'); break; // BINFLOAT
      case 0x8a: { // LONG1
        const n = buf[need(at, op, 1)];
        if (n > 8) fail(at, op, `a ${n}-byte integer does not fit 64 bits`);
        need(at, op, n);
        stack.push('value');
        break;
      }
      case 0x8b: { // LONG4
        const n = buf.readUInt32LE(need(at, op, 4));
        if (n > 8) fail(at, op, `a ${n}-byte integer does not fit 64 bits`);
        need(at, op, n);
        stack.push('value');
        break;
      }
      case 0x58: case 0x54: case 0x42: // BINUNICODE BINSTRING BINBYTES: 4-byte length
        need(at, op, buf.readUInt32LE(need(at, op, 4)));
        stack.push('value');
        break;
      case 0x8c: case 0x55: case 0x43: // SHORT_BINUNICODE SHORT_BINSTRING SHORT_BINBYTES: 1-byte length
        need(at, op, buf[need(at, op, 1)]);
        stack.push('value');
        break;
      case 0x8d: case 0x8e: { // BINUNICODE8 BINBYTES8
        const n = Number(buf.readBigUInt64LE(need(at, op, 8)));
        need(at, op, n);
        stack.push('value');
        break;
      }
      case 0x49: case 0x4c: case 0x46: case 0x53: case 0x56: stack.push('value'); break; // INT LONG FLOAT STRING UNICODE (text)
      // containers
      case 0x29: stack.push('tuple'); break; // EMPTY_TUPLE
      case 0x85: pop(at, op, 1); stack.push('tuple'); break; // TUPLE1
      case 0x86: pop(at, op, 2); stack.push('tuple'); break; // TUPLE2
      case 0x87: pop(at, op, 3); stack.push('tuple'); break; // TUPLE3
      case 0x74: popMark(at, op); stack.push('tuple'); break; // TUPLE
      case 0x5d: stack.push('list'); break; // EMPTY_LIST
      case 0x6c: popMark(at, op); stack.push('list'); break; // LIST
      case 0x7d: stack.push('dict'); break; // EMPTY_DICT
      case 0x64: { // DICT
        if (popMark(at, op).length % 2 !== 0) fail(at, op, 'needs key/value pairs, found an odd number of items');
        stack.push('dict');
        break;
      }
      case 0x61: { // APPEND
        pop(at, op, 1);
        container(at, op, 'list', top(at, op));
        break;
      }
      case 0x65: { // APPENDS
        popMark(at, op);
        container(at, op, 'list', stack.length > 0 ? top(at, op) : undefined);
        break;
      }
      case 0x73: { // SETITEM
        pop(at, op, 2);
        container(at, op, 'dict', top(at, op));
        break;
      }
      case 0x75: { // SETITEMS
        if (popMark(at, op).length % 2 !== 0) fail(at, op, 'needs key/value pairs, found an odd number of items');
        container(at, op, 'dict', stack.length > 0 ? top(at, op) : undefined);
        break;
      }
      // memo
      case 0x71: put(at, op, buf[need(at, op, 1)]); break; // BINPUT
      case 0x72: put(at, op, buf.readUInt32LE(need(at, op, 4))); break; // LONG_BINPUT
      case 0x94: put(at, op, memo.size); break; // MEMOIZE
      case 0x68: get(at, op, buf[need(at, op, 1)]); break; // BINGET
      case 0x6a: get(at, op, buf.readUInt32LE(need(at, op, 4))); break; // LONG_BINGET
      case 0x70: case 0x67: { // PUT GET (text ids)
        if (!/^\d+$/.test(text)) fail(at, op, `memo id '${text}' is not a number`);
        if (op === 0x70) put(at, op, Number(text));
        else get(at, op, Number(text));
        break;
      }
      // objects
      case 0x63: { // GLOBAL module\nname\n
        const module = line(at, op);
        const name = line(at, op);
        if (!module || !name) fail(at, op, 'GLOBAL needs a module and a name');
        stack.push('global');
        break;
      }
      case 0x93: { // STACK_GLOBAL
        pop(at, op, 2);
        stack.push('global');
        break;
      }
      case 0x52: { // REDUCE: callable, args tuple
        const [fn, args] = pop(at, op, 2);
        if (fn !== 'global' && fn !== 'value') fail(at, op, `REDUCE needs a callable, found a ${fn}`);
        if (args !== 'tuple' && args !== 'value') fail(at, op, `REDUCE needs an argument tuple, found a ${args}`);
        stack.push('value');
        break;
      }
      case 0x81: { // NEWOBJ: class, args tuple
        const [cls, args] = pop(at, op, 2);
        if (cls !== 'global' && cls !== 'value') fail(at, op, `NEWOBJ needs a class, found a ${cls}`);
        if (args !== 'tuple' && args !== 'value') fail(at, op, `NEWOBJ needs an argument tuple, found a ${args}`);
        stack.push('global'); // libtorch keeps the class on the stack until BUILD
        break;
      }
      case 0x62: { // BUILD: object, state
        pop(at, op, 1);
        top(at, op);
        stack[stack.length - 1] = 'value';
        break;
      }
      case 0x51: pop(at, op, 1); stack.push('value'); break; // BINPERSID
      case 0x50: stack.push('value'); break; // PERSID (text)
      default:
        fail(at, op, 'is not an opcode a TorchScript pickle uses');
    }
  }
}
