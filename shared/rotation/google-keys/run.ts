import { audit } from '../../observability/audit';
import { BrokerError } from '../../errors';
import type { Logger } from '../../observability/log';
import type { KeyVaultSecrets, SecretVersionInfo } from '../../keyvault/client';
import { STORED_AT_TAG, storedOrderMs } from '../../keyvault/version-order';
import type { ManagedKey } from '../../config/rotation';
import { recordRotation } from '../../observability/telemetry';
import type { LeaseResult, RotationLock } from '../lease';
import type { GoogleIamKeys } from './client';
import { exchangeKey, parseKeyFile } from '../../google/sa-key-exchange';
import { CLOUD_PLATFORM_SCOPE } from '../../google/scopes';
import {
  DAY_MS,
  MANAGED_BY,
  PENDING_MAX_DAYS,
  TAG,
  pendingSecretName,
  plan,
  type AccountPlan,
  type Action,
  type Observed,
} from './plan';

/**
 * The effects of a rotation run: observe each managed key (Google keys, Key Vault versions), plan
 * (pure, ./plan.ts), and unless dry-run, apply the plan in order under the Key Vault lease. A rotation
 * is create → prove (the new key gets a token from Google) → store (new Key Vault version): nobody
 * learns of a key before it works, and a crash in between leaves only an orphan, deleted next run.
 */

export type Step = 'deleted-key' | 'created' | 'proved' | 'stored' | 'stored-pending' | 'disabled-key' | 'disabled-version';

export interface RotationDeps {
  readonly iam: GoogleIamKeys;
  readonly vault: KeyVaultSecrets;
  readonly managed: readonly ManagedKey[];
  readonly settings: {
    readonly periodDays: number;
    readonly graceDays: number;
    readonly oauthTokenUrl: string;
    readonly timeoutMs: number;
  };
  /** The run lease (a blob lease); built lazily by the wiring, only a real run takes it. */
  readonly lock: () => RotationLock;
  readonly now: () => number;
  readonly log: Logger;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Called after each completed step (tests inject crashes here). */
  readonly afterStep?: (step: Step, account: string) => void | Promise<void>;
}

/** `pending`: the new key did not authenticate within the run's proving window; kept (not deleted) for the next run. */
export type Outcome = 'planned' | 'done' | 'pending' | 'failed' | 'skipped';

export interface ActionReport {
  readonly action: Action;
  readonly outcome: Outcome;
  readonly error?: string;
  readonly newKeyId?: string;
  readonly newVersion?: string;
}

export interface AccountReport extends Omit<AccountPlan, 'actions'> {
  readonly actions: readonly ActionReport[];
  readonly error?: string;
}

export interface RotationReport {
  readonly dryRun: boolean;
  readonly startedAt: string;
  readonly status: 'completed' | 'locked' | 'partial';
  readonly heldBy?: string;
  readonly accounts: readonly AccountReport[];
}

async function observe(deps: RotationDeps, mk: ManagedKey): Promise<Observed> {
  const [keys, versions, pendingVersions] = await Promise.all([
    deps.iam.list(mk.serviceAccount),
    deps.vault.versions(mk.secretName),
    deps.vault.versions(pendingSecretName(mk.secretName)),
  ]);
  const at = (v: SecretVersionInfo) => storedOrderMs(v.tags, v.createdOn?.getTime());
  for (const v of [...versions, ...pendingVersions]) lastStoredAt = Math.max(lastStoredAt, at(v));
  const latestPending = [...pendingVersions].sort((a, b) => at(a) - at(b)).at(-1);
  const pendingKeyId = latestPending?.tags[TAG.keyId];
  const pending =
    latestPending?.enabled &&
    pendingKeyId &&
    latestPending.tags[TAG.managedBy] === MANAGED_BY &&
    latestPending.tags[TAG.serviceAccount] === mk.serviceAccount
      ? {
          version: latestPending.version,
          keyId: pendingKeyId,
          createdOn: Date.parse(latestPending.tags[TAG.created] ?? '') || (latestPending.createdOn?.getTime() ?? 0),
        }
      : undefined;
  return {
    serviceAccount: mk.serviceAccount,
    secretName: mk.secretName,
    keys,
    versions: versions.map((v) => ({
      version: v.version,
      enabled: v.enabled,
      createdOn: v.createdOn?.getTime() ?? 0,
      tags: v.tags,
    })),
    ...(pending ? { pending } : {}),
  };
}

const errCode = (e: unknown) => (e instanceof BrokerError ? e.code : 'internal');

/** Pauses between proof attempts of one run (s): a window of 30 s, then the key is kept as pending (docs/rotation.md). */
const PROVE_BACKOFF_SECONDS = [1, 2, 4, 8, 15] as const;

async function proveWithRetry(deps: RotationDeps, keyJson: string): Promise<void> {
  const key = parseKeyFile(keyJson);
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let last: unknown;
  // A new key is not usable at once at Google (a minute or more); bounded backoff within the run.
  for (let attempt = 0; attempt <= PROVE_BACKOFF_SECONDS.length; attempt++) {
    try {
      await exchangeKey(key, {
        tokenUrl: deps.settings.oauthTokenUrl,
        scope: CLOUD_PLATFORM_SCOPE,
        nowMs: deps.now(),
        timeoutMs: deps.settings.timeoutMs,
      });
      return;
    } catch (e) {
      last = e;
      const pause = PROVE_BACKOFF_SECONDS[attempt];
      if (pause !== undefined) await sleep(pause * 1000);
    }
  }
  throw last;
}

/**
 * The last `storedAt` written or seen (ms): every version the broker writes gets a strictly later one, so its order
 * never depends on the clock's resolution (runs are serialized by the rotation lease).
 */
let lastStoredAt = 0;

function keyTags(
  deps: RotationDeps,
  sa: string,
  keyId: string,
  createdAt: number,
  previousKeyId: string | undefined,
): Record<string, string> {
  lastStoredAt = Math.max(deps.now(), lastStoredAt + 1);
  return {
    [STORED_AT_TAG]: new Date(lastStoredAt).toISOString(),
    [TAG.keyId]: keyId,
    [TAG.serviceAccount]: sa,
    [TAG.created]: new Date(createdAt).toISOString(),
    [TAG.period]: String(deps.settings.periodDays),
    [TAG.previousKeyId]: previousKeyId ?? 'none',
    [TAG.managedBy]: MANAGED_BY,
  };
}

/** Tag check: the current version must still be the one planned on (no concurrent rotation). */
async function assertNoConcurrentRotation(deps: RotationDeps, p: AccountPlan): Promise<void> {
  const latest = await deps.vault.get(p.secretName).catch((e: unknown) => {
    if (e instanceof BrokerError && e.code === 'upstream_denied') return undefined; // disabled latest: repair proceeds
    throw e;
  });
  if (latest && latest.version !== p.found.currentVersion) {
    throw new BrokerError('conflict', 'The key was rotated concurrently.', { detail: { reason: 'concurrent_change' } });
  }
}

/** Store a proven key as the new current version (what consumers read). */
async function storeCurrent(
  deps: RotationDeps,
  p: AccountPlan,
  keyId: string,
  keyJson: string,
  createdAt: number,
  previousKeyId: string | undefined,
  why: string,
) {
  const sa = p.serviceAccount;
  const event = (ok: boolean, reason: string, extra: Record<string, string | undefined>) =>
    audit(deps.log, {
      decision: ok ? 'grant' : 'deny',
      action: 'rotation.store-key',
      target: sa,
      reason,
      extra: { secretName: p.secretName, ...extra },
    });
  let stored;
  try {
    stored = await deps.vault.set(p.secretName, keyJson, {
      contentType: 'application/json',
      expiresOn: new Date(createdAt + (deps.settings.periodDays + deps.settings.graceDays) * DAY_MS),
      tags: keyTags(deps, sa, keyId, createdAt, previousKeyId),
    });
  } catch (e) {
    event(false, errCode(e), { keyId });
    // The outcome of a failed write is unknown: leave the key; next run keeps it if stored, else deletes the orphan.
    throw e;
  }
  event(true, why, { keyId, vaultVersion: stored.version, previousKeyId });
  return stored;
}

async function apply(deps: RotationDeps, p: AccountPlan, held: () => void): Promise<AccountReport> {
  const sa = p.serviceAccount;
  const reports: ActionReport[] = [];
  const event = (action: string, ok: boolean, reason: string, extra: Record<string, string | number | boolean | undefined>) =>
    audit(deps.log, {
      decision: ok ? 'grant' : 'deny',
      action: `rotation.${action}`,
      target: sa,
      reason,
      extra: { secretName: p.secretName, ...extra },
    });
  const step = async (s: Step) => {
    await deps.afterStep?.(s, sa);
  };

  for (let i = 0; i < p.actions.length; i++) {
    const a = p.actions[i]!;
    try {
      held(); // the lease is still ours (renewed), else stop before changing anything more
      if (a.kind === 'delete-key') {
        await deps.iam.delete(sa, a.keyId);
        event('delete-key', true, a.why, { keyId: a.keyId });
        reports.push({ action: a, outcome: 'done' });
        await step('deleted-key');
      } else if (a.kind === 'disable-key') {
        await deps.iam.disable(sa, a.keyId);
        event('disable-key', true, a.why, { keyId: a.keyId });
        reports.push({ action: a, outcome: 'done' });
        await step('disabled-key');
      } else if (a.kind === 'disable-version') {
        await deps.vault.update(p.secretName, a.version, { enabled: false });
        event('disable-version', true, a.why, { keyId: a.keyId, vaultVersion: a.version });
        reports.push({ action: a, outcome: 'done' });
        await step('disabled-version');
      } else if (a.kind === 'drop-pending') {
        await deps.vault.update(pendingSecretName(p.secretName), a.pendingVersion, { enabled: false });
        event('drop-pending', true, a.why, { keyId: a.keyId });
        reports.push({ action: a, outcome: 'done' });
        await step('disabled-version');
      } else if (a.kind === 'promote') {
        await assertNoConcurrentRotation(deps, p);
        const pendingName = pendingSecretName(p.secretName);
        const secret = await deps.vault.get(pendingName, a.pendingVersion);
        if (!secret) throw new BrokerError('upstream_unavailable', 'The pending key could not be read from Key Vault.');
        try {
          await proveWithRetry(deps, secret.value);
        } catch (e) {
          if (deps.now() - a.createdOn < PENDING_MAX_DAYS * DAY_MS) {
            event('prove-key', false, 'still-pending', { keyId: a.keyId });
            reports.push({ action: a, outcome: 'pending', error: errCode(e) });
            continue;
          }
          // Never usable: give it up (the next run creates a new key); the current key stays.
          event('prove-key', false, errCode(e), { keyId: a.keyId });
          await deps.iam.delete(p.serviceAccount, a.keyId).catch(() => undefined);
          await deps.vault.update(pendingName, a.pendingVersion, { enabled: false }).catch(() => undefined);
          throw e;
        }
        event('prove-key', true, 'token-issued', { keyId: a.keyId });
        await step('proved');
        const stored = await storeCurrent(deps, p, a.keyId, secret.value, a.createdOn, a.previousKeyId, 'pending');
        await deps.vault.update(pendingName, a.pendingVersion, { enabled: false }).catch((e: unknown) => {
          // Harmless if left: next run sees the pending key is the current one's and drops it.
          deps.log.warn('rotation: the promoted pending version could not be disabled', {
            event: 'rotation.pending-left',
            serviceAccount: sa,
            code: errCode(e),
          });
        });
        reports.push({ action: a, outcome: 'done', newKeyId: a.keyId, newVersion: stored.version });
        await step('stored');
      } else {
        // Tag check: the current version must still be the one planned on (no concurrent rotation).
        await assertNoConcurrentRotation(deps, p);
        if (a.why === 'repair')
          deps.log.error('rotation repair: current key is broken, rotating now', {
            event: 'rotation.repair',
            serviceAccount: sa,
            keyId: a.previousKeyId,
            why: a.detail,
          });
        const created = await deps.iam.create(sa);
        event('create-key', true, a.why, { keyId: created.keyId, previousKeyId: a.previousKeyId });
        await step('created');
        try {
          await proveWithRetry(deps, created.keyJson);
        } catch (e) {
          // Not usable yet (Google's propagation can outlast the window): keep it as pending, never seen by consumers,
          // and prove it on the next run. Only if that write fails is the key deleted (else an orphan, deleted next run).
          event('prove-key', false, 'pending', { keyId: created.keyId, code: errCode(e) });
          const createdAt = created.validAfter || deps.now();
          try {
            await deps.vault.set(pendingSecretName(p.secretName), created.keyJson, {
              contentType: 'application/json',
              tags: keyTags(deps, sa, created.keyId, createdAt, a.previousKeyId),
            });
          } catch (storeErr) {
            event('store-pending', false, errCode(storeErr), { keyId: created.keyId });
            await deps.iam.delete(sa, created.keyId).catch(() => undefined);
            throw e;
          }
          event('store-pending', true, a.why, { keyId: created.keyId });
          reports.push({ action: a, outcome: 'pending', newKeyId: created.keyId });
          await step('stored-pending');
          continue;
        }
        event('prove-key', true, 'token-issued', { keyId: created.keyId });
        await step('proved');
        const stored = await storeCurrent(
          deps,
          p,
          created.keyId,
          created.keyJson,
          created.validAfter || deps.now(),
          a.previousKeyId,
          a.why,
        );
        reports.push({ action: a, outcome: 'done', newKeyId: created.keyId, newVersion: stored.version });
        await step('stored');
      }
    } catch (e) {
      reports.push({ action: a, outcome: 'failed', error: errCode(e) });
      for (const rest of p.actions.slice(i + 1)) reports.push({ action: rest, outcome: 'skipped' });
      deps.log.warn('rotation step failed', {
        event: 'rotation.failed',
        serviceAccount: sa,
        action: a.kind,
        code: errCode(e),
        err: e,
      });
      return { ...p, actions: reports, error: errCode(e) };
    }
  }
  return { ...p, actions: reports };
}

export async function runRotation(
  deps: RotationDeps,
  opts: { dryRun: boolean; trigger: 'timer' | 'admin' },
): Promise<RotationReport> {
  const startedAt = new Date(deps.now()).toISOString();
  let lease: LeaseResult | undefined;
  if (!opts.dryRun) {
    lease = await deps.lock().acquire();
    if (!lease.acquired) {
      deps.log.info('rotation skipped: another run holds the lease', {
        event: 'rotation.locked',
        trigger: opts.trigger,
        until: lease.until,
      });
      recordRotation('run', 'locked');
      return { dryRun: false, startedAt, status: 'locked', heldBy: lease.heldBy, accounts: [] };
    }
  }
  const accounts: AccountReport[] = [];
  try {
    for (const mk of deps.managed) {
      let p: AccountPlan;
      try {
        p = plan(await observe(deps, mk), deps.settings, deps.now());
      } catch (e) {
        deps.log.warn('rotation could not observe an account', {
          event: 'rotation.observe-failed',
          serviceAccount: mk.serviceAccount,
          code: errCode(e),
          err: e,
        });
        accounts.push({
          serviceAccount: mk.serviceAccount,
          secretName: mk.secretName,
          found: { currentKeyHealth: 'none', keys: [], versions: 0 },
          actions: [],
          status: 'blocked',
          reason: 'could not read the current state',
          error: errCode(e),
        });
        continue;
      }
      if (p.status === 'blocked')
        deps.log.error('rotation blocked', { event: 'rotation.blocked', serviceAccount: mk.serviceAccount, reason: p.reason });
      if (opts.dryRun) accounts.push({ ...p, actions: p.actions.map((action) => ({ action, outcome: 'planned' as const })) });
      else accounts.push(await apply(deps, p, () => (lease?.acquired ? lease.lease.assertHeld() : undefined)));
    }
  } finally {
    if (lease?.acquired) await lease.lease.release();
  }
  const partial = accounts.some((a) => a.error !== undefined || a.status === 'blocked');
  for (const a of accounts) {
    for (const r of a.actions) recordRotation(r.action.kind, r.outcome);
    if (a.status === 'blocked') recordRotation('account', 'blocked');
  }
  recordRotation('run', opts.dryRun ? 'dry-run' : partial ? 'partial' : 'completed');
  deps.log.info('rotation run finished', {
    event: 'rotation.run',
    trigger: opts.trigger,
    dryRun: opts.dryRun,
    accounts: accounts.length,
    actions: accounts.reduce((n, a) => n + a.actions.filter((x) => x.outcome === 'done').length, 0),
    partial,
  });
  return { dryRun: opts.dryRun, startedAt, status: partial ? 'partial' : 'completed', accounts };
}
