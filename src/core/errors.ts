/**
 * The one registry of error codes. Every code is listed in the README's "Error codes" table and a test
 * keeps the two equal. Tests assert codes, never message text.
 */
export const ERROR_CODES = {
  // start-up (these throw, early and clearly)
  UNS_ERR_CONFIG_INVALID: 'A configuration value is missing, malformed or out of range',
  UNS_ERR_TOPICS_INVALID: 'topics.yaml does not parse or does not match schemas/topics.schema.json',
  UNS_ERR_SCHEMA_NOT_FOUND: 'A route names a JSON Schema that is not in schemas/payloads',
  UNS_ERR_SCHEMA_INVALID: 'A JSON Schema in schemas/payloads does not parse, does not compile or repeats an $id',
  UNS_ERR_STORE_UNAVAILABLE: 'The store could not be opened or migrated at start-up',
  // MQTT (the connection is refused or closed)
  UNS_ERR_AUTH_FAILED: 'Bad username, password or token',
  UNS_ERR_CLIENT_ID_REJECTED: 'Client identifier refused (empty with a persistent session, or held by another principal)',
  UNS_ERR_NOT_AUTHORIZED: 'The role does not permit this publish or subscribe',
  UNS_ERR_TOPIC_INVALID: 'Topic is empty, too long, too deep, has wildcards, U+0000 or ill-formed UTF-8',
  UNS_ERR_TOPIC_RESERVED: 'Clients may not publish into $SYS/ or $uns/',
  UNS_ERR_PACKET_TOO_LARGE: 'An MQTT packet exceeds the size limit (checked from its fixed header, before buffering)',
  UNS_ERR_MALFORMED_PACKET: 'An MQTT frame could not be parsed',
  // payloads (the message is acknowledged, dead-lettered to $uns/rejected/<topic> and counted)
  UNS_ERR_NO_ROUTE: 'No route in topics.yaml matches the topic',
  UNS_ERR_ISA95_LEVEL: "The topic's ISA-95 levels break the names or patterns in topics.yaml",
  UNS_ERR_DECODE_JSON: 'The payload is not well-formed JSON',
  UNS_ERR_DECODE_NUMBER: 'The payload is not a number',
  UNS_ERR_DECODE_STRING: 'The payload is not well-formed UTF-8 text',
  UNS_ERR_DECODE_SPARKPLUG: 'The payload is not a valid Sparkplug B protobuf',
  UNS_ERR_PAYLOAD_TOO_LARGE: 'The payload exceeds the decoded-size limit',
  UNS_ERR_PAYLOAD_TOO_DEEP: 'The JSON payload nests deeper than the limit',
  UNS_ERR_PAYLOAD_NUL: 'A string holds U+0000, which PostgreSQL text and jsonb cannot store',
  UNS_ERR_PAYLOAD_ENVELOPE: 'The JSON envelope has a bad timestamp, quality or unit',
  UNS_ERR_SCHEMA_VIOLATION: "The payload breaks its route's JSON Schema",
  UNS_ERR_SPARKPLUG_STATE: 'Sparkplug state error: DATA before BIRTH, unknown alias, sequence gap or stale DEATH',
  UNS_ERR_SPARKPLUG_METRIC: 'A Sparkplug metric is not in its BIRTH, changes its BIRTH datatype, or has a name that cannot be a topic level',
  UNS_ERR_TIMESTAMP_RANGE: "A timestamp is before 2000-01-01 or further ahead of the server's clock than allowed",
  UNS_ERR_STORE_REJECTED: 'The store refused the row (kept in the rejections table)',
  // HTTP and WebSocket (JSON body {"error": {"code", "message"}})
  UNS_ERR_BAD_REQUEST: 'The request (query, body or message) is malformed or fails its schema (400)',
  UNS_ERR_FILTER_INVALID: 'A topic filter is malformed (400)',
  UNS_ERR_UNAUTHENTICATED: 'Missing, malformed, expired, not-yet-valid or revoked credentials (401)',
  UNS_ERR_FORBIDDEN: "The request reaches outside the role's topic permissions (403)",
  UNS_ERR_NOT_FOUND: 'No such endpoint or resource (404)',
  UNS_ERR_BODY_TOO_LARGE: 'The request body exceeds the limit (413)',
  UNS_ERR_RATE_LIMITED: 'Too many requests; retry after the time given (429)',
  UNS_ERR_UNAVAILABLE: 'The write could not be made durable now; retry (503)',
  UNS_ERR_INTERNAL: 'An unexpected server error, logged with details (500)',
  // webhooks (REST answers 400; deliveries themselves never raise: their outcome is in the delivery log)
  UNS_ERR_WEBHOOK_URL_REFUSED: 'A webhook URL is not http(s), does not parse, or names a blocked address (loopback, link-local, private) that is not allow-listed (400)',
  UNS_ERR_WEBHOOK_TEMPLATE_INVALID: 'A webhook payload template is not JSON or uses a placeholder that is not a plain field path (400)',
  // inbound signed ingest (POST /api/v1/ingest/<source>)
  UNS_ERR_SIGNATURE_INVALID: 'An inbound ingest request has a missing, malformed or wrong HMAC signature (401)',
  UNS_ERR_TIMESTAMP_SKEW: "An inbound ingest request's signed timestamp is outside the tolerance (at most 5 min): replayed or skewed (401)",
  UNS_ERR_INGEST_MAPPING: 'A value of an inbound ingest body could not be mapped: a field is missing or a placeholder is not a valid topic level',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** An error that carries a registry code; start-up errors are thrown as these. */
export class UnsError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UnsError';
    this.code = code;
  }
}
