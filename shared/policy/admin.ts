import { randomUUID } from 'node:crypto';
import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { audit } from '../audit';
import { ADMIN_TOKEN_HEADER, authenticateAdmin, type AdminIdentity } from '../auth/admin';
import { policyConfig, type PolicyConfig } from '../config/policy';
import { GUID } from '../config/settings';
import { BrokerError, toBrokerError } from '../errors';
import { jsonResponse, parseJsonBody, queryParam, readBodyText, type RequestScope } from '../http';
import { issuePath } from '../json-document';
import { policyStore } from './current';
import { DENY_ID, policySchema, type DenyEntry } from './schema';
import type { BlobPolicyWriter, WrittenVersion } from './blob-store';

/**
 * The admin API of the live policy (BROKER_POLICY_URL): read it with its ETag, replace it with If-Match (412 on a
 * lost race; schema-checked before anything is written: a broken policy never goes live), add and remove deny
 * entries (emergency revocation), and list the kept versions. Every call is an admin call (shared/auth/admin.ts)
 * and audited; every write names who made it, and is effective on this instance at once and on every other
 * instance within BROKER_POLICY_REFRESH_SECONDS.
 */

const MAX_POLICY_BODY = 256 * 1024;
const WRITE_ATTEMPTS = 4;

function settings(): PolicyConfig {
  try {
    return policyConfig.get();
  } catch (e) {
    throw toBrokerError(e); // a ConfigError: config_invalid naming the settings
  }
}

async function writer(): Promise<BlobPolicyWriter> {
  const cfg = settings();
  if (!cfg.url) {
    throw new BrokerError(
      'conflict',
      'The policy is a read-only file (BROKER_POLICY_PATH); the admin API edits the policy in Blob Storage (BROKER_POLICY_URL).',
      {
        detail: { reason: 'read_only_source' },
      },
    );
  }
  const { BlobPolicyWriter } = await import('./blob-store');
  return new BlobPolicyWriter({ ...cfg, url: cfg.url });
}

const who = (id: AdminIdentity) => `${id.admin.tenantId}/${id.admin.objectId}`;

/** Schema-check a document (already strictly parsed: no duplicate members); 400 policy_invalid naming the first bad path. */
function checkDocument(raw: unknown): void {
  const r = policySchema.safeParse(raw);
  if (r.success) return;
  const problems = r.error.issues.map((i) => `${issuePath(i.path)}: ${i.message}`);
  throw new BrokerError('policy_invalid', `The policy is invalid: ${problems.slice(0, 10).join('; ')}`, {
    detail: { path: issuePath(r.error.issues[0]!.path), problems: problems.slice(0, 20).join('; ') },
  });
}

function versionHeaders(v: { etag: string }): Record<string, string> {
  return { etag: v.etag };
}

/** GET /api/admin/policy: the document this instance decides with, read fresh, with its ETag and revision. */
export async function handleGetPolicy(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  const id = await authenticateAdmin(req, scope, 'policy.read');
  const store = await policyStore();
  store.invalidate(); // an admin about to edit wants the latest ETag, not this instance's cached one
  const v = await store.current();
  const st = store.state();
  audit(scope.log, {
    decision: 'grant',
    action: 'policy.read',
    client: id.client,
    subject: id.admin,
    reason: 'granted',
    extra: { etag: v.etag, revision: v.revision },
  });
  return jsonResponse(
    200,
    {
      etag: v.etag,
      ...(v.revision !== undefined ? { revision: v.revision } : {}),
      ...(v.lastModified ? { lastModified: v.lastModified } : {}),
      source: v.source,
      stale: st.failing,
      policy: JSON.parse(v.text) as unknown,
    },
    scope,
    versionHeaders(v),
  );
}

/** One entity tag, quoted (RFC 9110 §8.8.3); lists and weak tags are refused, `*` only where it is meant. */
function entityTag(raw: string | null, header: string): string | undefined {
  if (raw === null) return undefined;
  const v = raw.trim();
  if (!/^"[\x21\x23-\x7e]{1,128}"$/.test(v)) {
    throw new BrokerError('bad_request', `${header} must be one strong entity tag, as the ETag header gave it.`, {
      detail: { parameter: header },
    });
  }
  return v;
}

/** PUT /api/admin/policy: replace the document, If-Match its ETag (or If-None-Match: * for the first version). */
export async function handlePutPolicy(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  // The request's shape first (as every endpoint: a malformed body is 400 whoever sends it), then the admin.
  let text = '';
  let raw: unknown;
  const id = await authenticateAdmin(req, scope, 'policy.write', async () => {
    const type = (req.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/json') throw new BrokerError('unsupported_media_type', 'Send the policy as application/json.');
    text = await readBodyText(req, MAX_POLICY_BODY);
    raw = parseJsonBody(text);
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
      throw new BrokerError('bad_request', 'The policy must be a JSON object.');
    assertFinite(raw, '');
    return req.headers.get(ADMIN_TOKEN_HEADER)?.trim() || undefined;
  });
  const w = await writer();
  const createOnly = req.headers.get('if-none-match')?.trim() === '*';
  const ifMatch = createOnly ? undefined : entityTag(req.headers.get('if-match'), 'If-Match');
  if (!ifMatch && !createOnly) {
    throw new BrokerError(
      'precondition_required',
      'Send If-Match with the ETag of the policy you edited (GET /api/admin/policy), or If-None-Match: * to create the first version.',
    );
  }
  const deny = (reason: string, extra: Record<string, string | number | undefined> = {}) =>
    audit(scope.log, {
      decision: 'deny',
      action: 'policy.write',
      client: id.client,
      subject: id.admin,
      reason,
      extra: { ifMatch, ...extra },
    });
  try {
    checkDocument(raw);
  } catch (e) {
    deny(
      e instanceof BrokerError ? e.code : 'bad_request',
      e instanceof BrokerError && typeof e.detail?.path === 'string' ? { path: e.detail.path } : {},
    );
    throw e;
  }
  let written: WrittenVersion;
  try {
    written = await w.write(text, ifMatch ? { ifMatch } : { ifNoneMatch: '*' }, {
      by: who(id),
      change: 'put',
      correlationId: scope.correlationId,
    });
  } catch (e) {
    deny(e instanceof BrokerError ? e.code : 'internal');
    throw e;
  }
  (await policyStore()).invalidate();
  const doc = raw as { rules: unknown[]; deny?: unknown[] };
  audit(scope.log, {
    decision: 'grant',
    action: 'policy.write',
    client: id.client,
    subject: id.admin,
    reason: 'written',
    extra: { ifMatch, etag: written.etag, revision: written.revision, rules: doc.rules.length, deny: doc.deny?.length ?? 0 },
  });
  return jsonResponse(
    createOnly ? 201 : 200,
    { etag: written.etag, revision: written.revision, lastModified: written.lastModified },
    scope,
    versionHeaders(written),
  );
}

/** Read-modify-write of the deny list, If-Match the version read; retried when another write won the race. */
async function editDeny(
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

function stringField(
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
function assertFinite(v: unknown, path: string): void {
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

async function readJson(req: HttpRequest, allowEmpty: boolean): Promise<Record<string, unknown>> {
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

/** POST /api/admin/deny: {tenantId, objectId, reason, expiresAt?} — the identity is refused everywhere from now on. */
export async function handleAddDeny(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  let fields: { tenantId: string; objectId: string; reason: string; expiresAt?: string } | undefined;
  const id = await authenticateAdmin(req, scope, 'policy.deny.add', async () => {
    const body = await readJson(req, false);
    for (const k of Object.keys(body)) {
      if (!['tenantId', 'objectId', 'reason', 'expiresAt'].includes(k)) {
        throw new BrokerError('invalid_parameter', `Unknown field "${k.slice(0, 64)}".`, {
          detail: { parameter: k.slice(0, 64) },
        });
      }
    }
    const tenantId = stringField(body, 'tenantId', { required: true, pattern: GUID, what: 'a tenant GUID' })!.toLowerCase();
    const objectId = stringField(body, 'objectId', { required: true, pattern: GUID, what: 'an object id GUID' })!.toLowerCase();
    const reason = stringField(body, 'reason', { required: true, max: 500 })!;
    const expiresAt = stringField(body, 'expiresAt', {
      pattern: /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/,
      what: 'an ISO 8601 UTC time in the future',
    });
    if (expiresAt !== undefined && !(Date.parse(expiresAt) > Date.now())) {
      throw new BrokerError('invalid_parameter', '"expiresAt" must be an ISO 8601 UTC time in the future.', {
        detail: { parameter: 'expiresAt' },
      });
    }
    fields = { tenantId, objectId, reason, ...(expiresAt ? { expiresAt } : {}) };
    return req.headers.get(ADMIN_TOKEN_HEADER)?.trim() || undefined;
  });
  const { tenantId, objectId, reason, expiresAt } = fields!;
  const w = await writer();
  const entry: DenyEntry = {
    id: `deny-${randomUUID()}`,
    tenantId,
    objectId,
    reason,
    ...(expiresAt ? { expiresAt } : {}),
    createdAt: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    createdBy: who(id),
  };
  const written = await editDeny(w, id, scope, `deny.add:${entry.id}`, reason, (d) => [...d, entry]);
  (await policyStore()).invalidate();
  audit(scope.log, {
    decision: 'grant',
    action: 'policy.deny.add',
    client: id.client,
    subject: id.admin,
    target: `${tenantId}/${objectId}`,
    reason: 'written',
    extra: { denyId: entry.id, expiresAt, etag: written.etag, revision: written.revision },
  });
  return jsonResponse(201, { entry, etag: written.etag, revision: written.revision }, scope, versionHeaders(written));
}

/** DELETE /api/admin/deny/{id}: lift one deny entry; optional JSON body {reason}. */
export async function handleRemoveDeny(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  let body: Record<string, unknown> = {};
  const id = await authenticateAdmin(req, scope, 'policy.deny.remove', async () => {
    body = await readJson(req, true);
    for (const k of Object.keys(body)) {
      if (k !== 'reason')
        throw new BrokerError('invalid_parameter', `Unknown field "${k.slice(0, 64)}".`, {
          detail: { parameter: k.slice(0, 64) },
        });
    }
    return req.headers.get(ADMIN_TOKEN_HEADER)?.trim() || undefined;
  });
  const denyId = req.params.id ?? '';
  if (!DENY_ID.test(denyId))
    throw new BrokerError('invalid_parameter', 'The deny entry id is malformed.', { detail: { parameter: 'id' } });
  const reason = stringField(body, 'reason', { max: 500 });
  const w = await writer();
  let removed: DenyEntry | undefined;
  const written = await editDeny(w, id, scope, `deny.remove:${denyId}`, reason, (d) => {
    const i = d.findIndex((e) => e.id === denyId);
    if (i < 0) throw new BrokerError('not_found', 'No deny entry has this id.', { detail: { id: denyId } });
    removed = d[i];
    return [...d.slice(0, i), ...d.slice(i + 1)];
  }).catch((e: unknown) => {
    if (e instanceof BrokerError && e.code === 'not_found') {
      audit(scope.log, {
        decision: 'deny',
        action: 'policy.deny.remove',
        client: id.client,
        subject: id.admin,
        reason: 'not_found',
        extra: { denyId },
      });
    }
    throw e;
  });
  (await policyStore()).invalidate();
  audit(scope.log, {
    decision: 'grant',
    action: 'policy.deny.remove',
    client: id.client,
    subject: id.admin,
    target: removed ? `${removed.tenantId}/${removed.objectId}` : undefined,
    reason: 'written',
    extra: { denyId, etag: written.etag, revision: written.revision },
  });
  return jsonResponse(200, { removed, etag: written.etag, revision: written.revision }, scope, versionHeaders(written));
}

const SNAPSHOT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z$/;

/** GET /api/admin/policy/history: every kept version, newest first; `?snapshot=T` returns that version's document. */
export async function handlePolicyHistory(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  const id = await authenticateAdmin(req, scope, 'policy.history');
  const snapshot = queryParam(req, 'snapshot');
  if (snapshot !== undefined && !SNAPSHOT.test(snapshot)) {
    throw new BrokerError('invalid_parameter', 'snapshot must be a snapshot time as the history lists it.', {
      detail: { parameter: 'snapshot' },
    });
  }
  const w = await writer();
  audit(scope.log, {
    decision: 'grant',
    action: 'policy.history',
    client: id.client,
    subject: id.admin,
    reason: 'granted',
    extra: { snapshot },
  });
  if (snapshot !== undefined) {
    const doc = await w.read(snapshot);
    if (!doc) throw new BrokerError('not_found', 'No such version.', { detail: { snapshot } });
    const m = doc.metadata ?? {};
    return jsonResponse(
      200,
      {
        snapshot,
        etag: doc.etag,
        revision: doc.revision,
        updatedBy: m.updatedby,
        updatedAt: m.updatedat,
        change: m.change,
        policy: JSON.parse(doc.text) as unknown,
      },
      scope,
    );
  }
  return jsonResponse(200, { versions: await w.history() }, scope);
}
