/**
 * Import boundaries of uns-bridge ("never-arrows" between the layers), checked by `npm run lint`.
 *
 * dependency-cruiser reads TypeScript through the `typescript` package's JS API, which the native
 * TypeScript 7 compiler does not ship, so the check runs on the compiled JavaScript (`npm run build`
 * writes dist/src, dist/broker, dist/bridge mirroring the sources). Consequence: imports that tsc
 * erases (`import type`, and imports only used as types) are not seen; runtime dependencies are.
 * The paths below match both layouts (`dist/src/core/...` and `src/core/...`).
 */

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'core-imports-no-outer-layer',
      comment: 'src/core is the innermost layer: it must not import broker/, bridge/, src/api, src/main or src/cli.',
      severity: 'error',
      from: { path: '^(dist/)?src/core/' },
      to: { path: ['^(dist/)?(broker|bridge|src/api)/', '^(dist/)?src/(main|cli)\\.[cm]?[jt]s$'] },
    },
    {
      name: 'broker-imports-no-bridge-or-api',
      comment: 'broker/ may use src/core only: never bridge/ or src/api.',
      severity: 'error',
      from: { path: '^(dist/)?broker/' },
      to: { path: '^(dist/)?(bridge|src/api)/' },
    },
    {
      name: 'bridge-imports-no-broker-or-api',
      comment: 'bridge/ may use src/core only: never broker/ or src/api.',
      severity: 'error',
      from: { path: '^(dist/)?bridge/' },
      to: { path: '^(dist/)?(broker|src/api)/' },
    },
    {
      name: 'api-imports-no-main-or-broker',
      comment: 'src/api must not import src/main (the composition root) or broker/.',
      severity: 'error',
      from: { path: '^(dist/)?src/api/' },
      to: { path: ['^(dist/)?broker/', '^(dist/)?src/main\\.[cm]?[jt]s$'] },
    },
    {
      name: 'src-uses-the-public-surfaces',
      comment: 'src/ (the API and the composition root) reaches bridge/ and broker/ only through their index files.',
      severity: 'error',
      from: { path: '^(dist/)?src/' },
      to: { path: '^(dist/)?(bridge|broker)/', pathNot: '^(dist/)?(bridge|broker)/index\\.[cm]?[jt]s$' },
    },
    {
      name: 'core-through-its-index',
      comment: 'Outside src/core, the kernel is reached through src/core/index.ts, its public surface.',
      severity: 'error',
      from: { path: '^(dist/)?(broker|bridge|src/api)/|^(dist/)?src/(main|cli)\\.[cm]?[jt]s$' },
      to: { path: '^(dist/)?src/core/', pathNot: '^(dist/)?src/core/index\\.[cm]?[jt]s$' },
    },
    {
      name: 'no-circular',
      comment: 'No import cycles (there are none today).',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: ['node_modules', '\\.map$'] },
    moduleSystems: ['es6', 'cjs'],
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
      mainFields: ['module', 'main'],
    },
    reporterOptions: {
      text: { highlightFocused: true },
    },
  },
};
