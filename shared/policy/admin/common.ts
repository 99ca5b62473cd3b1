import type { AppContext } from '../../app/context';
import type { HttpRequest } from '@azure/functions';
import { type AdminIdentity } from '../../auth/admin-caller';
import { policyConfig, type PolicyConfig } from '../../config/policy';
import { BrokerError } from '../../errors';
import { parseJsonBody, readBodyText } from '../../http/request';
import { type RequestScope } from '../../http/handler';
import { issuePath } from '../../config/json-document';
import { policySchema, type DenyEntry } from '../schema';
import type { BlobPolicyWriter, WrittenVersion } from '../blob-store';

/**
 * The admin API of the live policy (BROKER_POLICY_URL): read it with its ETag, replace it with If-Match (412 on a
 * lost race; schema-checked before anything is written: a broken policy never goes live), add and remove deny
 * entries (emergency revocation), and list the kept versions. Every call is an admin call (shared/auth/admin-caller.ts)
 * and audited; every write names who made it, and is effective on this instance at once and on every other
 * instance within BROKER_POLICY_REFRESH_SECONDS.
 */

export const MAX_POLICY_BODY = 256 * 1024;
const WRITE_ATTEMPTS = 4;

function settings(app: AppContext): PolicyConfig {
  return app.settings(policyConfig);
}

export async function writer(app: AppContext): Promise<BlobPolicyWriter> {
  const cfg = settings(app);
  if (!cfg.url) {
    throw new BrokerError(
      'conflict',
      'The policy is a read-only file (BROKER_POLICY_PATH); the admin API edits the policy in Blob Storage (BROKER_POLICY_URL).',
      {
        detail: { reason: 'read_only_source' },
      },
    );
  }
  const { BlobPolicyWriter } = await import('../blob-store');
  return new BlobPolicyWriter({ ...cfg, url: cfg.url }, app.identities.get(cfg.clientId));
}

export const who = (id: AdminIdentity) => `${id.admin.tenantId}/${id.admin.objectId}`;

/** Schema-check a document (already strictly parsed: no duplicate members); 400 policy_invalid naming the first bad path. */
export function checkDocument(raw: unknown): void {
  const r = policySchema.safeParse(raw);
  if (r.success) return;
  const problems = r.error.issues.map((i) => `${issuePath(i.path)}: ${i.message}`);
  throw new BrokerError('policy_invalid', `The policy is invalid: ${problems.slice(0, 10).join('; ')}`, {
    detail: { path: issuePath(r.error.issues[0]!.path), problems: problems.slice(0, 20).join('; ') },
  });
}

export function versionHeaders(v: { etag: string }): Record<string, string> {
  return { etag: v.etag };
}

/** One entity tag, quoted (RFC 9110 §8.8.3); lists and weak tags are refused, `*` only where it is meant. */
export function entityTag(raw: string | null, header: string): string | undefined {
  if (raw === null) return undefined;
  const v = raw.trim();
  if (!/^"[\x21\x23-\x7e]{1,128}"$/.test(v)) {
    throw new BrokerError('bad_request', `${header} must be one strong entity tag, as the ETag header gave it.`, {
      detail: { parameter: header },
    });
  }
  return v;
}

/** Read-modify-write of the deny list, If-Match the version read; retried when another write won the race. */
export async function editDeny(
  w: BlobPolicyWriter,
  id: AdminIdentity,
  scope: RequestScope,
  change: string,
  reason: string | undefined,
  edit: (deny: DenyEntry[]) => DenyEntry[],
): Promise<WrittenVersion> {
  for (let attempt = 1; ; attempt++) {
    const cur = await w.read();
    if (!cur) throw new BrokerError('policy_unavailable', 'The policy blob does not exist.');
    const doc = JSON.parse(cur.text) as Record<string, unknown> & { deny?: DenyEntry[] };
    doc.deny = edit([...(doc.deny ?? [])]);
    checkDocument(doc);
    try {
      return await w.write(
        JSON.stringify(doc, null, 2) + '\n',
        { ifMatch: cur.etag },
        { by: who(id), change, correlationId: scope.correlationId, reason },
      );
    } catch (e) {
      if (!(e instanceof BrokerError && e.code === 'precondition_failed') || attempt >= WRITE_ATTEMPTS) throw e;
    }
  }
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

export function stringField(
  body: Record<string, unknown>,
  name: string,
  opts: { required?: boolean; max?: number; pattern?: RegExp; what?: string } = {},
): string | undefined {
  const v = body[name];
  if (v === undefined || v === null) {
    if (opts.required) throw new BrokerError('invalid_parameter', `"${name}" is required.`, { detail: { parameter: name } });
    return undefined;
  }
  if (
    typeof v !== 'string' ||
    v.trim() === '' ||
    v.length > (opts.max ?? 500) ||
    (opts.pattern && !opts.pattern.test(v)) ||
    CONTROL.test(v)
  ) {
    throw new BrokerError(
      'invalid_parameter',
      `"${name}" must be ${opts.what ?? `a string of at most ${opts.max ?? 500} characters`}.`,
      { detail: { parameter: name } },
    );
  }
  return v;
}

/** A number JSON can write but not hold (1e400 is Infinity once parsed) is refused, naming where it is. */
export function assertFinite(v: unknown, path: string): void {
  if (typeof v === 'number' && !Number.isFinite(v)) {
    throw new BrokerError('bad_request', `"${path.slice(0, 64)}" is not a finite number.`, {
      detail: { parameter: path.slice(0, 64) },
    });
  }
  if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v as Record<string, unknown>))
      assertFinite(x, path ? (Array.isArray(v) ? `${path}[${k}]` : `${path}.${k}`) : k);
  }
}

export async function readJson(req: HttpRequest, allowEmpty: boolean): Promise<Record<string, unknown>> {
  const text = await readBodyText(req);
  if (text.length === 0 && allowEmpty) return {};
  const type = (req.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') throw new BrokerError('unsupported_media_type', 'Send application/json.');
  const parsed = parseJsonBody(text);
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
    throw new BrokerError('bad_request', 'The request body must be a JSON object.');
  assertFinite(parsed, '');
  return parsed as Record<string, unknown>;
}
