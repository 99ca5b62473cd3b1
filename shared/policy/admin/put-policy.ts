import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { adminAuditOf } from '../../observability/admin-audit';
import { ADMIN_TOKEN_HEADER, authenticateAdmin } from '../../auth/admin-caller';
import { BrokerError } from '../../errors';
import { jsonResponse } from '../../http/responses';
import { parseJsonBody, readBodyText } from '../../http/request';
import { type RequestScope } from '../../http/handler';

import { MAX_POLICY_BODY, writer, who, checkDocument, versionHeaders, entityTag, assertFinite } from './common';

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
  const w = await writer(scope.app);
  const createOnly = req.headers.get('if-none-match')?.trim() === '*';
  const ifMatch = createOnly ? undefined : entityTag(req.headers.get('if-match'), 'If-Match');
  if (!ifMatch && !createOnly) {
    throw new BrokerError(
      'precondition_required',
      'Send If-Match with the ETag of the policy you edited (GET /api/admin/policy), or If-None-Match: * to create the first version.',
    );
  }
  const record = adminAuditOf(scope);
  record.note({ extra: { ifMatch } });
  try {
    checkDocument(raw);
  } catch (e) {
    if (e instanceof BrokerError && typeof e.detail?.path === 'string') record.note({ extra: { path: e.detail.path } });
    throw e;
  }
  const written = await w.write(text, ifMatch ? { ifMatch } : { ifNoneMatch: '*' }, {
    by: who(id),
    change: 'put',
    correlationId: scope.correlationId,
  });
  (await scope.app.policy.store()).invalidate();
  const doc = raw as { rules: unknown[]; deny?: unknown[] };
  record.note({
    reason: 'written',
    extra: { etag: written.etag, revision: written.revision, rules: doc.rules.length, deny: doc.deny?.length ?? 0 },
  });
  return jsonResponse(
    createOnly ? 201 : 200,
    { etag: written.etag, revision: written.revision, lastModified: written.lastModified },
    scope,
    versionHeaders(written),
  );
}
