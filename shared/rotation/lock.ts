import { randomUUID } from 'node:crypto';
import type { KeyVaultSecrets } from '../keyvault/client';

/**
 * A run lease kept in Key Vault, so the timer and the admin trigger (on any instance) never rotate at
 * once. Key Vault has no compare-and-swap, so the lease is a claim-then-check protocol over an
 * append-only version list: refuse when a live claim exists; else append a claim (a new version tagged
 * owner + expiresAt), wait `settleMs` so a racing claimant's write lands, then list again: the earliest
 * live claim (by created time, then version id — the same order for every observer) wins; a loser
 * withdraws its claim (disables its version). A crashed holder blocks others at most `ttlSeconds`.
 */

export interface Lease {
  readonly owner: string;
  readonly version: string;
  release(): Promise<void>;
}

export type LeaseResult = { readonly acquired: true; readonly lease: Lease } | { readonly acquired: false; readonly heldBy: string; readonly until?: string };

export async function acquireLease(
  vault: KeyVaultSecrets,
  opts: { secretName: string; ttlSeconds: number; settleMs: number; now: () => number; sleep?: (ms: number) => Promise<void> },
): Promise<LeaseResult> {
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const live = async () => {
    const now = opts.now();
    return (await vault.versions(opts.secretName))
      .filter((v) => v.enabled && v.tags.owner && Date.parse(v.tags.expiresAt ?? '') > now)
      .sort((a, b) => (a.createdOn?.getTime() ?? 0) - (b.createdOn?.getTime() ?? 0) || a.version.localeCompare(b.version));
  };
  const before = await live();
  if (before.length > 0) return { acquired: false, heldBy: before[0]!.tags.owner!, until: before[0]!.tags.expiresAt };

  const owner = randomUUID();
  const expiresAt = new Date(opts.now() + opts.ttlSeconds * 1000).toISOString();
  const mine = await vault.set(opts.secretName, owner, { contentType: 'text/plain', tags: { owner, expiresAt, purpose: 'rotation-lease' } });
  const release = async () => {
    await vault.update(opts.secretName, mine.version, { enabled: false }).catch(() => undefined);
  };
  if (opts.settleMs > 0) await sleep(opts.settleMs);
  const after = await live();
  const winner = after[0];
  if (!winner || winner.version !== mine.version) {
    await release();
    return { acquired: false, heldBy: winner?.tags.owner ?? 'unknown', until: winner?.tags.expiresAt };
  }
  return { acquired: true, lease: { owner, version: mine.version, release } };
}
