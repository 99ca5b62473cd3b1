import { rotationConfig } from '../config/rotation';
import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { authenticateAdmin } from '../auth/admin-caller';
import { adminAuditOf } from '../observability/admin-audit';
import { BrokerError } from '../errors';
import { jsonResponse } from '../http/responses';
import { queryParam, readParams, requireParam } from '../http/request';
import { type RequestScope } from '../http/handler';
import { runRotation, type RotationDeps } from './google-keys/run';
import { rotationDepsFromSettings } from './google-keys/deps';

/**
 * POST /api/admin/rotate?dryRun=true|false — the rotation plan on demand. Same front door as the token
 * endpoint: the gateway's client token in `Authorization`, the admin's own token as `subject_token`
 * (form or JSON body): an admin token (shared/auth/admin-caller.ts: the broker's audience, the admin tenant, the admin
 * role, not deny-listed). dryRun defaults to true. A real run takes the same blob lease as the timer; held: 409.
 */
export function makeAdminRotate(depsFor: (scope: RequestScope) => RotationDeps = (s) => rotationDepsFromSettings(s.app, s.log)) {
  return async (req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> => {
    let dryRun = true;
    await authenticateAdmin(req, scope, 'rotation.admin', async () => {
      const raw = queryParam(req, 'dryRun') ?? 'true';
      if (raw !== 'true' && raw !== 'false') {
        throw new BrokerError('invalid_parameter', 'dryRun must be true or false.', { detail: { parameter: 'dryRun' } });
      }
      dryRun = raw === 'true';
      return requireParam(await readParams(req), 'subject_token');
    });
    adminAuditOf(scope).note({ reason: dryRun ? 'dry-run' : 'run', extra: { dryRun } });
    const report = await runRotation(depsFor(scope), { dryRun, trigger: 'admin' });
    if (report.status === 'locked') {
      // Worth retrying once the holder's lease has run out at the latest.
      throw new BrokerError('conflict', 'Another rotation run is in progress.', {
        retryAfterSeconds: rotationConfig.get().lockSeconds,
        detail: { reason: 'locked' },
      });
    }
    return jsonResponse(200, report, scope);
  };
}
