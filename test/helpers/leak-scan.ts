import { createHash } from 'node:crypto';

/**
 * The token-leak scanner: every credential the emulators issued (local/emulators/issued-tokens.ts) is
 * turned into the substrings that would betray it in a log line, and each line is checked for them.
 * Used by test/setup-leak-scan.ts for every test file; pure, so it is tested directly too.
 */

export type NeedleKind = 'token' | 'jwt-signature' | 'cosmos-signature' | 'private-key';

export interface Needle {
  readonly text: string;
  readonly kind: NeedleKind;
  /** A one-way fingerprint of the whole credential (safe to print). */
  readonly fingerprint: string;
}

export interface Leak {
  readonly kind: NeedleKind;
  readonly fingerprint: string;
  /** The line, with the leaked text masked and cut to 300 characters. */
  readonly line: string;
}

/** Shorter substrings are not distinctive enough to scan for. */
export const MIN_NEEDLE_LENGTH = 16;

function fingerprintOf(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 12);
}

/** The first base64 line of a PEM private key's body: unique to the key, and what a log would show. */
function pemBodyLine(pem: string): string | undefined {
  const lines = pem.split(/\r?\n/).map((l) => l.trim());
  return lines.find((l) => l.length >= 40 && /^[A-Za-z0-9+/=]+$/.test(l));
}

/** Every substring whose presence in a log line means `token` leaked. */
export function needlesFor(token: string): Needle[] {
  const fingerprint = fingerprintOf(token);
  const out = new Map<string, NeedleKind>();
  const add = (text: string | undefined, kind: NeedleKind) => {
    if (text && text.length >= MIN_NEEDLE_LENGTH && !out.has(text)) out.set(text, kind);
  };
  add(token, 'token');
  // As it appears inside a JSON-serialized log line (quotes, backslashes, newlines escaped).
  add(JSON.stringify(token).slice(1, -1), 'token');

  const parts = token.split('.');
  if (parts.length === 3 && parts[0]!.startsWith('eyJ')) add(parts[2], 'jwt-signature');

  const sig = /(?:^|&)sig=([^&\s"]+)/.exec(token)?.[1];
  if (sig) {
    // type=resource&ver=1.0&sig=<HMAC, base64>;<permission token>; — URL-encoded or not, whole or in parts.
    let decoded = sig;
    try {
      decoded = decodeURIComponent(sig);
    } catch {
      // not URL-encoded
    }
    for (const s of new Set([sig, decoded, ...sig.split(';'), ...decoded.split(';')])) add(s, 'cosmos-signature');
  }

  if (token.includes('PRIVATE KEY-----')) add(pemBodyLine(token), 'private-key');
  if (token.trimStart().startsWith('{') && token.includes('private_key')) {
    try {
      const pk = (JSON.parse(token) as { private_key?: unknown }).private_key;
      if (typeof pk === 'string') add(pemBodyLine(pk), 'private-key');
    } catch {
      // not JSON
    }
  }
  return [...out].map(([text, kind]) => ({ text, kind, fingerprint }));
}

/** The needles of `line`'s leaks, if any. */
export function findLeaks(line: string, needles: readonly Needle[]): Leak[] {
  const leaks: Leak[] = [];
  for (const n of needles) {
    if (line.includes(n.text)) {
      let masked = line;
      for (const m of needles) if (m.fingerprint === n.fingerprint) masked = masked.split(m.text).join(`[LEAKED ${m.kind}]`);
      leaks.push({ kind: n.kind, fingerprint: n.fingerprint, line: masked.length > 300 ? `${masked.slice(0, 300)}…` : masked });
    }
  }
  return leaks;
}

/**
 * Scans lines against a growing set of issued credentials. The registry only grows and iterates in
 * insertion order, so only credentials added since the last scan are turned into needles.
 */
export class LeakScanner {
  private readonly needles: Needle[] = [];
  private seen = 0;

  constructor(private readonly issued: () => ReadonlySet<string>) {}

  private sync(): void {
    const set = this.issued();
    if (set.size === this.seen) return;
    let i = 0;
    for (const token of set) {
      if (i++ < this.seen) continue;
      this.needles.push(...needlesFor(token));
    }
    this.seen = set.size;
  }

  get needleCount(): number {
    this.sync();
    return this.needles.length;
  }

  scan(line: string): Leak[] {
    this.sync();
    return this.needles.length === 0 ? [] : findLeaks(line, this.needles);
  }
}

export function describeLeaks(leaks: readonly Leak[], where: string): string {
  const shown = leaks.slice(0, 10).map((l) => `  - ${l.kind} of credential ${l.fingerprint}: ${l.line}`);
  const more = leaks.length > 10 ? [`  … and ${leaks.length - 10} more`] : [];
  return [`Token leak (${where}): ${leaks.length} log line(s) carry a credential an emulator issued:`, ...shown, ...more].join(
    '\n',
  );
}
