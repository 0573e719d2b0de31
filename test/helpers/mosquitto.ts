/**
 * A throwaway Mosquitto (Debian's `mosquitto`, UNS_TEST_MOSQUITTO to override) on 127.0.0.1 and a free
 * port, for external-broker mode. Tests may stop and start it to simulate an outage; it is ended by PID.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './postgres.js';
import { waitFor } from './server.js';

export function findMosquitto(): string {
  const bin = process.env['UNS_TEST_MOSQUITTO'] ?? '/usr/sbin/mosquitto';
  if (!existsSync(bin)) throw new Error(`${bin} not found: install Debian's mosquitto (see .ci/run) or set UNS_TEST_MOSQUITTO`);
  return bin;
}

export class TestMosquitto {
  readonly dir: string;
  port = 0;
  private proc: ChildProcess | null = null;
  private out = '';

  /**
   * `users`: name -> password; with any, anonymous access is off. `tls`: PEM files for the listener, which
   * then speaks MQTT over TLS only.
   */
  constructor(private readonly users: Readonly<Record<string, string>> = {}, private readonly tls: { certfile: string; keyfile: string } | null = null) {
    this.dir = mkdtempSync(join(tmpdir(), 'uns-test-mosquitto-'));
    chmodSync(this.dir, 0o755);
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
    const proc = spawn(findMosquitto(), ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout?.on('data', (b: Buffer) => { this.out += b.toString(); });
    proc.stderr?.on('data', (b: Buffer) => { this.out += b.toString(); });
    this.proc = proc;
    let exited = false;
    proc.once('exit', () => { exited = true; });
    await waitFor(async () => {
      if (exited) throw new Error(`mosquitto exited at start-up:\n${this.out}`);
      return new Promise<boolean>((res) => {
        const s = connect(this.port, '127.0.0.1', () => { s.destroy(); res(true); });
        s.once('error', () => res(false));
      });
    }, 10_000, 'mosquitto to listen');
  }

  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    if (p === null || p.exitCode !== null) return;
    const gone = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGTERM');
    await gone;
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
