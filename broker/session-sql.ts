/**
 * The session store's tables, seen from its journal: the operations a change is written as, one statement
 * per run of operations of one kind (arrays through unnest), and how packets are kept (their fields as JSON,
 * Buffers inside MQTT 5 properties as base64, the payload apart).
 */
import type pg from 'pg';

/** The shape of a subscription as Aedes stores it (topic aside). */
export interface SessionSub {
  qos: number;
  rh?: number;
  rap?: boolean;
  nl?: boolean;
  subscriptionIdentifier?: number;
}

/** A packet as Aedes hands it to the persistence: a PUBLISH, or the PUBREL standing in for one. */
export interface SessionPacket {
  cmd: string;
  topic?: string;
  payload?: Buffer;
  qos?: number;
  retain?: boolean;
  dup?: boolean;
  messageId?: number | undefined;
  brokerId?: string;
  brokerCounter?: number;
  [key: string]: unknown;
}

/** `stored`: a batch holding it has gone to the database (it may be there, so its removal is written too). */
export interface QueueEntry { readonly seq: number; packet: SessionPacket; stored?: boolean }
export interface SessionInfo { seenAt: number; username: string | null; instance: string | null }

export type Op =
  | { k: 'sub_put'; c: string; topic: string; sub: SessionSub; dead?: boolean }
  | { k: 'sub_del'; c: string; topic: string }
  | { k: 'subs_clear'; c: string }
  | { k: 'out_put'; c: string; e: QueueEntry; dead?: boolean }
  | { k: 'out_del'; c: string; seq: number }
  | { k: 'in_put'; c: string; id: number; packet: SessionPacket; dead?: boolean }
  | { k: 'in_del'; c: string; id: number }
  | { k: 'in_clear'; c: string }
  | { k: 'seen'; c: string; s: SessionInfo }
  | { k: 'session_del'; c: string };

export type OpKind = Op['k'];

/** One statement for a run of operations of one kind. */
export async function runGroup(db: pg.PoolClient, kind: OpKind, ops: readonly Op[]): Promise<void> {
  const col = <T>(f: (op: never) => T): T[] => ops.map((op) => f(op as never));
  switch (kind) {
    case 'sub_put':
      await db.query(`INSERT INTO mqtt_session_subs (client_id, topic, qos, options)
        SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::jsonb[])
        ON CONFLICT (client_id, topic) DO UPDATE SET qos = excluded.qos, options = excluded.options`, [
        col((o: Extract<Op, { k: 'sub_put' }>) => o.c), col((o: Extract<Op, { k: 'sub_put' }>) => o.topic),
        col((o: Extract<Op, { k: 'sub_put' }>) => o.sub.qos), col((o: Extract<Op, { k: 'sub_put' }>) => JSON.stringify(subOptions(o.sub))),
      ]);
      return;
    case 'sub_del':
      await db.query(`DELETE FROM mqtt_session_subs s USING unnest($1::text[], $2::text[]) AS d(c, t)
        WHERE s.client_id = d.c AND s.topic = d.t`, [col((o: Extract<Op, { k: 'sub_del' }>) => o.c), col((o: Extract<Op, { k: 'sub_del' }>) => o.topic)]);
      return;
    case 'subs_clear':
      await db.query('DELETE FROM mqtt_session_subs WHERE client_id = ANY($1::text[])', [col((o: Extract<Op, { k: 'subs_clear' }>) => o.c)]);
      return;
    case 'out_put':
      await upsertPackets(db, 'mqtt_session_queue', 'seq', 'int8', ops.map((o) => {
        const op = o as Extract<Op, { k: 'out_put' }>;
        return [op.c, op.e.seq, op.e.packet] as const;
      }));
      return;
    case 'out_del':
      await db.query(`DELETE FROM mqtt_session_queue q USING unnest($1::text[], $2::int8[]) AS d(c, s)
        WHERE q.client_id = d.c AND q.seq = d.s`, [col((o: Extract<Op, { k: 'out_del' }>) => o.c), col((o: Extract<Op, { k: 'out_del' }>) => o.seq)]);
      return;
    case 'in_put':
      await upsertPackets(db, 'mqtt_session_incoming', 'message_id', 'int4', ops.map((o) => {
        const op = o as Extract<Op, { k: 'in_put' }>;
        return [op.c, op.id, op.packet] as const;
      }));
      return;
    case 'in_del':
      await db.query(`DELETE FROM mqtt_session_incoming i USING unnest($1::text[], $2::int4[]) AS d(c, m)
        WHERE i.client_id = d.c AND i.message_id = d.m`, [col((o: Extract<Op, { k: 'in_del' }>) => o.c), col((o: Extract<Op, { k: 'in_del' }>) => o.id)]);
      return;
    case 'in_clear':
      await db.query('DELETE FROM mqtt_session_incoming WHERE client_id = ANY($1::text[])', [col((o: Extract<Op, { k: 'in_clear' }>) => o.c)]);
      return;
    case 'seen':
      await db.query(`INSERT INTO mqtt_sessions (client_id, seen_at, username, instance)
        SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[])
        ON CONFLICT (client_id) DO UPDATE SET seen_at = excluded.seen_at, username = excluded.username, instance = excluded.instance`, [
        col((o: Extract<Op, { k: 'seen' }>) => o.c), col((o: Extract<Op, { k: 'seen' }>) => new Date(o.s.seenAt)),
        col((o: Extract<Op, { k: 'seen' }>) => o.s.username), col((o: Extract<Op, { k: 'seen' }>) => o.s.instance),
      ]);
      return;
    case 'session_del': {
      const ids = col((o: Extract<Op, { k: 'session_del' }>) => o.c);
      for (const table of ['mqtt_session_subs', 'mqtt_session_queue', 'mqtt_session_incoming', 'mqtt_sessions']) {
        await db.query(`DELETE FROM ${table} WHERE client_id = ANY($1::text[])`, [ids]);
      }
      return;
    }
  }
}

function subOptions(sub: SessionSub): Omit<SessionSub, 'qos'> {
  const { qos: _qos, ...rest } = sub;
  return rest;
}

/** A packet as stored: its fields as JSON (Buffers inside MQTT 5 properties as base64), the payload apart. */
function encodePacket(p: SessionPacket): { packet: string; payload: Buffer | null } {
  const { payload, ...rest } = p;
  const packet = JSON.stringify(rest, function replacer(this: Record<string, unknown>, key: string, value: unknown) {
    const raw = this[key];
    return Buffer.isBuffer(raw) ? { $base64: raw.toString('base64') } : value;
  });
  return { packet, payload: payload ?? null };
}

export function decodePacket(fields: string, payload: Buffer | null): SessionPacket {
  const revived = JSON.parse(fields, (_k, v: unknown) => {
    if (v !== null && typeof v === 'object' && typeof (v as { $base64?: unknown }).$base64 === 'string' && Object.keys(v).length === 1) {
      return Buffer.from((v as { $base64: string }).$base64, 'base64');
    }
    return v;
  }) as SessionPacket;
  if (payload !== null) revived.payload = payload;
  else if (revived.cmd === 'publish') revived.payload = Buffer.alloc(0);
  return revived;
}

/** Upserts packets of (client, key) rows: the queue (key seq) or the QoS 2 receive state (key message id). */
async function upsertPackets(db: pg.PoolClient, table: string, key: string, keyType: string,
  rows: ReadonlyArray<readonly [client: string, key: number, packet: SessionPacket]>): Promise<void> {
  const enc = rows.map(([, , p]) => encodePacket(p));
  await db.query(`INSERT INTO ${table} (client_id, ${key}, packet, payload)
    SELECT * FROM unnest($1::text[], $2::${keyType}[], $3::jsonb[], $4::bytea[])
    ON CONFLICT (client_id, ${key}) DO UPDATE SET packet = excluded.packet, payload = excluded.payload`, [
    rows.map(([c]) => c), rows.map(([, k]) => k), enc.map((x) => x.packet), enc.map((x) => x.payload),
  ]);
}
