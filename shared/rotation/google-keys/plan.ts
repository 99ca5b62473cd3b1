import { storedOrderMs } from '../../keyvault/version-order';
/**
 * Pure planning of a rotation run for one managed key: what was found (Google keys, Key Vault versions)
 * and, at time `now`, which actions bring it to the desired state, in the crash-safe order:
 *
 *   1. delete orphans (keys no Key Vault version names), expired non-current keys, and retired keys
 *      already disabled after their grace period (frees room under Google's 10-key cap);
 *   2. rotate when there is no current key (initial), the current key is broken (repair) or due;
 *      the effect runner does create → prove → store, so a crash leaves at worst an orphan;
 *   3. disable previous keys whose grace period is over (deleted on a later run);
 *   4. disable Key Vault versions whose key is gone (never the latest version).
 *
 * A new key Google had not yet propagated when its run ended is kept as *pending* (secret `<name>-pending`, never read
 * by consumers); the next run promotes it (prove → store) instead of creating another (docs/rotation.md).
 *
 * No I/O, no clock of its own: everything it needs is an argument.
 */

export const DAY_MS = 86_400_000;
const MAX_USER_MANAGED_KEYS = 10;

export interface GoogleKeyInfo {
  readonly keyId: string;
  readonly disabled: boolean;
  /** ms since the epoch */
  readonly validAfter: number;
  readonly validBefore: number;
}

export interface VaultVersionInfo {
  readonly version: string;
  readonly enabled: boolean;
  /** ms since the epoch (Key Vault `created`) */
  readonly createdOn: number;
  readonly tags: Readonly<Record<string, string>>;
}

export interface Observed {
  readonly serviceAccount: string;
  readonly secretName: string;
  /** User-managed keys only. */
  readonly keys: readonly GoogleKeyInfo[];
  /** Every version of the secret, oldest first. */
  readonly versions: readonly VaultVersionInfo[];
  /** The enabled latest version of the pending secret, if a new key awaits its proof. */
  readonly pending?: { readonly version: string; readonly keyId: string; readonly createdOn: number };
}

/** The Key Vault secret holding a created but not yet proven key of `secretName`. */
export const pendingSecretName = (secretName: string): string => `${secretName}-pending`;
/** A pending key that still does not authenticate this long after its creation is deleted and a new one created. */
export const PENDING_MAX_DAYS = 3;

export interface PlanSettings {
  readonly periodDays: number;
  readonly graceDays: number;
}

export type RotateReason = 'initial' | 'due' | 'repair';

export type Action =
  | { readonly kind: 'delete-key'; readonly keyId: string; readonly why: 'orphan' | 'expired' | 'retired' }
  | { readonly kind: 'rotate'; readonly why: RotateReason; readonly previousKeyId?: string; readonly detail: string }
  | { readonly kind: 'disable-key'; readonly keyId: string; readonly why: 'grace-over' }
  | { readonly kind: 'disable-version'; readonly version: string; readonly keyId?: string; readonly why: 'key-gone' }
  | {
      readonly kind: 'promote';
      readonly keyId: string;
      readonly pendingVersion: string;
      readonly createdOn: number;
      readonly previousKeyId?: string;
      readonly why: 'pending';
      readonly detail: string;
    }
  | { readonly kind: 'drop-pending'; readonly pendingVersion: string; readonly keyId: string; readonly why: 'key-gone' };

export type KeyRole = 'current' | 'previous' | 'orphan';

export interface Found {
  readonly currentVersion?: string;
  readonly currentKeyId?: string;
  /** Days since the current key was created (by its `created` tag). */
  readonly currentKeyAgeDays?: number;
  readonly currentKeyHealth: 'ok' | 'missing' | 'disabled' | 'expired' | 'untracked' | 'none';
  readonly keys: readonly { keyId: string; disabled: boolean; role: KeyRole }[];
  readonly versions: number;
}

export interface AccountPlan {
  readonly serviceAccount: string;
  readonly secretName: string;
  readonly found: Found;
  readonly actions: readonly Action[];
  /** `blocked`: a rotation is needed but cannot happen (e.g. the key cap); see `reason`. */
  readonly status: 'ok' | 'blocked';
  readonly reason: string;
}

export const TAG = {
  keyId: 'keyId',
  serviceAccount: 'serviceAccount',
  created: 'created',
  period: 'rotationPeriodDays',
  previousKeyId: 'previousKeyId',
  managedBy: 'managedBy',
} as const;
export const MANAGED_BY = 'token-broker-rotation';

function createdOf(v: VaultVersionInfo): number {
  const t = Date.parse(v.tags[TAG.created] ?? '');
  return Number.isNaN(t) ? v.createdOn : t;
}

export function plan(obs: Observed, settings: PlanSettings, now: number): AccountPlan {
  const byId = new Map(obs.keys.map((k) => [k.keyId, k]));
  // The broker's own write order (storedAt tag), never Key Vault's list order or its one-second `created`.
  const at = (v: VaultVersionInfo) => storedOrderMs(v.tags, v.createdOn);
  const versions = [...obs.versions].sort((a, b) => at(a) - at(b));
  const latest = versions.at(-1);
  const referenced = new Set(versions.map((v) => v.tags[TAG.keyId]).filter((k): k is string => !!k));
  // A pending key is not an orphan while its key can still be proven.
  const pendingKey = obs.pending ? byId.get(obs.pending.keyId) : undefined;
  // (a pending key some version already names was promoted: its pending version is merely left over)
  const pendingLive =
    obs.pending && !referenced.has(obs.pending.keyId) && pendingKey && !pendingKey.disabled && pendingKey.validBefore > now
      ? obs.pending
      : undefined;
  if (pendingLive) referenced.add(pendingLive.keyId);
  const currentKeyId = latest?.tags[TAG.keyId];
  const currentKey = currentKeyId ? byId.get(currentKeyId) : undefined;
  const grace = settings.graceDays * DAY_MS;

  let health: Found['currentKeyHealth'];
  if (!latest) health = 'none';
  else if (!currentKeyId) health = 'untracked';
  else if (!currentKey) health = 'missing';
  else if (currentKey.disabled || !latest.enabled) health = 'disabled';
  else if (currentKey.validBefore <= now) health = 'expired';
  else health = 'ok';

  const ageMs = latest && health !== 'untracked' ? now - createdOf(latest) : undefined;
  const deletions: Action[] = [];
  const disables: Action[] = [];
  const deleted = new Set<string>();

  // Previous keys: retired when the version after theirs was stored.
  const retiredAt = new Map<string, number>();
  versions.forEach((v, i) => {
    const id = v.tags[TAG.keyId];
    const next = versions[i + 1];
    if (id && next && id !== currentKeyId) retiredAt.set(id, Math.max(retiredAt.get(id) ?? 0, next.createdOn));
  });

  for (const k of obs.keys) {
    if (k.keyId === currentKeyId || k.keyId === pendingLive?.keyId) continue;
    if (!referenced.has(k.keyId)) {
      deletions.push({ kind: 'delete-key', keyId: k.keyId, why: 'orphan' });
      deleted.add(k.keyId);
    } else if (k.validBefore <= now) {
      deletions.push({ kind: 'delete-key', keyId: k.keyId, why: 'expired' });
      deleted.add(k.keyId);
    } else {
      const retired = retiredAt.get(k.keyId) ?? 0;
      if (now >= retired + grace) {
        if (k.disabled) {
          deletions.push({ kind: 'delete-key', keyId: k.keyId, why: 'retired' });
          deleted.add(k.keyId);
        } else {
          disables.push({ kind: 'disable-key', keyId: k.keyId, why: 'grace-over' });
        }
      }
    }
  }

  let rotate: Extract<Action, { kind: 'rotate' }> | undefined;
  const due = ageMs !== undefined && ageMs >= settings.periodDays * DAY_MS;
  if (health === 'none') rotate = { kind: 'rotate', why: 'initial', detail: 'no key stored in Key Vault yet' };
  else if (health !== 'ok') {
    rotate = { kind: 'rotate', why: 'repair', previousKeyId: currentKeyId, detail: `current key is ${health}` };
  } else if (due) {
    rotate = {
      kind: 'rotate',
      why: 'due',
      previousKeyId: currentKeyId,
      detail: `current key is ${Math.floor(ageMs / DAY_MS)} days old (period ${settings.periodDays})`,
    };
  }

  let promote: Extract<Action, { kind: 'promote' }> | undefined;
  let dropPending: Extract<Action, { kind: 'drop-pending' }> | undefined;
  if (pendingLive) {
    promote = {
      kind: 'promote',
      keyId: pendingLive.keyId,
      pendingVersion: pendingLive.version,
      createdOn: pendingLive.createdOn,
      previousKeyId: currentKeyId,
      why: 'pending',
      detail: `a new key awaits its proof (${rotate?.detail ?? 'rotation started by an earlier run'})`,
    };
    rotate = undefined;
  } else if (obs.pending) {
    dropPending = { kind: 'drop-pending', pendingVersion: obs.pending.version, keyId: obs.pending.keyId, why: 'key-gone' };
  }

  let status: AccountPlan['status'] = 'ok';
  let reason = promote
    ? promote.detail
    : rotate
      ? rotate.detail
      : health === 'ok'
        ? `current key is ${Math.floor((ageMs ?? 0) / DAY_MS)} days old (period ${settings.periodDays})`
        : health;
  if (rotate) {
    const remaining = obs.keys.filter((k) => !deleted.has(k.keyId)).length;
    if (remaining >= MAX_USER_MANAGED_KEYS) {
      status = 'blocked';
      reason = `${remaining} user-managed keys remain after cleanup; Google allows ${MAX_USER_MANAGED_KEYS}: not creating another (${rotate.detail})`;
      rotate = undefined;
    }
  }

  // Key Vault versions whose key is gone (or goes in this run), except the latest (the current one
  // stays readable until a new version replaces it).
  const gone = (id: string | undefined) => !id || !byId.has(id) || deleted.has(id);
  const versionDisables: Action[] = [];
  for (const v of versions) {
    const isLatest = v === latest;
    if (!v.enabled || (isLatest && !rotate && !promote)) continue;
    const id = v.tags[TAG.keyId];
    if (gone(id)) versionDisables.push({ kind: 'disable-version', version: v.version, keyId: id, why: 'key-gone' });
  }
  const role = (id: string): KeyRole => (id === currentKeyId ? 'current' : referenced.has(id) ? 'previous' : 'orphan');
  return {
    serviceAccount: obs.serviceAccount,
    secretName: obs.secretName,
    found: {
      currentVersion: latest?.version,
      currentKeyId,
      currentKeyAgeDays: ageMs === undefined ? undefined : Math.floor(ageMs / DAY_MS),
      currentKeyHealth: health,
      keys: obs.keys.map((k) => ({ keyId: k.keyId, disabled: k.disabled, role: role(k.keyId) })),
      versions: versions.length,
    },
    actions: [
      ...deletions,
      ...(dropPending ? [dropPending] : []),
      ...(promote ? [promote] : []),
      ...(rotate ? [rotate] : []),
      ...disables,
      ...versionDisables,
    ],
    status,
    reason,
  };
}
