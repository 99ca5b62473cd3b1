import { randomUUID } from 'node:crypto';
import type { BlobClient } from '@azure/storage-blob';
import { BrokerError, toBrokerError } from '../errors';
import { lockBlobUrl, policyConfig } from '../config/policy';
import { rotationConfig } from '../config/rotation';
import type { Logger } from '../observability/log';
import { blobClientFor, storageCall, storageFailure } from '../policy/blob-store';
import { statusOf } from '../upstream/error-shape';

/**
 * The rotation run lease: a Blob Storage lease on one blob (ROTATION_LOCK_URL, default `rotation-lock` beside the
 * policy blob), so the timer and the admin trigger, on any instance, never rotate at once. The Blob service
 * arbitrates: Lease Blob `acquire` with a duration of 15–60 s succeeds for exactly one caller and answers
 * 409 LeaseAlreadyPresent to the others (https://learn.microsoft.com/en-us/rest/api/storageservices/lease-blob).
 * The holder renews it every third of its duration while it runs and releases it at the end; a crashed holder
 * blocks others at most one duration. A renewal that fails marks the lease lost: the run stops before its next step.
 */

export interface Lease {
  readonly owner: string;
  /** Throws `conflict` when the lease could not be renewed (another run may hold it now). */
  assertHeld(): void;
  release(): Promise<void>;
}

export type LeaseResult =
  | { readonly acquired: true; readonly lease: Lease }
  | { readonly acquired: false; readonly heldBy: string; readonly until?: string };

export interface RotationLock {
  acquire(): Promise<LeaseResult>;
}

function blobLeaseLock(blob: BlobClient, opts: { durationSeconds: number; timeoutMs: number; log?: Logger }): RotationLock {
  const call = <T>(what: string, fn: (abortSignal: AbortSignal) => Promise<T>) => storageCall(opts.timeoutMs, what, fn);
  return {
    async acquire() {
      // The lease needs the blob to exist: create it empty unless it is there (If-None-Match: *).
      try {
        await call('lock create', (abortSignal) =>
          blob.getBlockBlobClient().upload('', 0, { abortSignal, conditions: { ifNoneMatch: '*' } }),
        );
      } catch (e) {
        const s = statusOf(e);
        if (s !== 409 && s !== 412) throw storageFailure(e, 'lock create');
      }
      const owner = randomUUID();
      const leaseClient = blob.getBlobLeaseClient(owner);
      try {
        await call('lock acquire', (abortSignal) => leaseClient.acquireLease(opts.durationSeconds, { abortSignal }));
      } catch (e) {
        if (statusOf(e) !== 409) throw storageFailure(e, 'lock acquire');
        const held = await call('lock read', (abortSignal) => blob.getProperties({ abortSignal })).catch(() => undefined);
        return { acquired: false, heldBy: held?.metadata?.owner ?? 'another run', until: held?.metadata?.acquiredat };
      }
      // Who holds it, for the 409 of the others (written under the lease).
      await call('lock tag', (abortSignal) =>
        blob.setMetadata({ owner, acquiredat: new Date().toISOString() }, { abortSignal, conditions: { leaseId: owner } }),
      ).catch((e: unknown) =>
        opts.log?.warn('rotation lease: could not tag the lock blob', { event: 'rotation.lease-tag-failed', err: e }),
      );
      let lost = false;
      const renew = setInterval(
        () => {
          void call('lock renew', (abortSignal) => leaseClient.renewLease({ abortSignal })).catch((e: unknown) => {
            lost = true;
            clearInterval(renew);
            opts.log?.error('rotation lease lost: the run stops before its next step', { event: 'rotation.lease-lost', err: e });
          });
        },
        Math.max(1000, (opts.durationSeconds * 1000) / 3),
      );
      renew.unref();
      return {
        acquired: true,
        lease: {
          owner,
          assertHeld() {
            if (lost) throw new BrokerError('conflict', 'The rotation lease was lost.', { detail: { reason: 'lease_lost' } });
          },
          async release() {
            clearInterval(renew);
            await call('lock release', (abortSignal) => leaseClient.releaseLease({ abortSignal })).catch((e: unknown) =>
              opts.log?.warn('rotation lease: release failed (it expires by itself)', {
                event: 'rotation.lease-release-failed',
                err: e,
              }),
            );
          },
        },
      };
    },
  };
}

/**
 * The run lease of one rotation from the settings: the blob of ROTATION_LOCK_URL (default: rotation-lock beside the
 * policy blob) for Google keys, `{that blob}-cosmos` for Cosmos account keys, so the two never wait on each other.
 * A ConfigError becomes config_invalid naming the settings.
 */
export function rotationLeaseFromSettings(kind: 'google-keys' | 'cosmos-keys', log: Logger): RotationLock {
  let pol;
  let url: string;
  let seconds: number;
  try {
    const r = rotationConfig.get();
    pol = policyConfig.get();
    url = lockBlobUrl(r.lockUrl, pol) + (kind === 'cosmos-keys' ? '-cosmos' : '');
    seconds = r.lockSeconds;
  } catch (e) {
    throw toBrokerError(e);
  }
  return blobLeaseLock(blobClientFor(pol, url), { durationSeconds: seconds, timeoutMs: pol.storageTimeoutMs, log });
}
