/** Threshold rules as a sink: judged once a message is durable, so an event never speaks of an unstored value. */
import type { UnsMessage } from '../../src/core/index.js';
import type { Sink } from '../sinks/sink.js';

export function rulesSink(onMessage: (m: UnsMessage) => void): Sink {
  return { name: 'rules', when: 'durable', accept: onMessage };
}
