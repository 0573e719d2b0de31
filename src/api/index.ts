export { createApp } from './app.js';
export { ApiAuth, requireAuth, credentialOf, principalOf, type ApiPrincipal } from './auth.js';
export { ApiError } from './errors.js';
export { loadOpenApi, RequestValidator } from './openapi.js';
export { Metrics, type MetricSources } from './metrics.js';
export { createStreamServer, type StreamServer } from './stream.js';
export type { ApiDeps, ReadinessReport } from './deps.js';
export { httpPublisher, type HttpDoorOptions } from './http-door.js';
export { readinessReport, type ReadinessParts } from './readiness.js';
