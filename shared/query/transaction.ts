import type { PoolClient } from 'pg';
import { DeadlineExceeded } from './deadline';
import { preamble, type SessionIdentity } from './session-identity';
import { withComment } from './sql-comment';

/**
 * A catalogued query's whole transaction in ONE round trip, pipelined on the extended protocol and written at once:
 *
 *   BEGIN READ ONLY · SELECT set_config(…, true) × 7 (statement timeout, application_name, the caller's identity)
 *   · the query (Describe, then Execute with a row count of `maxRows`) · ROLLBACK · Sync
 *
 * PostgreSQL runs them in order; an error skips the rest up to Sync (the transaction is then left aborted: the caller
 * rolls back or destroys the connection). The row count makes the executor stop after `maxRows` rows (PortalSuspended
 * when there were more): nothing past the limit is computed, sent or held. Transaction-local settings end with the
 * ROLLBACK, so nothing of this caller is left on the pooled connection.
 *
 * Deadlines are per phase, as if the phases were separate round trips: `preamble` until the identity settings have
 * completed, then `query` until the query has, then `rollback`. A server that stops answering in a phase fails with
 * DeadlineExceeded of that phase (the caller destroys the connection).
 */

export interface ReadOnlyResult {
  readonly fields: readonly { readonly name: string; readonly dataTypeID: number }[];
  /** Rows in PostgreSQL's text format (null for SQL NULL), at most `maxRows`. */
  readonly rows: (string | null)[][];
  /** The server had more rows than `maxRows`. */
  readonly suspended: boolean;
}

export interface ReadOnlyRequest {
  readonly identity: SessionIdentity;
  /** The sqlcommenter comment put on every statement ('' for none). */
  readonly comment: string;
  readonly sql: string;
  readonly values: readonly (string | null)[];
  readonly maxRows: number;
  readonly deadlines: { readonly preamble: number; readonly query: number; readonly rollback: number };
}

type Phase = Exclude<DeadlineExceeded['phase'], 'connect'>;

interface WireConnection {
  parse(c: { text: string; name?: string; types?: number[] }): void;
  bind(c: { portal?: string; statement?: string; values?: readonly (string | null)[] }): void;
  describe(c: { type: 'P' | 'S'; name?: string }): void;
  execute(c: { portal?: string; rows?: number }): void;
  sync(): void;
  sendCopyFail(msg: string): void;
  stream: { cork?: () => void; uncork?: () => void };
}

interface RowDescription {
  fields: { name: string; dataTypeID: number }[];
}

/** Statements in the pipeline, in order; the one at QUERY_INDEX is the catalogued query. */
const QUERY_INDEX = 2;

class ReadOnlyTransaction {
  callback?: (err: Error | null, result?: ReadOnlyResult) => void;
  private completed = 0;
  private fields: ReadOnlyResult['fields'] = [];
  private readonly rows: (string | null)[][] = [];
  private suspended = false;
  private error: Error | null = null;
  private settled = false;

  constructor(
    private readonly statements: readonly {
      text: string;
      values: readonly (string | null)[];
      describe?: boolean;
      rows?: number;
    }[],
    private readonly onPhase: (phase: Phase) => void,
  ) {}

  private finish(err: Error | null): void {
    if (this.settled) return;
    this.settled = true;
    this.callback?.(err, err ? undefined : { fields: this.fields, rows: this.rows, suspended: this.suspended });
  }

  private advance(): void {
    this.completed++;
    this.onPhase(this.completed < QUERY_INDEX ? 'preamble' : this.completed === QUERY_INDEX ? 'query' : 'rollback');
  }

  submit(connection: WireConnection): void {
    connection.stream.cork?.();
    try {
      for (const s of this.statements) {
        connection.parse({ text: s.text, name: '', types: [] });
        connection.bind({ portal: '', statement: '', values: s.values });
        if (s.describe) connection.describe({ type: 'P', name: '' });
        connection.execute({ portal: '', rows: s.rows ?? 0 });
      }
      connection.sync();
    } finally {
      connection.stream.uncork?.();
    }
  }

  handleRowDescription(msg: RowDescription): void {
    if (this.completed === QUERY_INDEX) this.fields = msg.fields.map((f) => ({ name: f.name, dataTypeID: f.dataTypeID }));
  }
  handleDataRow(msg: { fields: (string | null)[] }): void {
    if (this.completed === QUERY_INDEX) this.rows.push(msg.fields);
  }
  handleCommandComplete(): void {
    this.advance();
  }
  handlePortalSuspended(): void {
    if (this.completed === QUERY_INDEX) this.suspended = true;
    this.advance();
  }
  handleEmptyQuery(): void {
    this.advance();
  }
  handleCopyData(): void {}
  handleCopyInResponse(connection: WireConnection): void {
    connection.sendCopyFail('COPY is not part of a catalogued query');
  }
  handleError(err: Error): void {
    // A server error is followed by ReadyForQuery, a connection error or a destroyed socket is not: answer now.
    this.error ??= err;
    this.finish(err);
  }
  handleReadyForQuery(): void {
    this.finish(this.error);
  }
}

/** Run the catalogued query read-only as the caller, in one round trip, within per-phase deadlines. */
export function runReadOnly(client: PoolClient, req: ReadOnlyRequest): Promise<ReadOnlyResult> {
  const pre = preamble(req.identity, req.comment);
  const statements = [
    { text: pre.begin, values: [] },
    { text: pre.settings, values: pre.values },
    { text: withComment(req.sql, req.comment), values: req.values, describe: true, rows: req.maxRows },
    { text: withComment('ROLLBACK', req.comment), values: [] },
  ];
  return new Promise<ReadOnlyResult>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let phase: Phase | undefined;
    const arm = (next: Phase) => {
      if (next === phase) return;
      phase = next;
      clearTimeout(timer);
      const ms = req.deadlines[next];
      timer = setTimeout(() => {
        tx.callback = undefined; // a late answer after the deadline is dropped; the caller destroys the connection
        reject(new DeadlineExceeded(next, ms));
      }, ms);
    };
    const tx = new ReadOnlyTransaction(statements, arm);
    tx.callback = (err, result) => {
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(result!);
    };
    arm('preamble');
    (client as unknown as { query(s: ReadOnlyTransaction): unknown }).query(tx);
  });
}
