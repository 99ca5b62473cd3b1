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

export { GUID } from '../lib/identifiers';
