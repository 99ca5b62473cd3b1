import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { adminAuditOf } from '../../observability/admin-audit';
import { authenticateAdmin } from '../../auth/admin-caller';
import { jsonResponse } from '../../http/responses';
import { type RequestScope } from '../../http/handler';

import { versionHeaders } from './common';

/** GET /api/admin/policy: the document this instance decides with, read fresh, with its ETag and revision. */
export async function handleGetPolicy(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  await authenticateAdmin(req, scope, 'policy.read');
  const store = await scope.app.policy.store();
  store.invalidate(); // an admin about to edit wants the latest ETag, not this instance's cached one
  const v = await store.current();
  const st = store.state();
  adminAuditOf(scope).note({ reason: 'granted', extra: { etag: v.etag, revision: v.revision } });
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
