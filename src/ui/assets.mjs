// Part of `npm run build`: the Explorer's static files and its one vendored library (uPlot) into dist/ui,
// so the page is served by uns-bridge alone (air-gapped: no CDN).
import { cpSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = join(root, 'dist', 'ui');
mkdirSync(join(out, 'vendor'), { recursive: true });
cpSync(join(root, 'src', 'ui', 'static'), out, { recursive: true });
cpSync(join(root, 'node_modules', 'uplot', 'dist', 'uPlot.esm.js'), join(out, 'vendor', 'uplot.js'));
cpSync(join(root, 'node_modules', 'uplot', 'dist', 'uPlot.min.css'), join(out, 'vendor', 'uplot.css'));
