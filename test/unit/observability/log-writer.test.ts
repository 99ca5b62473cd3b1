import { spawn, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { createLogger, LineWriter, redact, redactString, type LogRecord } from '../../../shared/observability/log';

/**
 * The buffered log writer: one write per event-loop turn instead of one per line, and never a lost line
 * (error lines at once, a size bound, a synchronous flush on exit, after an uncaught exception too).
 */

const ROOT = resolve(__dirname, '..', '..', '..');
const TS_HOOK = `
  const ts = require('typescript'); const fs = require('fs');
  require.extensions['.ts'] = (m, f) => m._compile(ts.transpileModule(fs.readFileSync(f, 'utf8'), { fileName: f, compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } }).outputText, f);`;

function writer(maxBytes?: number) {
  const writes: string[] = [];
  const syncWrites: string[] = [];
  const w = new LineWriter(
    (t) => writes.push(t),
    (t) => syncWrites.push(t),
    maxBytes,
  );
  return { w, writes, syncWrites };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('LineWriter', () => {
  it('writes the lines of one turn with one write, in order, on the next turn', async () => {
    const { w, writes } = writer();
    w.line('a\n');
    w.line('b\n');
    w.line('c\n');
    expect(writes).toEqual([]);
    expect(w.pending).toBe(3);
    await tick();
    expect(writes).toEqual(['a\nb\nc\n']);
    w.line('d\n');
    await tick();
    expect(writes).toEqual(['a\nb\nc\n', 'd\n']);
  });

  it('an urgent (error) line flushes everything before it at once', () => {
    const { w, writes } = writer();
    w.line('info\n');
    w.line('error\n', true);
    expect(writes).toEqual(['info\nerror\n']);
    expect(w.pending).toBe(0);
  });

  it('flushes when the buffer passes its size bound', () => {
    const { w, writes } = writer(10);
    w.line('12345\n');
    expect(writes).toEqual([]);
    w.line('67890\n');
    expect(writes).toEqual(['12345\n67890\n']);
  });

  it('flushSync writes what is left synchronously, and nothing twice', async () => {
    const { w, writes, syncWrites } = writer();
    w.line('x\n');
    w.flushSync();
    expect(syncWrites).toEqual(['x\n']);
    await tick();
    expect(writes).toEqual([]);
    w.flushSync();
    expect(syncWrites).toEqual(['x\n']);
  });
});

describe('in a fresh process, stdout to a pipe', () => {
  const run = (body: string) =>
    spawnSync(
      process.execPath,
      [
        '-e',
        `${TS_HOOK}\nconst { createLogger } = require('./shared/observability/log.ts');\nconst log = createLogger({ correlationId: 'c-1' });\n${body}`,
      ],
      {
        cwd: ROOT,
        env: { ...process.env, LOG_LEVEL: 'info' },
        encoding: 'utf8',
        timeout: 30_000,
      },
    );
  const lines = (out: string) =>
    out
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { msg: string; n?: number });

  it('a stdout line is, byte for byte, JSON.stringify of the record {ts, level, msg, ...base, ...redacted fields}', () => {
    const jwt = 'eyJhbGciOi.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';
    const base = { correlationId: 'c-1', fn: 'query', invocationId: undefined };
    const cases: [string, string, Record<string, unknown> | undefined, Record<string, unknown>][] = [
      ['info', 'plain', { a: 1, nested: { b: [1, 'x', null] }, u: undefined, s: 'quote " and \\ and \u2028' }, base],
      ['info', `msg with ${jwt}`, { authorization: 'Bearer abcdefgh12345678', s: `a ${jwt} b`, list: [jwt] }, base],
      ['info', 'replaces a base member', { correlationId: 'c-2', fn: 'other' }, base],
      ['info', 'replaces ts and msg', { ts: 'x', msg: 'y', level: 'z' }, base],
      ['info', 'integer-like keys', { 2: 'two', 10: 'ten', b: 1 }, base],
      ['info', 'no fields', undefined, base],
      ['warn', 'empty fields', {}, base],
      ['info', 'empty base', { k: 'v' }, {}],
      ['info', 'empty both', undefined, {}],
      ['error', 'error line', { code: 'x', n: 1.5 }, base],
      ['info', 'a base with ts', { k: 'v' }, { ts: 'base-ts', a: 1 }],
    ];
    const body = cases
      .map(
        ([level, msg, fields, b]) =>
          `createLogger(${JSON.stringify(b)}).${level}(${JSON.stringify(msg)}, ${JSON.stringify(fields) ?? 'undefined'});`,
      )
      .join('\n');
    const r = run(body);
    const out = r.stdout.split('\n').filter(Boolean);
    expect(out).toHaveLength(cases.length);
    out.forEach((line, i) => {
      const [level, msg, fields, b] = cases[i]!;
      const { ts } = JSON.parse(line) as { ts: string };
      // the record as the sink path builds it (JSON.stringify drops `undefined` members in the child as here)
      const record = {
        ts,
        level,
        msg: redactString(msg),
        ...(redact(JSON.parse(JSON.stringify(b))) as object),
        ...(fields ? (redact(JSON.parse(JSON.stringify(fields))) as object) : undefined),
      };
      expect(line).toBe(JSON.stringify(record));
      expect(line).not.toContain(jwt);
    });
  });

  it('with values JSON cannot carry (frozen shared objects, undefined, NaN, -0, dates, functions, odd strings) too', () => {
    // Built and checked in the child: each line against JSON.stringify of its record (ts taken from the line).
    const r = run(`
      const { redact, redactString } = require('./shared/observability/log.ts');
      const who = Object.freeze({ tenantId: 't', objectId: 'o' });
      const cases = [
        { subject: who, client: who, n: 1 },
        { subject: who, again: who, nan: NaN, inf: -Infinity, negZero: -0, big: 1e21, small: 1.5e-7 },
        { when: new Date(0), fn: () => 1, sym: Symbol('s'), u: undefined, nul: null, yes: true, no: false },
        { s1: 'caf\\u00e9 \\u2028 \\ud800 lone', s2: 'tab\\tnew\\nline', s3: '"quoted" back\\\\slash', s4: '' },
        { arr: [1, undefined, who, () => 2], nested: { who, list: [who] }, withToJSON: { toJSON: () => 'custom' } },
      ];
      for (const fields of cases) {
        const base = { correlationId: 'c-9', fn: 'f' };
        createLogger(base).info('m', fields);
        const record = { ts: 'TS', level: 'info', msg: redactString('m'), ...redact(base), ...redact(fields) };
        process.stderr.write(JSON.stringify(record) + '\\n');
      }
    `);
    const out = r.stdout.split('\n').filter(Boolean);
    const expected = r.stderr.split('\n').filter((l) => l.startsWith('{'));
    expect(r.stderr.split('\n').filter((l) => !l.startsWith('{') && l.trim() !== '')).toEqual([]);
    expect(out).toHaveLength(5);
    expect(expected).toHaveLength(5);
    out.forEach((line, i) => {
      const { ts } = JSON.parse(line) as { ts: string };
      expect(line).toBe(expected[i]!.replace('"ts":"TS"', `"ts":"${ts}"`));
    });
  });

  it('no line is lost on process.exit right after logging', () => {
    const r = run(`for (let i = 0; i < 5000; i++) log.info('line', { n: i }); process.exit(0);`);
    const got = lines(r.stdout);
    expect(got).toHaveLength(5000);
    expect(got.map((l) => l.n)).toEqual(Array.from({ length: 5000 }, (_, i) => i));
  });

  it('no line is lost when the process dies of an uncaught exception', () => {
    const r = run(`log.info('before the crash'); setImmediate(() => {}); throw new Error('boom');`);
    expect(r.status).not.toBe(0);
    expect(lines(r.stdout).map((l) => l.msg)).toEqual(['before the crash']);
  });

  it('lines logged across turns all arrive, in order, on a normal exit', () => {
    const r = run(
      `let i = 0; const t = setInterval(() => { log.info('tick', { n: i++ }); if (i === 20) clearInterval(t); }, 1);`,
    );
    expect(lines(r.stdout).map((l) => l.n)).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });
});

describe('in a fresh process, stdout to a pipe its reader is slow to drain', () => {
  // The pipe (64 KiB) fills while the reader sleeps, so writes to the non-blocking stdout cannot complete at once.
  // Were the per-turn batch queued by process.stdout.write, the exit flush's synchronous write would overtake the
  // queued remainder: lines out of order, one cut in two (seen once in CI before the batch went to fd 1 too).
  it('every line arrives whole and in order when the process exits with lines still pending', async () => {
    const child = spawn(
      process.execPath,
      [
        '-e',
        `${TS_HOOK}
const { createLogger } = require('./shared/observability/log.ts');
const log = createLogger({ correlationId: 'c-1' });
const pad = 'x'.repeat(400);
let turn = 0;
const next = () => {
  for (let i = 0; i < 200; i++) log.info('line', { n: turn * 200 + i, pad });
  if (++turn < 10) setImmediate(next);
  else { for (let i = 0; i < 200; i++) log.info('line', { n: turn * 200 + i, pad }); process.exit(0); }
};
next();`,
      ],
      { cwd: ROOT, env: { ...process.env, LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    child.stdout.pause();
    await new Promise((r) => setTimeout(r, 1_500));
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stdout.resume();
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000); // a writer that stalls fails, not hangs
    const code = await new Promise<number | null>((r) => child.once('close', r));
    clearTimeout(killer);
    expect(code).toBe(0);
    const out = Buffer.concat(chunks).toString('utf8');
    const got = out
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { n: number }).n);
    expect(got).toEqual(Array.from({ length: 2200 }, (_, i) => i));
  }, 30_000);
});

describe('redactString skips strings without a secret marker, and still redacts every shape', () => {
  it.each([
    ['a JWT', 'eyJhbGciOi.eyJzdWIiOiJ4In0.c2lnbmF0dXJl'],
    ['a Google token', 'ya29.a0AfH6SMBx'],
    ['a PEM key', '-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----'],
    ['a Cosmos auth header', 'type=resource&ver=1.0&sig=abcdEFGH1234'],
    ['a bearer header, any case', 'BEARER abcdefgh12345678'],
    ['a basic header', 'Basic dXNlcjpwYXNzd29yZA=='],
  ])('%s', (_name, secret) => {
    expect(redactString(`before ${secret} after`)).not.toContain(secret);
    expect(redactString(`before ${secret} after`)).toContain('[redacted]');
  });

  it('returns ordinary strings unchanged (the same string)', () => {
    const s = 'token.cloudsql granted orders-readers 0b5e0000-0000-4000-8000-00000000ead1';
    expect(redactString(s)).toBe(s);
  });
});

describe('redact remembers frozen objects with nothing to mask, and only those', () => {
  const SECRET = 'eyJhbGciOi.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';
  it('a clean frozen object is returned as it is, every time', () => {
    const who = Object.freeze({ tenantId: 't', objectId: 'o', inner: Object.freeze({ appId: 'a' }) });
    expect(redact(who)).toBe(who);
    expect(redact({ subject: who })).toEqual({ subject: who });
    expect(redact(who)).toBe(who);
  });
  it('a frozen object holding a secret, or under a sensitive name, is masked every time', () => {
    const leaky = Object.freeze({ note: `x ${SECRET}` });
    const named = Object.freeze({ password: 'hunter2' });
    for (let i = 0; i < 2; i++) {
      expect(JSON.stringify(redact(leaky))).not.toContain(SECRET);
      expect(JSON.stringify(redact({ named }))).not.toContain('hunter2');
    }
  });
  it('a clean object met deeper than it was checked at is cut at the depth limit as before', () => {
    let deep: object = Object.freeze({ d: 'x' });
    for (let i = 0; i < 3; i++) deep = Object.freeze({ n: deep });
    const wrapped = (o: object) => ({ a: { b: { c: { e: o } } } });
    const before = JSON.stringify(redact(wrapped(deep)));
    expect(before).toContain('[depth]');
    expect(redact(deep)).toBe(deep); // now known clean at depth 0
    expect(JSON.stringify(redact(wrapped(deep)))).toBe(before);
  });

  it('an object that can still change is walked again: unfrozen, a mutable member, or a getter', () => {
    const open: Record<string, string> = { note: 'fine' };
    expect(redact(open)).toBe(open);
    open.note = SECRET;
    expect(JSON.stringify(redact(open))).not.toContain(SECRET);

    const member: Record<string, string> = { note: 'fine' };
    const shell = Object.freeze({ member });
    expect(redact(shell)).toBe(shell);
    member.note = SECRET;
    expect(JSON.stringify(redact(shell))).not.toContain(SECRET);

    let value = 'fine';
    const getter = Object.freeze({
      get note() {
        return value;
      },
    });
    expect(redact(getter)).toBe(getter);
    value = SECRET;
    expect(JSON.stringify(redact(getter))).not.toContain(SECRET);
  });
});

describe('the line timestamp', () => {
  it('is what toISOString writes, across milliseconds, seconds and days', () => {
    const records: LogRecord[] = [];
    const log = createLogger({}, { sink: (r) => records.push(r) });
    const times = [
      Date.UTC(2026, 11, 7, 23, 59, 58, 999),
      Date.UTC(2026, 11, 7, 23, 59, 59, 0),
      Date.UTC(2026, 11, 7, 23, 59, 59, 7),
      Date.UTC(2026, 11, 7, 23, 59, 59, 7),
      Date.UTC(2026, 11, 7, 23, 59, 59, 42),
      Date.UTC(2026, 11, 7, 23, 59, 59, 999),
      Date.UTC(2026, 11, 8, 0, 0, 0, 100),
      Date.UTC(2026, 11, 7, 23, 59, 59, 500), // the clock stepped back
    ];
    const now = jest.spyOn(Date, 'now');
    try {
      for (const t of times) {
        now.mockReturnValue(t);
        log.info('x');
      }
    } finally {
      now.mockRestore();
    }
    expect(records.map((r) => r.ts)).toEqual(times.map((t) => new Date(t).toISOString()));
  });
});
