import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { adminAuditOf } from '../../observability/admin-audit';
import { ADMIN_TOKEN_HEADER, authenticateAdmin } from '../../auth/admin-caller';
import { BrokerError } from '../../errors';
import { jsonResponse } from '../../http/responses';
import { type RequestScope } from '../../http/handler';
import { DENY_ID, type DenyEntry } from '../schema';

import { writer, versionHeaders, editDeny, stringField, readJson } from './common';

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
  adminAuditOf(scope).note({ extra: { denyId: denyId.replace(/[^\x21-\x7e]/g, '?').slice(0, 64) } });
  if (!DENY_ID.test(denyId))
    throw new BrokerError('invalid_parameter', 'The deny entry id is malformed.', { detail: { parameter: 'id' } });
  const reason = stringField(body, 'reason', { max: 500 });
  const w = await writer(scope.app);
  let removed: DenyEntry | undefined;
  const written = await editDeny(w, id, scope, `deny.remove:${denyId}`, reason, (d) => {
    const i = d.findIndex((e) => e.id === denyId);
    if (i < 0) throw new BrokerError('not_found', 'No deny entry has this id.', { detail: { id: denyId } });
    removed = d[i];
    return [...d.slice(0, i), ...d.slice(i + 1)];
  });
  (await scope.app.policy.store()).invalidate();
  adminAuditOf(scope).note({
    target: removed ? `${removed.tenantId}/${removed.objectId}` : undefined,
    reason: 'written',
    extra: { etag: written.etag, revision: written.revision },
  });
  return jsonResponse(200, { removed, etag: written.etag, revision: written.revision }, scope, versionHeaders(written));
}
