import type { TokenCredential } from '@azure/core-auth';
import { BlobClient, ContainerClient, type BlobDownloadResponseParsed, type StoragePipelineOptions } from '@azure/storage-blob';
import { splitBlobUrl, type PolicyConfig } from '../config/policy';
import { BrokerError } from '../errors';
import { ManagedIdentities } from '../azure/managed-identity';
import { localEndpointCa } from '../upstream/local-endpoints';
import { httpOutcome, recordUpstream } from '../observability/telemetry';
import { networkFailure, upstreamStatusFailure } from '../upstream/failure';
import { withDeadline } from '../upstream/deadline';
import { statusOf } from '../upstream/error-shape';
import type { PolicySource, SourceDocument, SourceRead } from './store';

/**
 * The policy blob in the Function's own storage account, through `@azure/storage-blob` and its managed identity
 * (Storage Blob Data Contributor on the policy container only). Reads are conditional GETs (If-None-Match: the
 * cached ETag; 304 costs no body); writes are conditional on If-Match (412 on a lost race, the Blob service's
 * optimistic concurrency). Every call has a client-side deadline (BROKER_POLICY_TIMEOUT_MS) and one try: the next
 * refresh is the retry. For a loopback local development endpoint (Azurite) only, BROKER_POLICY_CA_FILE is trusted.
 *
 * References: conditional headers https://learn.microsoft.com/en-us/rest/api/storageservices/specifying-conditional-headers-for-blob-service-operations,
 * concurrency https://learn.microsoft.com/en-us/azure/storage/blobs/concurrency-manage, snapshots
 * https://learn.microsoft.com/en-us/rest/api/storageservices/snapshot-blob.
 */

const MAX_POLICY_BYTES = 1024 * 1024;

/** The Function's managed identity: callers pass the app context's (shared with Key Vault and Google STS). */
const identity = (clientId: string | undefined): TokenCredential => new ManagedIdentities().get(clientId);

function pipelineOptions(cfg: PolicyConfig, url: string): StoragePipelineOptions {
  const ca = localEndpointCa({ caFile: cfg.caFile, url, setting: 'BROKER_POLICY_CA_FILE', service: 'The policy store' });
  // tlsOptions reach core-rest-pipeline's tlsPolicy through the storage pipeline's options (the Key Vault client does the same).
  return { retryOptions: { maxTries: 1, tryTimeoutInMs: cfg.storageTimeoutMs }, ...(ca ? { tlsOptions: { ca } } : {}) };
}

export function blobClientFor(cfg: PolicyConfig, url: string, cred: TokenCredential = identity(cfg.clientId)): BlobClient {
  return new BlobClient(url, cred, pipelineOptions(cfg, url));
}

function containerClientFor(cfg: PolicyConfig, blobUrl: string, cred: TokenCredential = identity(cfg.clientId)): ContainerClient {
  const { containerUrl } = splitBlobUrl(blobUrl);
  return new ContainerClient(containerUrl, cred, pipelineOptions(cfg, containerUrl));
}

interface RestErrorLike {
  name?: string;
  statusCode?: number;
  code?: string;
}

const STORAGE_AUTH_HINTS: Readonly<Record<string, string>> = {
  InvalidAuthenticationInfo:
    "InvalidAuthenticationInfo (Storage did not accept the managed identity's token: tenant, audience or expiry).",
  AuthorizationPermissionMismatch:
    'AuthorizationPermissionMismatch (the managed identity, AZURE_CLIENT_ID, has no Storage Blob Data role on the container).',
};

/** Any storage failure as a client-safe BrokerError; `what` names the operation. */
export function storageFailure(e: unknown, what: string): BrokerError {
  if (e instanceof BrokerError) return e;
  const err = e as RestErrorLike;
  const status = statusOf(e);
  if (err?.name === 'AbortError' || err?.name === 'TimeoutError') {
    recordUpstream('storage', 'upstream_timeout');
    return new BrokerError('upstream_timeout', `The policy store did not answer in time (${what}).`, { cause: e });
  }
  if (status !== undefined && status > 0) {
    recordUpstream('storage', httpOutcome(status));
    const b = upstreamStatusFailure('The policy store', status);
    // Storage's own code says what to fix (fixed phrases, never Storage's text): a token it does not take, or an
    // identity without a data role on the container (AZURE_CLIENT_ID, the Bicep role assignment).
    const hint = STORAGE_AUTH_HINTS[err?.code ?? ''];
    const message = hint ? `${b.message.replace(/\.$/, '')}: ${hint}` : b.message;
    return new BrokerError(b.code, message, { cause: e, retryAfterSeconds: b.retryAfterSeconds });
  }
  recordUpstream('storage', 'upstream_unavailable');
  return networkFailure('The policy store', e);
}

/** A storage call with a hard deadline: the SDK's abort signal covers the request; the deadline also covers reading the body. */
export function storageCall<T>(ms: number, what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ctl = new AbortController();
  return withDeadline(fn(ctl.signal), ms, () => {
    ctl.abort();
    return new BrokerError('upstream_timeout', `The policy store did not answer in time (${what}).`);
  });
}

async function readBody(stream: NodeJS.ReadableStream | undefined): Promise<string> {
  if (!stream) return '';
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of stream) {
    const b = typeof c === 'string' ? Buffer.from(c) : c;
    size += b.byteLength;
    if (size > MAX_POLICY_BYTES) throw new BrokerError('upstream_error', 'The policy blob is larger than 1 MiB.');
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function revisionOf(metadata: Record<string, string> | undefined): number | undefined {
  const r = metadata?.revision;
  return r && /^\d{1,12}$/.test(r) ? Number(r) : undefined;
}

/** A downloaded blob as the policy store's document (body read in full, bounded by the caller's deadline). */
async function documentOf(res: BlobDownloadResponseParsed): Promise<SourceDocument> {
  return {
    kind: 'document',
    text: await readBody(res.readableStreamBody),
    etag: res.etag ?? '',
    revision: revisionOf(res.metadata),
    lastModified: res.lastModified,
    metadata: res.metadata ?? {},
  };
}

export class BlobPolicySource implements PolicySource {
  readonly kind = 'blob' as const;
  readonly location: string;
  private readonly blob: BlobClient;

  constructor(
    private readonly cfg: PolicyConfig & { url: string },
    cred?: TokenCredential,
  ) {
    this.location = cfg.url;
    this.blob = blobClientFor(cfg, cfg.url, cred);
  }

  async read(etag: string | undefined): Promise<SourceRead> {
    try {
      return await storageCall(this.cfg.storageTimeoutMs, 'read', async (abortSignal) => {
        const res = await this.blob.download(0, undefined, {
          abortSignal,
          ...(etag ? { conditions: { ifNoneMatch: etag } } : {}),
        });
        recordUpstream('storage', 'ok');
        if (res._response.status === 304) return { kind: 'not-modified' } as const;
        return documentOf(res);
      });
    } catch (e) {
      if (statusOf(e) === 304) return { kind: 'not-modified' };
      if (statusOf(e) === 404) {
        throw new BrokerError('policy_unavailable', 'The policy blob does not exist.', { cause: e });
      }
      throw storageFailure(e, 'read');
    }
  }
}

/** Who wrote a version and why (blob metadata: ASCII, C# identifier names). */
export interface WriteMeta {
  /** `TENANT/OBJECT` of the admin. */
  readonly by: string;
  /** `put`, `deny.add:ID`, `deny.remove:ID`. */
  readonly change: string;
  readonly correlationId: string;
  readonly reason?: string;
}

export interface WrittenVersion {
  readonly etag: string;
  readonly revision: number;
  readonly lastModified?: string;
}

export interface HistoryEntry {
  /** The snapshot time (the id to fetch it with), absent for the current version. */
  readonly snapshot?: string;
  readonly current: boolean;
  readonly etag?: string;
  readonly revision?: number;
  readonly lastModified?: string;
  readonly updatedBy?: string;
  readonly updatedAt?: string;
  readonly change?: string;
  readonly reason?: string;
  readonly correlationId?: string;
}

const ascii = (s: string, max: number) => s.replace(/[^\x20-\x7e]/g, '?').slice(0, max);

/**
 * Writes of the policy blob. Every write is conditional: If-Match the ETag the writer read (or If-None-Match: *
 * to create the first version), so of two writers that read the same version exactly one wins and the other gets
 * 412. Before a version is replaced it is kept as a snapshot taken under the same condition (the history:
 * Azurite has no blob versioning; in Azure, versioning is on as well). Metadata records the revision (a counter),
 * who wrote it, when, what changed and the correlation id of the request.
 */
export class BlobPolicyWriter {
  private readonly blob: BlobClient;
  private readonly container: ContainerClient;
  private readonly blobName: string;

  constructor(
    private readonly cfg: PolicyConfig & { url: string },
    cred?: TokenCredential,
  ) {
    this.blob = blobClientFor(cfg, cfg.url, cred);
    this.container = containerClientFor(cfg, cfg.url, cred);
    this.blobName = splitBlobUrl(cfg.url).blobName;
  }

  private call<T>(what: string, fn: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    return storageCall(this.cfg.storageTimeoutMs, what, fn);
  }

  /** The current version, read now (no cache); undefined when the blob does not exist yet. */
  async read(snapshot?: string): Promise<SourceDocument | undefined> {
    const blob = snapshot ? this.blob.withSnapshot(snapshot) : this.blob;
    try {
      return await this.call('read', async (abortSignal) => {
        const res = await blob.download(0, undefined, { abortSignal });
        return documentOf(res);
      });
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw storageFailure(e, 'read');
    }
  }

  async write(text: string, condition: { ifMatch: string } | { ifNoneMatch: '*' }, meta: WriteMeta): Promise<WrittenVersion> {
    const lost = (e: unknown) =>
      new BrokerError(
        'precondition_failed',
        'The policy was changed since it was read: read it again (GET) and retry with its ETag.',
        { cause: e },
      );
    // The snapshot this write took of the version it meant to replace: dropped again when the write fails (two
    // writers of one ETag both snapshot it before either uploads; the loser's copy is no kept version of its own).
    let taken: string | undefined;
    try {
      let revision = 1;
      if ('ifMatch' in condition) {
        const props = await this.call('properties', (abortSignal) =>
          this.blob.getProperties({ abortSignal, conditions: { ifMatch: condition.ifMatch } }),
        );
        revision = (revisionOf(props.metadata) ?? 0) + 1;
        // Keep the version being replaced (under the same condition: once replaced, nothing is snapshot).
        taken = (
          await this.call('snapshot', (abortSignal) =>
            this.blob.createSnapshot({ abortSignal, conditions: { ifMatch: condition.ifMatch } }),
          )
        ).snapshot;
      }
      const res = await this.call('write', (abortSignal) =>
        this.blob.getBlockBlobClient().upload(text, Buffer.byteLength(text), {
          abortSignal,
          conditions: condition,
          blobHTTPHeaders: { blobContentType: 'application/json' },
          metadata: {
            revision: String(revision),
            updatedby: ascii(meta.by, 200),
            updatedat: new Date().toISOString(),
            change: ascii(meta.change, 100),
            correlationid: ascii(meta.correlationId, 128),
            ...(meta.reason ? { reason: ascii(meta.reason, 500) } : {}),
          },
        }),
      );
      return { etag: res.etag ?? '', revision, lastModified: res.lastModified?.toISOString() };
    } catch (e) {
      if (taken) await this.dropSnapshot(taken);
      const s = statusOf(e);
      if (s === 412 || (s === 409 && 'ifNoneMatch' in condition)) throw lost(e);
      if (s === 404)
        throw new BrokerError('precondition_failed', 'The policy blob does not exist: create it with If-None-Match: *.', {
          cause: e,
        });
      throw storageFailure(e, 'write');
    }
  }

  /** Best effort: a snapshot left behind is harmless (history() lists each version once). */
  private async dropSnapshot(snapshot: string): Promise<void> {
    await this.call('snapshot-delete', (abortSignal) => this.blob.withSnapshot(snapshot).delete({ abortSignal })).catch(
      () => undefined,
    );
  }

  /**
   * Every kept version and the current one, each once, newest first. A snapshot has the ETag of the version it
   * copied: snapshots of one version (left by writes that lost a race, or failed after their snapshot) are listed
   * once (the oldest snapshot: the first one kept), and a snapshot of the current version not at all.
   */
  async history(): Promise<HistoryEntry[]> {
    try {
      return await this.call('history', async (abortSignal) => {
        const out: HistoryEntry[] = [];
        for await (const item of this.container.listBlobsFlat({
          prefix: this.blobName,
          includeSnapshots: true,
          includeMetadata: true,
          abortSignal,
        })) {
          if (item.name !== this.blobName) continue;
          const m = item.metadata ?? {};
          out.push({
            ...(item.snapshot ? { snapshot: item.snapshot } : {}),
            current: !item.snapshot,
            etag: item.properties.etag,
            revision: revisionOf(m),
            lastModified: item.properties.lastModified?.toISOString(),
            updatedBy: m.updatedby,
            updatedAt: m.updatedat,
            change: m.change,
            reason: m.reason,
            correlationId: m.correlationid,
          });
          if (out.length > 1000) break;
        }
        const current = out.filter((v) => v.current);
        const seen = new Set(current.map((v) => v.etag));
        const snapshots = out
          .filter((v) => !v.current)
          .sort((a, b) => (a.snapshot ?? '').localeCompare(b.snapshot ?? '')) // oldest first: the first copy of each is kept
          .filter((v) => {
            if (v.etag === undefined) return true;
            if (seen.has(v.etag)) return false;
            seen.add(v.etag);
            return true;
          });
        return [...current, ...snapshots.reverse()];
      });
    } catch (e) {
      throw storageFailure(e, 'history');
    }
  }
}
