/**
 * A throwaway Redis (Debian's `redis-server`, UNS_TEST_REDIS to override) on 127.0.0.1 and a free port, for
 * cluster mode. No persistence, no other listener. Tests may stop and start it to simulate an outage; it is
 * ended by PID.
 */
import { existsSync } from 'node:fs';
import { freePort } from './postgres.js';
import { startListening, TempDaemon } from './daemon.js';

export function findRedis(): string {
  const bin = process.env['UNS_TEST_REDIS'] ?? '/usr/bin/redis-server';
  if (!existsSync(bin)) throw new Error(`${bin} not found: install Debian's redis-server (see .ci/run) or set UNS_TEST_REDIS`);
  return bin;
}

export class TestRedis extends TempDaemon {
  constructor() {
    super('uns-test-redis-');
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts it (again, on the same port, after stop()); nothing when it runs. */
  async start(): Promise<void> {
    if (this.proc !== null && this.proc.proc.exitCode === null) return;
    if (this.port === 0) this.port = await freePort();
    this.proc = await startListening('redis-server', findRedis(), [
      '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir,
      '--unixsocket', '', '--daemonize', 'no', '--loglevel', 'warning',
    ], this.port);
  }
}
