import { runReadOnly } from '../../../shared/query/transaction';

/**
 * The one timer of a read-only pipeline: a phase whose deadline falls before the armed timer's is enforced at its
 * own deadline. A fake wire connection drives the phases: BEGIN and the settings complete, the query completes at
 * once (under its long allowance), then the server never finishes the ROLLBACK.
 */

type Tx = { submit(c: unknown): void; handleCommandComplete(): void };

function stalledAfterQuery(): { client: { query(tx: Tx): void } } {
  const connection = {
    close: () => undefined,
    parse: () => undefined,
    bind: () => undefined,
    describe: () => undefined,
    execute: () => undefined,
    sync: () => undefined,
    sendCopyFail: () => undefined,
    stream: {},
  };
  return {
    client: {
      query(tx: Tx) {
        tx.submit(connection);
        tx.handleCommandComplete(); // BEGIN READ ONLY
        tx.handleCommandComplete(); // the settings
        tx.handleCommandComplete(); // the query: done, well inside its allowance
        // ROLLBACK never completes: the server stalled.
      },
    },
  };
}

test('a stalled rollback after a quick query fails at the rollback deadline, not the query’s', async () => {
  const { client } = stalledAfterQuery();
  const t0 = performance.now();
  await expect(
    runReadOnly(client as never, {
      identity: {
        callerOid: 'oid-a',
        callerTid: 'tid-a',
        ruleId: 'rule-a',
        correlationId: 'cid-a',
        applicationName: 'app-a',
        statementTimeoutMs: 5000,
      },
      comment: '',
      sql: 'SELECT 1',
      values: [],
      maxRows: 1,
      deadlines: { preamble: 200, query: 10_000, rollback: 150 },
    }),
  ).rejects.toMatchObject({ name: 'DeadlineExceeded', phase: 'rollback', ms: 150 });
  const took = performance.now() - t0;
  expect(took).toBeGreaterThanOrEqual(140);
  expect(took).toBeLessThan(2_000); // the query's 10 s allowance no longer holds the connection
});
