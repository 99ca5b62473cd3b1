import { app, type HttpFunctionOptions } from '@azure/functions';
import { appContext } from '../shared/app/context';
import { httpHandler } from '../shared/http/handler';
import { handleGetPolicy } from '../shared/policy/admin/get-policy';
import { handlePutPolicy } from '../shared/policy/admin/put-policy';

/** GET /api/admin/policy (document + ETag + revision) and PUT with If-Match (admin role). */
export const handler = httpHandler(appContext(), 'adminPolicy', 'problem', (req, scope) =>
  req.method === 'PUT' ? handlePutPolicy(req, scope) : handleGetPolicy(req, scope),
);

export const registration = {
  name: 'adminPolicy',
  options: { route: 'admin/policy', methods: ['GET', 'PUT'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
