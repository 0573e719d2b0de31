export { UnsBroker, type BrokerOptions, type BrokerLimits, type BrokerStats } from './broker.js';
export { Authenticator, isFailure, type Principal, type UserRecord, type AuthenticatorOptions } from './auth.js';
export { AccessControl, Permissions, type RoleMap } from '../src/core/index.js';
export { guardFrames, FrameScanner } from './frame-guard.js';
export { BrokerLink, ORIGIN_PROPERTY, type BrokerLinkOptions, type BrokerLinkStats } from './link.js';
export { SessionStore, type SessionStoreOptions, type SessionStoreStats } from './session-store.js';
export { ClusterBus, redact as redactRedisUrl, type ClusterFrame, type ClusterPacket, type ClusterStats, type ClusterPeer } from './cluster.js';
