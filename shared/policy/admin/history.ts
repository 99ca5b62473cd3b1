import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { adminAuditOf } from '../../observability/admin-audit';
import { authenticateAdmin } from '../../auth/admin-caller';
import { BrokerError } from '../../errors';
import { jsonResponse } from '../../http/responses';
import { queryParam } from '../../http/request';
import { type RequestScope } from '../../http/handler';

import { writer } from './common';

const SNAPSHOT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z$/;

/** GET /api/admin/policy/history: every kept version, newest first; `?snapshot=T` returns that version's document. */
export async function handlePolicyHistory(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  await authenticateAdmin(req, scope, 'policy.history');
  const snapshot = queryParam(req, 'snapshot');
  if (snapshot !== undefined && !SNAPSHOT.test(snapshot)) {
    throw new BrokerError('invalid_parameter', 'snapshot must be a snapshot time as the history lists it.', {
      detail: { parameter: 'snapshot' },
    });
  }
  const w = await writer(scope.app);
  adminAuditOf(scope).note({ reason: 'granted', extra: { snapshot } });
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
