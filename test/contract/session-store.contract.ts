/**
 * The contract every Aedes persistence must meet (`aedes-persistence/abstract.js`, run by node:test), met by
 * the PostgreSQL session store. Started by `test/integration/session-store.test.ts` with a database in
 * UNS_TEST_DATABASE_URL whose schema is migrated; each case starts from empty session tables.
 */
import { createRequire } from 'node:module';
import { test, after } from 'node:test';
import pg from 'pg';
import { SessionStore } from '../../broker/session-store.js';
import { silentLogger } from '../../src/core/log.js';

const require = createRequire(import.meta.url);
const abstract = require('aedes-persistence/abstract.js') as (opts: Record<string, unknown>) => void;

const url = process.env['UNS_TEST_DATABASE_URL'];
if (url === undefined) throw new Error('UNS_TEST_DATABASE_URL is not set');
const pool = new pg.Pool({ connectionString: url, max: 4 });
after(() => pool.end());

abstract({
  test,
  testAsync: true,
  persistence: async () => {
    await pool.query('TRUNCATE mqtt_sessions, mqtt_session_subs, mqtt_session_queue, mqtt_session_incoming');
    const store = new SessionStore({ pool, log: silentLogger(), queueMax: 0, overflow: 'drop-new', expiryMs: 0 });
    await store.load();
    return store;
  },
});
