import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { BrokerError, toBrokerError } from '../errors';
import type { Logger } from '../observability/log';
import { parsePolicy } from './load';
import type { Policy } from './schema';

/**
 * The live policy of one broker instance: a source (a blob read with conditional GETs, or a file) polled at most
 * every `refreshMs`, and the last good document. Fail safe: a source that cannot be read, or that holds a document
 * that does not parse, keeps the last good policy for at most `maxStaleMs` after it was last confirmed, then every
 * caller gets 503 policy_unavailable. Never an empty or permissive policy.
 */

export interface SourceDocument {
  readonly kind: 'document';
  readonly text: string;
  /** The store's ETag (quoted), or a content hash for a file. */
  readonly etag: string;
  /** The write counter kept in the blob's metadata (absent for a file). */
  readonly revision?: number;
  readonly lastModified?: Date;
  readonly metadata?: Readonly<Record<string, string>>;
}

export type SourceRead = { readonly kind: 'not-modified' } | SourceDocument;

export interface PolicySource {
  readonly kind: 'blob' | 'file';
  /** Where it reads from (URL or path), for health and logs. */
  readonly location: string;
  /** The document, or not-modified when its ETag is still `etag`. Errors are BrokerErrors (never upstream text). */
  read(etag: string | undefined): Promise<SourceRead>;
}

export interface PolicyVersion {
  readonly policy: Policy;
  readonly etag: string;
  readonly revision?: number;
  readonly lastModified?: string;
  readonly source: 'blob' | 'file';
  readonly text: string;
}

export interface PolicyState {
  readonly source: 'blob' | 'file';
  readonly location: string;
  readonly version?: Omit<PolicyVersion, 'policy' | 'text'>;
  /** ms since the epoch of the last read that confirmed the document (200 or 304). */
  readonly confirmedAt?: number;
  /** The last read failed (the store is unreachable or holds an invalid document). */
  readonly failing: boolean;
  readonly lastError?: string;
}

export class PolicyStore {
  private good: { version: PolicyVersion; confirmedAt: number } | undefined;
  private checkedAt = Number.NEGATIVE_INFINITY;
  private failing = false;
  private lastError: BrokerError | undefined;
  private inflight: Promise<void> | undefined;

  constructor(
    readonly source: PolicySource,
    private readonly opts: { refreshMs: number; maxStaleMs: number; now?: () => number; log?: Logger },
  ) {}

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /** The policy to decide with now. Reads the source first when the last read is older than the interval. */
  current(): Promise<PolicyVersion> {
    if (this.now() - this.checkedAt >= this.opts.refreshMs) return this.refresh().then(() => this.usable());
    try {
      return Promise.resolve(this.usable());
    } catch (e) {
      return Promise.reject(toBrokerError(e)); // a BrokerError already: the same object
    }
  }

  /** current() without a promise when no read is due; undefined when one is (then call current()). */
  currentIfChecked(): PolicyVersion | undefined {
    return this.now() - this.checkedAt >= this.opts.refreshMs ? undefined : this.usable();
  }

  private usable(): PolicyVersion {
    const g = this.good;
    if (g && (!this.failing || this.now() - g.confirmedAt <= this.opts.maxStaleMs)) return g.version;
    if (!g && this.lastError && this.lastError.code !== 'policy_unavailable') throw this.lastError;
    throw new BrokerError('policy_unavailable', 'The access policy cannot be read right now; nothing is granted until it can.', {
      cause: this.lastError,
      retryAfterSeconds: Math.max(1, Math.ceil(this.opts.refreshMs / 1000)),
    });
  }

  /** Read the source now (one read at a time per instance; concurrent callers share it). */
  refresh(): Promise<void> {
    this.inflight ??= this.doRefresh().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  /** Forget when it was last read: the next current() reads (after this instance wrote it). */
  invalidate(): void {
    this.checkedAt = Number.NEGATIVE_INFINITY;
  }

  private async doRefresh(): Promise<void> {
    const started = this.now();
    try {
      const r = await this.source.read(this.good?.version.etag);
      if (r.kind === 'not-modified') {
        if (this.good) this.good.confirmedAt = started;
      } else {
        // An invalid document is a ConfigError naming the bad entries: mapped to config_invalid below, like a read failure.
        const policy: Policy = parsePolicy(r.text, this.source.kind === 'blob' ? 'blob' : this.source.location);
        const changed = this.good?.version.etag !== r.etag;
        this.good = {
          version: {
            policy,
            etag: r.etag,
            revision: r.revision,
            lastModified: r.lastModified?.toISOString(),
            source: this.source.kind,
            text: r.text,
          },
          confirmedAt: started,
        };
        if (changed) {
          this.opts.log?.info('policy loaded', {
            event: 'policy.loaded',
            source: this.source.kind,
            etag: r.etag,
            revision: r.revision,
            rules: policy.rules.length,
            deny: policy.deny.length,
          });
        }
      }
      if (this.failing) this.opts.log?.info('policy store readable again', { event: 'policy.recovered' });
      this.failing = false;
      this.lastError = undefined;
    } catch (e) {
      const err = toBrokerError(e);
      this.failing = true;
      this.lastError = err;
      this.opts.log?.warn('policy store read failed; serving the last good policy while it is fresh enough', {
        event: 'policy.read-failed',
        code: err.code,
        lastGoodEtag: this.good?.version.etag,
        confirmedAgoMs: this.good ? started - this.good.confirmedAt : undefined,
        err: e,
      });
    } finally {
      this.checkedAt = started;
    }
  }

  state(): PolicyState {
    const v = this.good?.version;
    return {
      source: this.source.kind,
      location: this.source.location,
      ...(v ? { version: { etag: v.etag, revision: v.revision, lastModified: v.lastModified, source: v.source } } : {}),
      confirmedAt: this.good?.confirmedAt,
      failing: this.failing,
      lastError: this.lastError?.message,
    };
  }
}

/** A content hash as a quoted ETag. */
function contentEtag(text: string): string {
  return `"${createHash('sha256').update(text).digest('hex').slice(0, 32)}"`;
}

/** A policy file (local use and tests): re-read when its modification time or size changes. */
export class FilePolicySource implements PolicySource {
  readonly kind = 'file' as const;
  private seen: { key: string; etag: string } | undefined;
  constructor(readonly location: string) {}

  async read(etag: string | undefined): Promise<SourceRead> {
    let key: string;
    try {
      const s = await stat(this.location);
      key = `${s.mtimeMs}:${s.size}`;
      if (etag !== undefined && this.seen?.key === key && this.seen.etag === etag) return { kind: 'not-modified' };
      const text = await readFile(this.location, 'utf8');
      const e = contentEtag(text);
      this.seen = { key, etag: e };
      return e === etag ? { kind: 'not-modified' } : { kind: 'document', text, etag: e, lastModified: s.mtime };
    } catch (e) {
      throw new BrokerError('config_invalid', `The policy file BROKER_POLICY_PATH=${this.location} cannot be read.`, {
        cause: e,
      });
    }
  }
}
