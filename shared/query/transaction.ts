import { createHash } from 'node:crypto';
import type { PoolClient } from 'pg';
import { DeadlineExceeded } from './deadline';
import { preambleTexts, preambleValues, type SessionIdentity } from './session-identity';
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
 * Statement texts are static per catalogued query and rule (the per-request ids are bound values: the session
 * settings and application_name), so each is a named prepared statement, parsed and planned once per connection
 * and then only bound and executed (`prepared: false`, e.g. a traceparent kept in the comment: unnamed, parsed every
 * time). A name is only taken as prepared once its statement completed; one whose fate is unknown (an error in the
 * pipeline) is closed and parsed again next time (Close of a missing statement is no error).
 *
 * Deadlines are per phase, as if the phases were separate round trips: `preamble` until the identity settings have
 * completed, then `query` until the query has, then `rollback`. A server that stops answering in a phase fails with
 * DeadlineExceeded of that phase (the caller destroys the connection). PostgreSQL sends nothing of the pipeline before
 * its Sync, so the preamble's completion is rarely seen before the query's: until a first answer, the larger of the
 * preamble's and the query's deadlines applies (never cutting a query that is within its own).
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
  /** Named prepared statements, once per connection (default true; false when the text is unique per request). */
  readonly prepared?: boolean;
}

type Phase = Exclude<DeadlineExceeded['phase'], 'connect'>;

interface WireConnection {
  close(c: { type: 'S' | 'P'; name?: string }): void;
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

/** The named statements each connection has prepared (name → text), known from a completed execution. */
const preparedOn = new WeakMap<object, Map<string, string>>();

/** A statement's name: derived from its text, so one name never stands for two texts (≤ 63 bytes). */
function statementName(text: string): string {
  return `tb_${createHash('sha256').update(text).digest('hex').slice(0, 40)}`;
}

/** A statement text and its prepared statement's name. */
interface Text {
  readonly text: string;
  readonly name: string;
}

function textOf(text: string): Text {
  return { text, name: statementName(text) };
}

/**
 * The texts of a comment's transaction (BEGIN, the settings, ROLLBACK, and each catalogued query with the comment),
 * built and named once: the comment is stable per query and rule, so a request looks its statements up instead of
 * building, commenting and hashing four texts. Bounded: a comment per (query, rule, agent) in normal use; one per
 * request only with the traceparent in the comment, which runs unnamed and is never cached.
 */
interface Texts {
  readonly begin: Text;
  readonly settings: Text;
  readonly rollback: Text;
  readonly queries: Map<string, Text>;
}

const MAX_CACHED = 1024;
const textsByComment = new Map<string, Texts>();

function textsOf(comment: string): Texts {
  let t = textsByComment.get(comment);
  if (t === undefined) {
    if (textsByComment.size >= MAX_CACHED) textsByComment.clear();
    const pre = preambleTexts(comment);
    t = {
      begin: textOf(pre.begin),
      settings: textOf(pre.settings),
      rollback: textOf(withComment('ROLLBACK', comment)),
      queries: new Map(),
    };
    textsByComment.set(comment, t);
  }
  return t;
}

function queryTextOf(texts: Texts, sql: string, comment: string): Text {
  let q = texts.queries.get(sql);
  if (q === undefined) {
    if (texts.queries.size >= MAX_CACHED) texts.queries.clear();
    texts.queries.set(sql, (q = textOf(withComment(sql, comment))));
  }
  return q;
}

interface Statement {
  text: string;
  values: readonly (string | null)[];
  describe?: boolean;
  rows?: number;
  /** A named prepared statement (else unnamed, parsed each time). */
  name?: string;
}

class ReadOnlyTransaction {
  callback?: (err: Error | null, result?: ReadOnlyResult) => void;
  private completed = 0;
  private fields: ReadOnlyResult['fields'] = [];
  private readonly rows: (string | null)[][] = [];
  private suspended = false;
  private error: Error | null = null;
  private settled = false;

  private prepared: Map<string, string> | undefined;

  constructor(
    private readonly statements: readonly Statement[],
    private readonly onPhase: (phase: Phase) => void,
  ) {}

  private finish(err: Error | null): void {
    if (this.settled) return;
    this.settled = true;
    this.callback?.(err, err ? undefined : { fields: this.fields, rows: this.rows, suspended: this.suspended });
  }

  private advance(): void {
    // The statement ran: its Parse (when sent) succeeded, so its name is prepared on this connection.
    const done = this.statements[this.completed];
    if (done?.name && this.prepared) this.prepared.set(done.name, done.text);
    this.completed++;
    this.onPhase(this.completed < QUERY_INDEX ? 'preamble' : this.completed === QUERY_INDEX ? 'query' : 'rollback');
  }

  submit(connection: WireConnection): void {
    let prepared = preparedOn.get(connection);
    if (!prepared) preparedOn.set(connection, (prepared = new Map<string, string>()));
    this.prepared = prepared;
    connection.stream.cork?.();
    try {
      for (const s of this.statements) {
        if (!s.name) connection.parse({ text: s.text, name: '', types: [] });
        else if (prepared.get(s.name) !== s.text) {
          // Not known to be prepared (new, or its fate unknown after an error): close it first, then parse.
          prepared.delete(s.name);
          connection.close({ type: 'S', name: s.name });
          connection.parse({ text: s.text, name: s.name, types: [] });
        }
        connection.bind({ portal: '', statement: s.name ?? '', values: s.values });
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
  const values = preambleValues(req.identity);
  let statements: Statement[];
  if (req.prepared === false) {
    // A text unique to this request (the traceparent in the comment): unnamed, parsed every time, not cached.
    const pre = preambleTexts(req.comment);
    statements = [
      { text: pre.begin, values: [] },
      { text: pre.settings, values },
      { text: withComment(req.sql, req.comment), values: req.values, describe: true, rows: req.maxRows },
      { text: withComment('ROLLBACK', req.comment), values: [] },
    ];
  } else {
    const t = textsOf(req.comment);
    const q = queryTextOf(t, req.sql, req.comment);
    statements = [
      { text: t.begin.text, name: t.begin.name, values: [] },
      { text: t.settings.text, name: t.settings.name, values },
      { text: q.text, name: q.name, values: req.values, describe: true, rows: req.maxRows },
      { text: t.rollback.text, name: t.rollback.name, values: [] },
    ];
  }
  return new Promise<ReadOnlyResult>((resolve, reject) => {
    // One timer for the whole pipeline. PostgreSQL flushes its output at Sync (or a full buffer), so the preamble's
    // completion normally arrives together with the query's: until the first answer, the pipeline has the larger of
    // the two allowances (a query longer than the preamble's deadline is not cut; an expiry with nothing answered is
    // the preamble's: the server stopped answering). A phase that is seen to start gets its own allowance from then;
    // a timer that fires before the current phase's deadline re-arms for the rest, and a phase whose deadline falls
    // before the armed timer's (the rollback after a long query's allowance) re-arms it earlier.
    let phase: Phase = 'preamble';
    let allowed = Math.max(req.deadlines.preamble, req.deadlines.query);
    let due = performance.now() + allowed;
    let armedDue = due;
    const expire = () => {
      const left = due - performance.now();
      if (left > 0) {
        armedDue = due;
        timer = setTimeout(expire, left);
        return;
      }
      tx.callback = undefined; // a late answer after the deadline is dropped; the caller destroys the connection
      reject(new DeadlineExceeded(phase, allowed));
    };
    let timer = setTimeout(expire, allowed);
    const tx = new ReadOnlyTransaction(statements, (next) => {
      if (next === phase) return;
      phase = next;
      allowed = req.deadlines[next];
      due = performance.now() + allowed;
      if (due < armedDue) {
        clearTimeout(timer);
        armedDue = due;
        timer = setTimeout(expire, allowed);
      }
    });
    tx.callback = (err, result) => {
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(result!);
    };
    (client as unknown as { query(s: ReadOnlyTransaction): unknown }).query(tx);
  });
}
