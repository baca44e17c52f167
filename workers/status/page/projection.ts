/**
 * The map's frame and projection, shared by the build and the browser: the
 * build (scripts/status-page.ts) fits d3-geo's Natural Earth projection
 * to the frame and draws the land with it; the page projects each backend,
 * region and PoP with the same formula and the fit the build wrote on the
 * map. The formula is d3-geo's `geoNaturalEarth1Raw` (ISC licence, Copyright
 * 2010-2024 Mike Bostock), copied rather than imported: d3-geo ships as one
 * module whose unused parts a bundler cannot drop (10 KiB more for the page);
 * test/scripts/build-assets.test.ts checks it against d3-geo. No DOM.
 */

/** The map's viewBox, in SVG user units. */
export const MAP_WIDTH = 960;
export const MAP_HEIGHT = 500;
/** The gap kept between the globe's outline and the frame. */
export const MAP_PADDING = 8;

/** What d3-geo's `fitExtent` chose: the projection's scale and translate. */
export interface MapFit {
  scale: number;
  translate: readonly [number, number];
}

const RADIANS = Math.PI / 180;

/** Natural Earth I (Šavrič et al. 2011), radians in, projection units out: d3-geo's `geoNaturalEarth1Raw`. */
export function naturalEarth1Raw(lambda: number, phi: number): [x: number, y: number] {
  const phi2 = phi * phi;
  const phi4 = phi2 * phi2;
  return [
    lambda * (0.8707 - 0.131979 * phi2 + phi4 * (-0.013791 + phi4 * (0.003971 * phi2 - 0.001529 * phi4))),
    phi * (1.007226 + phi2 * (0.015085 + phi4 * (-0.044475 + 0.028874 * phi2 - 0.005916 * phi4))),
  ];
}

/**
 * Where a point lands in the frame: what d3-geo's `geoNaturalEarth1()` with
 * `fit`'s scale and translate (no rotation, centre [0, 0]) answers for it.
 *
 * @example project(0, 0, { scale: 150, translate: [480, 250] }) // [480, 250]
 */
export function project(lon: number, lat: number, fit: MapFit): [x: number, y: number] {
  let lambda = lon * RADIANS;
  // d3's identity rotation wraps longitudes into [-180, 180].
  if (Math.abs(lambda) > Math.PI) lambda -= Math.round(lambda / (2 * Math.PI)) * 2 * Math.PI;
  const [x, y] = naturalEarth1Raw(lambda, lat * RADIANS);
  return [fit.translate[0] + fit.scale * x, fit.translate[1] - fit.scale * y];
}

/** The fit as the build writes it on the map (`data-fit`), and back. */
export function formatFit(fit: MapFit): string {
  return `${fit.scale} ${fit.translate[0]} ${fit.translate[1]}`;
}

export function parseFit(text: string | null | undefined): MapFit | undefined {
  const parts = (text ?? '').trim().split(/\s+/).map(Number);
  if (parts.length !== 3 || !parts.every(Number.isFinite)) return undefined;
  return { scale: parts[0]!, translate: [parts[1]!, parts[2]!] };
}
