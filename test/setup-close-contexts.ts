/**
 * After each test file: close every app context it built (test/helpers/app.ts), so no database pool, connector or
 * Cosmos client keeps the Jest worker alive after the run (Jest would force-exit it).
 */
import { closeTestContexts } from './helpers/app';

afterAll(() => closeTestContexts());
