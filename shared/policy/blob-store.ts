import type { TokenCredential } from '@azure/core-auth';
import { ManagedIdentityCredential } from '@azure/identity';
import { BlobClient, ContainerClient, type StoragePipelineOptions } from '@azure/storage-blob';
import { splitBlobUrl, type PolicyConfig } from '../config/policy';
import { BrokerError } from '../errors';
import { sandboxCa } from '../sandbox-ca';
import { httpOutcome, recordUpstream } from '../telemetry';
import { networkFailure, upstreamStatusFailure } from '../upstream';
import type { PolicySource, SourceDocument, SourceRead } from './store';

/**
 * The policy blob in the Function's own storage account, through `@azure/storage-blob` and its managed identity
 * (Storage Blob Data Contributor on the policy container only). Reads are conditional GETs (If-None-Match: the
 * cached ETag; 304 costs no body); writes are conditional on If-Match (412 on a lost race, the Blob service's
 * optimistic concurrency). Every call has a client-side deadline (BROKER_POLICY_TIMEOUT_MS) and one try: the next
 * refresh is the retry. For the loopback sandbox (Azurite) only, BROKER_POLICY_CA_FILE is trusted.
 *
 * References: conditional headers https://learn.microsoft.com/en-us/rest/api/storageservices/specifying-conditional-headers-for-blob-service-operations,
 * concurrency https://learn.microsoft.com/en-us/azure/storage/blobs/concurrency-manage, snapshots
 * https://learn.microsoft.com/en-us/rest/api/storageservices/snapshot-blob.
 */

const MAX_POLICY_BYTES = 1024 * 1024;

let credential: { key: string; value: TokenCredential } | undefined;

function identity(clientId: string | undefined): TokenCredential {
  if (credential?.key !== (clientId ?? '')) {
    credential = { key: clientId ?? '', value: clientId ? new ManagedIdentityCredential({ clientId }) : new ManagedIdentityCredential() };
  }
  return credential.value;
}

function pipelineOptions(cfg: PolicyConfig, url: string): StoragePipelineOptions {
  const ca = sandboxCa({ caFile: cfg.caFile, url, setting: 'BROKER_POLICY_CA_FILE', service: 'The policy store' });
  // tlsOptions reach core-rest-pipeline's tlsPolicy through the storage pipeline's options (the Key Vault client does the same).
  return { retryOptions: { maxTries: 1, tryTimeoutInMs: cfg.storageTimeoutMs }, ...(ca ? { tlsOptions: { ca } } : {}) } as StoragePipelineOptions;
}

export function blobClientFor(cfg: PolicyConfig, url: string, cred: TokenCredential = identity(cfg.clientId)): BlobClient {
  return new BlobClient(url, cred, pipelineOptions(cfg, url));
}

export function containerClientFor(cfg: PolicyConfig, blobUrl: string, cred: TokenCredential = identity(cfg.clientId)): ContainerClient {
  const { containerUrl } = splitBlobUrl(blobUrl);
  return new ContainerClient(containerUrl, cred, pipelineOptions(cfg, containerUrl));
}

interface RestErrorLike {
  name?: string;
  statusCode?: number;
  code?: string;
}

export function statusOf(e: unknown): number | undefined {
  const s = (e as RestErrorLike)?.statusCode;
  return typeof s === 'number' ? s : undefined;
}

/** Any storage failure as a client-safe BrokerError; `what` names the operation. */
export function storageFailure(e: unknown, what: string): BrokerError {
  if (e instanceof BrokerError) return e;
  const err = e as RestErrorLike;
  const status = statusOf(e);
  if (err?.name === 'AbortError' || err?.name === 'TimeoutError') {
    recordUpstream('storage', 'upstream_timeout');
    return new BrokerError('upstream_timeout', `The policy store did not answer in time (${what}).`, { cause: e, retryAfterSeconds: 5 });
  }
  if (status !== undefined && status > 0) {
    recordUpstream('storage', httpOutcome(status));
    const b = upstreamStatusFailure('The policy store', status);
    return new BrokerError(b.code, b.message, { cause: e, retryAfterSeconds: b.retryAfterSeconds });
  }
  recordUpstream('storage', 'upstream_unavailable');
  return networkFailure('The policy store', e);
}

/** A promise with a hard deadline (the SDK's abort signal covers the request; this also covers reading the body). */
export async function withDeadline<T>(ms: number, what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ctl = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      ctl.abort();
      reject(new BrokerError('upstream_timeout', `The policy store did not answer in time (${what}).`, { retryAfterSeconds: 5 }));
    }, ms);
  });
  try {
    return await Promise.race([fn(ctl.signal), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function readBody(stream: NodeJS.ReadableStream | undefined): Promise<string> {
  if (!stream) return '';
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of stream) {
    const b = typeof c === 'string' ? Buffer.from(c) : (c as Buffer);
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

export class BlobPolicySource implements PolicySource {
  readonly kind = 'blob' as const;
  readonly location: string;
  private readonly blob: BlobClient;

  constructor(private readonly cfg: PolicyConfig & { url: string }, cred?: TokenCredential) {
    this.location = cfg.url;
    this.blob = blobClientFor(cfg, cfg.url, cred);
  }

  async read(etag: string | undefined): Promise<SourceRead> {
    try {
      return await withDeadline(this.cfg.storageTimeoutMs, 'read', async (abortSignal) => {
        const res = await this.blob.download(0, undefined, { abortSignal, ...(etag ? { conditions: { ifNoneMatch: etag } } : {}) });
        recordUpstream('storage', 'ok');
        if (res._response.status === 304) return { kind: 'not-modified' } as const;
        const doc: SourceDocument = {
          kind: 'document',
          text: await readBody(res.readableStreamBody),
          etag: res.etag ?? '',
          revision: revisionOf(res.metadata),
          lastModified: res.lastModified,
          metadata: res.metadata ?? {},
        };
        return doc;
      });
    } catch (e) {
      if (statusOf(e) === 304) return { kind: 'not-modified' };
      if (statusOf(e) === 404) {
        throw new BrokerError('policy_unavailable', 'The policy blob does not exist.', { cause: e, retryAfterSeconds: 5 });
      }
      throw storageFailure(e, 'read');
    }
  }
}
