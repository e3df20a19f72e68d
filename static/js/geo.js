// Map helpers shared by /ops and /field: the optional tile layer and the WGS84 → GCJ-02
// shift that AMap (Gaode) and Tencent tiles need.
//
// Everything the server sends is WGS84. Tianditu tiles are drawn in WGS84 / CGCS2000, so
// our points and polygons line up with them as they are. AMap tiles are drawn in GCJ-02
// (the "Mars" datum), which is offset by a few hundred metres inside China, so when the
// configured tile layer says `crs: gcj02` every coordinate we draw is shifted to GCJ-02
// first (markers, polygons, the user's position). Positions sent back to the server stay in
// WGS84 (they come from the browser's geolocation, which is WGS84).

const A = 6378245.0;
const EE = 0.00669342162296594323;

function outOfChina(lon, lat) {
  return lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271;
}

function tLat(x, y) {
  let r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  r += (20.0 * Math.sin(6.0 * x * Math.PI) + 20.0 * Math.sin(2.0 * x * Math.PI)) * 2.0 / 3.0;
  r += (20.0 * Math.sin(y * Math.PI) + 40.0 * Math.sin(y / 3.0 * Math.PI)) * 2.0 / 3.0;
  r += (160.0 * Math.sin(y / 12.0 * Math.PI) + 320 * Math.sin(y * Math.PI / 30.0)) * 2.0 / 3.0;
  return r;
}

function tLon(x, y) {
  let r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  r += (20.0 * Math.sin(6.0 * x * Math.PI) + 20.0 * Math.sin(2.0 * x * Math.PI)) * 2.0 / 3.0;
  r += (20.0 * Math.sin(x * Math.PI) + 40.0 * Math.sin(x / 3.0 * Math.PI)) * 2.0 / 3.0;
  r += (150.0 * Math.sin(x / 12.0 * Math.PI) + 300.0 * Math.sin(x / 30.0 * Math.PI)) * 2.0 / 3.0;
  return r;
}

/** WGS84 → GCJ-02 (identity outside China). */
export function wgs84ToGcj02(lon, lat) {
  if (outOfChina(lon, lat)) return [lon, lat];
  let dLat = tLat(lon - 105.0, lat - 35.0);
  let dLon = tLon(lon - 105.0, lat - 35.0);
  const radLat = lat / 180.0 * Math.PI;
  let magic = Math.sin(radLat);
  magic = 1 - EE * magic * magic;
  const sqrtMagic = Math.sqrt(magic);
  dLat = (dLat * 180.0) / ((A * (1 - EE)) / (magic * sqrtMagic) * Math.PI);
  dLon = (dLon * 180.0) / (A / sqrtMagic * Math.cos(radLat) * Math.PI);
  return [lon + dLon, lat + dLat];
}

/** A projector for the configured tiles: (lon, lat) in WGS84 → L.LatLng to draw. */
export function projector(tiles) {
  const shift = tiles && String(tiles.crs || '').toLowerCase() === 'gcj02';
  return (lon, lat) => {
    if (shift) {
      const [x, y] = wgs84ToGcj02(lon, lat);
      return L.latLng(y, x);
    }
    return L.latLng(lat, lon);
  };
}

function escapeHtml(s) {
  const d = document.createElement('div');
  d.textContent = s;
  return d.innerHTML;
}

/** The configured tile layer (or null). Subdomains and max zoom may be given in config. */
export function tileLayer(tiles) {
  if (!tiles || !tiles.url) return null;
  const opts = {
    // Leaflet renders attribution as HTML: escape it, it is configuration text.
    attribution: tiles.attribution ? escapeHtml(String(tiles.attribution)) : '',
    maxZoom: tiles.max_zoom || 18,
    crossOrigin: false,
  };
  if (tiles.subdomains) opts.subdomains = tiles.subdomains;
  return L.tileLayer(String(tiles.url), opts);
}

/** Great-circle distance in metres. */
export function haversine(lon1, lat1, lon2, lat2) {
  const R = 6371008.8;
  const p1 = lat1 * Math.PI / 180;
  const p2 = lat2 * Math.PI / 180;
  const dp = p2 - p1;
  const dl = (lon2 - lon1) * Math.PI / 180;
  const a = Math.sin(dp / 2) ** 2 + Math.cos(p1) * Math.cos(p2) * Math.sin(dl / 2) ** 2;
  return 2 * R * Math.asin(Math.sqrt(a));
}
