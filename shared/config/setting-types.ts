import type { SettingSpec } from './settings';

/**
 * The setting constructors: each builds a SettingSpec (name, doc, default, parse) for one kind of value. Sections
 * (./settings.ts `defineSection`) are declared with them.
 */

interface Common {
  doc: string;
  default?: string;
  secret?: boolean;
}

export function str(name: string, opts: Common & { pattern?: RegExp; patternDoc?: string }): SettingSpec<string> {
  return {
    name,
    doc: opts.doc,
    default: opts.default,
    secret: opts.secret,
    parse(raw) {
      if (opts.pattern && !opts.pattern.test(raw))
        throw new Error(`must be ${opts.patternDoc ?? `like ${String(opts.pattern)}`}`);
      return raw;
    },
  };
}

export function optionalStr(name: string, opts: Common): SettingSpec<string> & { optional: true } {
  return { name, doc: opts.doc, default: opts.default, secret: opts.secret, optional: true, parse: (raw) => raw };
}

export function int(name: string, opts: Common & { min: number; max: number }): SettingSpec<number> {
  return {
    name,
    doc: opts.doc,
    default: opts.default,
    parse(raw) {
      if (!/^-?\d+$/.test(raw)) throw new Error(`must be a whole number between ${opts.min} and ${opts.max}, got "${raw}"`);
      const n = Number(raw);
      if (n < opts.min || n > opts.max) throw new Error(`must be between ${opts.min} and ${opts.max}, got ${n}`);
      return n;
    },
  };
}

export function bool(name: string, opts: Common): SettingSpec<boolean> {
  return {
    name,
    doc: opts.doc,
    default: opts.default,
    parse(raw) {
      const v = raw.toLowerCase();
      if (v === 'true' || v === '1') return true;
      if (v === 'false' || v === '0') return false;
      throw new Error(`must be true or false, got "${raw}"`);
    },
  };
}

/** Loopback host names and addresses: the only hosts a plain-HTTP endpoint may name (local development endpoints). */
function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * An endpoint URL. HTTPS only, except `http:` on a loopback host (local development runs some emulators over plain
 * HTTP on 127.0.0.1): a production endpoint over plain HTTP would send tokens in the clear. `protocols:
 * ['https:']` refuses loopback HTTP too (Key Vault, whose SDK requires TLS).
 */
export function url(name: string, opts: Common & { protocols?: readonly ('https:' | 'http:')[] }): SettingSpec<string> {
  const protocols = opts.protocols ?? ['https:', 'http:'];
  return {
    name,
    doc: opts.doc,
    default: opts.default,
    parse(raw) {
      let u: URL;
      try {
        u = new URL(raw);
      } catch {
        throw new Error(`must be an absolute URL, got "${raw}"`);
      }
      if (!protocols.includes(u.protocol as 'https:' | 'http:')) {
        throw new Error(
          `must use ${protocols.includes('http:') ? 'https: (http: only on a loopback host)' : 'https:'}, got ${u.protocol}`,
        );
      }
      if (u.protocol === 'http:' && !isLoopbackHost(u.hostname)) {
        throw new Error(
          `must use https: outside loopback (http: is allowed only for 127.0.0.1, ::1 or localhost, local development endpoints), got http://${u.host}`,
        );
      }
      if (u.username || u.password) throw new Error('must not carry credentials (user:password@)');
      return raw.replace(/\/+$/, '');
    },
  };
}

export function csv(
  name: string,
  opts: Common & { item?: RegExp; itemDoc?: string; allowEmpty?: boolean },
): SettingSpec<readonly string[]> {
  return {
    name,
    doc: opts.doc,
    default: opts.default,
    parse(raw) {
      const items = raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
      if (items.length === 0 && !opts.allowEmpty) throw new Error('must list at least one value (comma-separated)');
      for (const it of items) {
        if (opts.item && !opts.item.test(it))
          throw new Error(`has an invalid entry "${it}": each must be ${opts.itemDoc ?? String(opts.item)}`);
      }
      return Object.freeze(items);
    },
  };
}

export function oneOf<T extends string>(name: string, values: readonly T[], opts: Common): SettingSpec<T> {
  return {
    name,
    doc: opts.doc,
    default: opts.default,
    parse(raw) {
      if (!(values as readonly string[]).includes(raw)) throw new Error(`must be one of ${values.join(', ')}, got "${raw}"`);
      return raw as T;
    },
  };
}
