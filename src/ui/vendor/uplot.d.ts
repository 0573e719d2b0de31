// uPlot as the page loads it: copied by assets.mjs from the npm package, typed by the package's own types.
import uPlot from 'uplot';
export default uPlot;
