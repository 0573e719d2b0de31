/**
 * A throwaway Mosquitto (Debian's `mosquitto`, UNS_TEST_MOSQUITTO to override) on 127.0.0.1 and a free
 * port, for external-broker mode. Tests may stop and start it to simulate an outage; it is ended by PID.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './postgres.js';
import { startListening, TempDaemon } from './daemon.js';

export function findMosquitto(): string {
  const bin = process.env['UNS_TEST_MOSQUITTO'] ?? '/usr/sbin/mosquitto';
  if (!existsSync(bin)) throw new Error(`${bin} not found: install Debian's mosquitto (see .ci/run) or set UNS_TEST_MOSQUITTO`);
  return bin;
}

export class TestMosquitto extends TempDaemon {
  /**
   * `users`: name -> password; with any, anonymous access is off. `tls`: PEM files for the listener, which
   * then speaks MQTT over TLS only.
   */
  constructor(private readonly users: Readonly<Record<string, string>> = {}, private readonly tls: { certfile: string; keyfile: string } | null = null) {
    super('uns-test-mosquitto-');
  }

  get url(): string {
    return `${this.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    const lines = [
      `listener ${this.port} 127.0.0.1`,
      ...(this.tls ? [`certfile ${this.tls.certfile}`, `keyfile ${this.tls.keyfile}`] : []),
      // What uns-bridge needs of a broker: QoS 1 in flight to it up to its Receive Maximum, and room to queue
      // for its persistent session while it is away.
      'max_inflight_messages 5000',
      'max_queued_messages 100000000',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      // Connections and disconnections: tests wait on them (output()).
      'log_type notice',
    ];
    const names = Object.keys(this.users);
    if (names.length > 0) {
      const pw = join(this.dir, 'passwords');
      writeFileSync(pw, '');
      for (const n of names) execFileSync('mosquitto_passwd', ['-b', pw, n, this.users[n] as string]);
      chmodSync(pw, 0o644);
      lines.push('allow_anonymous false', `password_file ${pw}`);
    } else {
      lines.push('allow_anonymous true');
    }
    const conf = join(this.dir, 'mosquitto.conf');
    writeFileSync(conf, `${lines.join('\n')}\n`);
    chmodSync(conf, 0o644);
    this.proc = await startListening('mosquitto', findMosquitto(), ['-c', conf], this.port);
  }
}
