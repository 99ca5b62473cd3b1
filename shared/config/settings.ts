import { BrokerError, ConfigError } from '../errors';
/**
 * The one typed configuration loader. Each capability declares its section of app settings with
 * `defineSection`; every declared setting lands in one registry (the README table and the Bicep are
 * checked against it). Loading is lazy (never at import), reports every missing or invalid setting of
 * the section at once by name, and is memoised on the values it read.
 */

export type Env = Readonly<Record<string, string | undefined>>;

export interface SettingSpec<T> {
  readonly name: string;
  readonly doc: string;
  /** Used when the setting is absent or empty. No default and not optional: the setting is required. */
  readonly default?: string;
  /** Absent is fine and yields undefined. */
  readonly optional?: boolean;
  /** Holds a secret: never logged; in production it comes from a Key Vault reference. */
  readonly secret?: boolean;
  parse(raw: string): T;
}

type Parsed<S> = S extends SettingSpec<infer T> ? T : never;
export type SectionValues<S extends Record<string, SettingSpec<unknown>>> = {
  readonly [K in keyof S]: S[K] extends { optional: true } ? Parsed<S[K]> | undefined : Parsed<S[K]>;
};

export interface Section<S extends Record<string, SettingSpec<unknown>>> {
  readonly name: string;
  readonly spec: S;
  /** Parse an explicit environment, no memo: the values, or a ConfigError listing every problem. */
  parse(env: Env): SectionValues<S>;
  /**
   * The app settings (process.env), memoised on the raw values; process.env is re-read at most every `recheckMs`
   * (default SETTINGS_RECHECK_MS; an app context passes its own, shared/app/context.ts). A ConfigError when any is
   * bad (the health check reports it).
   */
  get(recheckMs?: number): SectionValues<S>;
  /**
   * The app settings for a request or a run: as get(), but a bad setting is the client-safe 503 `config_invalid`
   * naming the settings (never a 500). What every endpoint and run calls.
   */
  load(recheckMs?: number): SectionValues<S>;
}

/**
 * App settings do not change during the life of a Functions process (changing one restarts the app), so
 * `get()` re-reads process.env at most this often; reading ~40 variables of process.env on every call was a
 * tenth of the token cache-hit path. An app context built with `settingsRecheckMs: 0` re-reads on every call.
 */
export const SETTINGS_RECHECK_MS = 1000;

const registry: SettingSpec<unknown>[] = [];
/** The sections that read each setting (a shared spec is read by several; listed in name order, whatever loaded first). */
const sectionNames = new Map<string, Set<string>>();
const sectionsOf = (name: string): string => [...(sectionNames.get(name) ?? [])].sort().join(', ');

/** Every setting any loaded section declares (import the section modules first). */
export function allSettings(): readonly (SettingSpec<unknown> & { section: string })[] {
  return registry.map((s) => Object.assign(Object.create(s) as SettingSpec<unknown>, { section: sectionsOf(s.name) }));
}

/** Settings that were removed, each with what replaces it: still set is an error naming it, never ignored. */
const removedSettings = new Map<string, { replacement: string; section: string }>();

/** The problems of every removed setting still present in `env` (the health `config` check reports them at start). */
export function removedSettingProblems(env: Env): string[] {
  const out: string[] = [];
  for (const [name, r] of removedSettings) {
    if (env[name] !== undefined) out.push(`${name} was removed: use ${r.replacement} instead, and delete ${name}`);
  }
  return out;
}

export function defineSection<S extends Record<string, SettingSpec<unknown>>>(
  name: string,
  spec: S,
  opts: { removed?: Readonly<Record<string, string>> } = {},
): Section<S> {
  const removed = Object.entries(opts.removed ?? {});
  for (const [old, replacement] of removed) removedSettings.set(old, { replacement, section: name });
  for (const s of Object.values(spec)) {
    const first = registry.find((r) => r.name === s.name);
    // Each setting is declared once: a section that needs another's setting shares its spec object.
    if (first && first !== s)
      throw new Error(`setting ${s.name} is declared twice (sections ${sectionsOf(s.name)} and ${name}): share one spec`);
    if (!first) registry.push(s);
    sectionNames.set(s.name, (sectionNames.get(s.name) ?? new Set<string>()).add(name));
  }
  const specs = Object.entries(spec);
  const load = (env: Env): SectionValues<S> => {
    const problems: string[] = [];
    for (const [old, replacement] of removed) {
      if (env[old] !== undefined) problems.push(`${old} was removed: use ${replacement} instead, and delete ${old}`);
    }
    const out: Record<string, unknown> = {};
    for (const [key, s] of specs) {
      const raw = env[s.name];
      const value = raw === undefined || raw.trim() === '' ? s.default : raw.trim();
      if (value === undefined) {
        if (!s.optional) problems.push(`${s.name} is required (${s.doc})`);
        out[key] = undefined;
        continue;
      }
      try {
        out[key] = s.parse(value);
      } catch (e) {
        problems.push(`${s.name} ${(e as Error).message}`);
      }
    }
    if (problems.length > 0) throw new ConfigError(name, problems);
    return Object.freeze(out) as SectionValues<S>;
  };
  let memoKey: string | undefined;
  let memo: SectionValues<S> | undefined;
  let memoAt = 0;
  const section: Section<S> = {
    name,
    spec,
    parse: load,
    load(recheckMs?: number) {
      try {
        return section.get(recheckMs);
      } catch (e) {
        throw new BrokerError('config_invalid', (e as Error).message, { cause: e });
      }
    },
    get(recheckMs = SETTINGS_RECHECK_MS) {
      const now = recheckMs > 0 ? Date.now() : 0;
      if (memo !== undefined && recheckMs > 0 && now - memoAt < recheckMs) return memo;
      const key = [...specs.map(([, s]) => s.name), ...removed.map(([old]) => old)]
        .map((n) => process.env[n] ?? '\u0001')
        .join('\u0000');
      if (memo === undefined || key !== memoKey) {
        memo = load(process.env);
        memoKey = key;
      }
      memoAt = now;
      return memo;
    },
  };
  return section;
}

// ---------- setting constructors ----------

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

export { GUID } from '../lib/identifiers';
