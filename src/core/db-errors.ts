/**
 * The one classifier of database errors. Every component that talks to PostgreSQL asks it what a failure
 * means, so the store, the webhook outbox and the read API never disagree (docs/failure-model.md):
 *   row       — this row's data is at fault (SQLSTATE classes 22, 23, and 54000 "row too big"): the same
 *               rows fail the same way every time, other rows are fine; the row is set aside as a rejection
 *               with its payload.
 *   transient — the database cannot answer now (connection lost, shutting down, out of disk or memory,
 *               deadlock, timeout): retry later; nothing about the data is wrong.
 *   permanent — the database answers but refuses every write until an operator acts (privilege revoked,
 *               table missing, read-only, authentication): an outage, never a data error.
 * Unknown codes are permanent: an error we cannot explain is never blamed on the data, so it can never turn
 * an acknowledged message into a dropped one.
 */
export type DbErrorClass = 'row' | 'transient' | 'permanent';

/** Node socket errors and node-postgres' own client-side failures (no SQLSTATE). */
const NODE_TRANSIENT = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOENT']);
const PG_CLIENT_TRANSIENT = /timeout exceeded when trying to connect|Connection terminated|Query read timeout|Client has encountered a connection error|Cannot use a pool after calling end/;

export function classifyDbError(e: unknown): DbErrorClass {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && NODE_TRANSIENT.has(code)) return 'transient';
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) {
    const msg = (e as { message?: unknown } | null)?.message;
    return typeof msg === 'string' && PG_CLIENT_TRANSIENT.test(msg) ? 'transient' : 'permanent';
  }
  const cls = code.slice(0, 2);
  switch (cls) {
    case '22': // data exception: invalid text, untranslatable character, numeric out of range, bad JSON
    case '23': // integrity constraint violation: NOT NULL, CHECK, foreign key, unique
      return 'row';
    case '54': // program limit exceeded: only 54000 (e.g. index row or jsonb too large) is about one row
      return code === '54000' ? 'row' : 'permanent';
    case '08': // connection exception
    case '53': // insufficient resources: disk full, out of memory, too many connections
    case '40': // transaction rollback: serialization failure, deadlock
    case '58': // system error: I/O error
      return 'transient';
    case '57': // operator intervention: 57014 query cancelled (statement timeout), 57P01-57P03 shutdown
      return code === '57P04' ? 'permanent' : 'transient'; // 57P04: database dropped
    case '55':
      return code === '55P03' || code === '55006' ? 'transient' : 'permanent'; // lock not available, object in use
    default:
      // 42 (privilege, undefined table or column), 28 (authentication), 3D (no such database),
      // 25 (read-only transaction), 0A (not supported), XX (internal), P0 (trigger raised) ...
      return 'permanent';
  }
}

/** A serialization failure or deadlock (class 40): the transaction lost a race; running it again succeeds. */
export function isTxConflict(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('40');
}

export function isRowError(e: unknown): boolean {
  return classifyDbError(e) === 'row';
}

export function isTransientDbError(e: unknown): boolean {
  return classifyDbError(e) === 'transient';
}

/** "42501 permission denied for table samples": the SQLSTATE first, for logs and /ready. */
export function describeDbError(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  const msg = (e as { message?: unknown } | null)?.message;
  const text = typeof msg === 'string' ? msg : String(e);
  return typeof code === 'string' ? `${code} ${text}` : text;
}
