/**
 * The one JSON parser for request bodies: RFC 8259 grammar (JSON.parse), plus what JSON.parse lets through
 * silently and the broker refuses: duplicate member names at any depth (RFC 8259 §4 leaves their meaning
 * undefined; JSON.parse keeps the last one, another parser the first) and nesting deeper than a fixed bound.
 * Member names are compared after unescaping (`"a"` and `"\u0061"` are the same name).
 */

export const MAX_JSON_DEPTH = 32;

export type StrictJsonFailure =
  { readonly kind: 'syntax' } | { readonly kind: 'duplicate'; readonly path: string } | { readonly kind: 'too_deep' };

export class StrictJsonError extends Error {
  constructor(readonly failure: StrictJsonFailure) {
    super(
      failure.kind === 'duplicate'
        ? `duplicate member ${failure.path}`
        : failure.kind === 'too_deep'
          ? 'nested too deeply'
          : 'not valid JSON',
    );
    this.name = 'StrictJsonError';
  }
}

interface Frame {
  readonly kind: 'object' | 'array';
  readonly path: string;
  readonly names: Set<string>;
  expectName: boolean;
}

/** Parse `text` as JSON; throws StrictJsonError on bad syntax, a duplicate member name or excessive nesting. */
export function parseStrictJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new StrictJsonError({ kind: 'syntax' });
  }
  checkMembers(text);
  return value;
}

/** Walk text already known to be valid JSON, tracking member names per object. */
function checkMembers(text: string): void {
  const stack: Frame[] = [];
  let lastName = '';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      // The closing quote: the next one not escaped (preceded by an even number of backslashes); native search.
      let j = text.indexOf('"', i + 1);
      for (;;) {
        let k = j - 1;
        while (text.charCodeAt(k) === 0x5c /* \ */) k--;
        if ((j - 1 - k) % 2 === 0) break;
        j = text.indexOf('"', j + 1);
      }
      const top = stack[stack.length - 1];
      if (top && top.kind === 'object' && top.expectName) {
        const name = JSON.parse(text.slice(i, j + 1)) as string;
        const path = top.path ? `${top.path}.${name}` : name;
        if (top.names.has(name)) throw new StrictJsonError({ kind: 'duplicate', path });
        top.names.add(name);
        top.expectName = false;
        lastName = path;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (stack.length >= MAX_JSON_DEPTH) throw new StrictJsonError({ kind: 'too_deep' });
      const parent = stack[stack.length - 1];
      const path = parent === undefined ? '' : parent.kind === 'object' ? lastName : `${parent.path}[]`;
      stack.push({ kind: c === 0x7b ? 'object' : 'array', path, names: new Set(), expectName: c === 0x7b });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top && top.kind === 'object') top.expectName = true;
    }
  }
}
