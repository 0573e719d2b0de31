export { createApp, type AppOptions, type ReadinessReport } from './app.js';
