import type { AppContext } from '../app/context';
/** Types of /api/health's checks, in their own module so each area's check imports no health handler. */

export type CheckStatus = 'ok' | 'fail' | 'skipped';

export interface CheckResult {
  readonly status: CheckStatus;
  readonly detail?: string;
  /** Machine-readable facts of the check (e.g. the policy's version and age); never secrets. */
  readonly info?: Readonly<Record<string, string | number | boolean>>;
}

/** A readiness check of one dependency. Must finish within its own timeout and never throw secrets. */
export interface HealthCheck {
  readonly name: string;
  /**
   * false: a failure is reported (and listed in `degraded`) but the broker stays ready, because the
   * endpoints that do not need this dependency keep working (the database: only the query function).
   */
  readonly critical?: boolean;
  run(app: AppContext): Promise<CheckResult>;
}
