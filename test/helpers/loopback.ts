/**
 * A loopback address of this jest worker's own (the Cloud SQL connector always dials port 3307 on the
 * address SQL Admin names, so two workers, or two checkouts running jest at once, need different ones).
 * `TEST_LOOPBACK_NET` (0–255, default 0) picks the third octet: set it per checkout when several run.
 */
export function workerHost(base: number): string {
  const net = Number(process.env.TEST_LOOPBACK_NET ?? '0');
  const worker = Number(process.env.JEST_WORKER_ID ?? '1');
  if (!Number.isInteger(net) || net < 0 || net > 255)
    throw new Error(`TEST_LOOPBACK_NET must be 0-255, got ${process.env.TEST_LOOPBACK_NET}`);
  return `127.0.${net}.${base + worker}`;
}
