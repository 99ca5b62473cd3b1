import { app, type HttpFunctionOptions } from '@azure/functions';
import { appHandlers } from '../shared/app/handlers';

/** POST /api/admin/rotate?dryRun=true|false: the key-rotation plan on demand (admin role). */
export const handler = appHandlers().adminRotate;

export const registration = {
  name: 'adminRotate',
  options: { route: 'admin/rotate', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
