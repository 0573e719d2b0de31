/**
 * The one check of a write into the namespace, whatever door it came through (MQTT, HTTP publish, signed
 * ingest), with one set of codes: UNS_ERR_TOPIC_RESERVED, UNS_ERR_TOPIC_INVALID, UNS_ERR_NOT_AUTHORIZED.
 */
import { rejection, type Rejection } from './message.js';
import { validateTopicName, type TopicLimits } from './topic-filter.js';

export interface WritePermission {
  canWrite(topic: string): boolean;
}

/** null when `who` may write `topic`; otherwise the coded reason. */
export function checkWrite(topic: string, perms: WritePermission, limits: TopicLimits, who: string): Rejection | null {
  // '$' topics are the server's ($SYS/, $uns/ ...); clients may not publish into them [MQTT-4.7.2-1].
  if (topic.charCodeAt(0) === 36) return rejection('UNS_ERR_TOPIC_RESERVED', topic, 'reserved namespace: clients may not publish into $ topics');
  const bad = validateTopicName(topic, limits);
  if (bad !== null) return rejection('UNS_ERR_TOPIC_INVALID', topic, bad);
  if (!perms.canWrite(topic)) return rejection('UNS_ERR_NOT_AUTHORIZED', topic, `${who} may not write ${topic}`);
  return null;
}
