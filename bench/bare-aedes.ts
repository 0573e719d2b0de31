/**
 * The reference broker: Aedes with its defaults (in-memory persistence), no authentication, no hooks, no
 * store. Whatever uns-bridge does on top of Aedes is measured against this ceiling.
 *
 *   node dist/bench/bare-aedes.js [port]      prints {"event":"listening","port":N} once it accepts connections
 */
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Aedes } from 'aedes';

const broker = await Aedes.createBroker();
// Same socket option as uns-bridge's listener, so the comparison is about what runs per message.
const server = createServer({ noDelay: true }, (socket) => broker.handle(socket));
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: (server.address() as AddressInfo).port })}\n`);
});

const stop = (): void => {
  server.close();
  broker.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2_000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
