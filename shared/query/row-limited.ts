import type { FieldDef, PoolClient, QueryArrayConfig } from 'pg';

/**
 * A query that stops at `maxRows` on the server: the extended protocol's Execute with a row count, then Sync,
 * sent in one write (one round trip, like a plain query). PostgreSQL's executor produces at most `maxRows`
 * rows and answers PortalSuspended when more were there; nothing past the limit is computed, sent or held in
 * memory. Inside the transaction (BEGIN READ ONLY) the suspended portal is closed by the ROLLBACK that follows.
 *
 * Built on pg's own Query (the way pg-cursor is): its Parse/Bind/Describe stay pg's, only the Execute differs.
 */

export interface RowLimitedResult {
  readonly fields: readonly FieldDef[];
  readonly rows: unknown[][];
  /** The server had more rows than `maxRows` (PortalSuspended). */
  readonly suspended: boolean;
}

interface PgConnection {
  execute(msg: { portal: string; rows: number }): void;
  sync(): void;
}

interface QueryInternals {
  portal: string;
  _getRows(connection: PgConnection, rows?: number): void;
  handlePortalSuspended(connection: PgConnection): void;
}

export async function queryRowLimited(client: PoolClient, config: QueryArrayConfig<unknown[]>, maxRows: number): Promise<RowLimitedResult> {
  const { Query } = await import('pg');
  let suspended = false;
  return new Promise<RowLimitedResult>((resolve, reject) => {
    // `rows` stays unset on the pg side (so pg sends no Sync of its own at CommandComplete); extended mode forces
    // Parse/Bind/Describe even without parameters.
    const extended: QueryArrayConfig<unknown[]> & { queryMode: 'extended' } = { ...config, queryMode: 'extended' };
    const q = new Query<unknown[], unknown[]>(extended, (err, result) => {
      if (err) return reject(err);
      resolve({ fields: result.fields, rows: result.rows, suspended });
    });
    const internals = q as unknown as QueryInternals;
    internals._getRows = (connection) => {
      connection.execute({ portal: internals.portal, rows: maxRows });
      connection.sync();
    };
    internals.handlePortalSuspended = () => {
      suspended = true; // the Sync already sent ends this exchange with ReadyForQuery
    };
    void client.query(q);
  });
}
