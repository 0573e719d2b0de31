/** A server binary the tests run (Mosquitto, Redis): started until it listens on 127.0.0.1, ended by PID. */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './server.js';

export interface Daemon {
  readonly proc: ChildProcess;
  /** The last 10,000 characters it wrote. */
  output(): string;
}

export async function startListening(name: string, bin: string, args: readonly string[], port: number): Promise<Daemon> {
  let out = '';
  const proc = spawn(bin, [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (b: Buffer): void => { out = (out + b.toString()).slice(-10_000); };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  let exited = false;
  proc.once('exit', () => { exited = true; });
  try {
    await waitFor(async () => {
      if (exited) throw new Error(`${name} exited at start-up:\n${out}`);
      return new Promise<boolean>((res) => {
        const s = connect(port, '127.0.0.1', () => { s.destroy(); res(true); });
        s.once('error', () => res(false));
      });
    }, 10_000, `${name} to listen`);
  } catch (e) {
    if (!exited) proc.kill('SIGKILL');
    throw e;
  }
  return { proc, output: () => out };
}

/** SIGTERM, and wait for the exit; nothing if it is not running. */
export async function stopDaemon(d: Daemon | null): Promise<void> {
  const p = d?.proc;
  if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  await gone;
}

/** A daemon with a temp folder of its own and a port, started by the subclass, stopped and removed here. */
export abstract class TempDaemon {
  readonly dir: string;
  port = 0;
  protected proc: Daemon | null = null;

  constructor(prefix: string) {
    this.dir = mkdtempSync(join(tmpdir(), prefix));
    chmodSync(this.dir, 0o755);
  }

  /** The last of what it wrote (its log). */
  output(): string {
    return this.proc?.output() ?? '';
  }

  async stop(): Promise<void> {
    const d = this.proc;
    this.proc = null;
    await stopDaemon(d);
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
