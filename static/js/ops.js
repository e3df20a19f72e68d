// /ops — the command centre's live map: regions, zones, events by timer state, units,
// the urgent list with server-driven countdowns, event detail and actions.
import {
  el, clear, replace, api, boot, Live, clock, fmtClock, fmtCountdown, fmtDuration, fmtAge,
  langButton, connectionPill, signOutButton, toast, setTimeZone, regionIndex, inScope, download,
} from './common.js';
import { ACCEPT, evidenceStrip, refusal, uploadEvidence } from './evidence.js';
import { t, tOr, onLangChange, pickName, pickText, applyStatic } from '../i18n.js';
import { projector, tileLayer } from './geo.js';
import {
  STATE_ORDER, isOlder, transferAnswer, makeCategoryNamer, stateBadge, stateLabel, statusLabel, stageLabel, tierLabel,
  sourceLabel, deadlinesBlock, routingBlock, timelineBlock,
} from './eventview.js';

const PAGE = 'ops';
const STALE_S = 300; // routing.position_max_age_s default
const FLASH_MS = 8000;
const GRID_ZOOM = 12;
const TOWNSHIP_ZOOM = 10;

const S = {
  me: null,
  ui: null,
  scope: null,
  events: new Map(),
  units: new Map(),
  teams: new Map(),
  departments: new Map(), // contract §8: where an event may be transferred (移送)
  regions: new Map(),
  zones: new Map(),
  catName: (id) => id,
  selected: null,
  detail: null, // full event (with timeline) of the selected one
  detailUnits: null,
  filter: null,
  flashUntil: new Map(),
  sound: localStorage.getItem('tzd.sound') !== 'off',
  audio: null,
};

let map;
let P; // WGS84 → drawn LatLng
let eventLayer;
let unitLayer;
const eventMarkers = new Map();
const unitMarkers = new Map();
const layers = {};
let live;
let conn;

// ---------------------------------------------------------------- start --------------------
async function main() {
  const { token, me } = await boot(PAGE);
  S.me = me;
  S.scope = me.role === 'admin' ? null : (me.region || null);
  chrome();
  const [ui, cats, teams, deps] = await Promise.all([
    api('ui').catch(() => ({ tiles: null, center: [121.2, 28.75], zoom: 9 })),
    api('categories').catch(() => ({ categories: [] })),
    api('teams').catch(() => ({ teams: [] })),
    api('departments').catch(() => ({ departments: [] })),
  ]);
  for (const d of deps.departments || []) S.departments.set(d.id, d);
  S.ui = ui;
  setTimeZone(ui.timezone);
  S.catName = makeCategoryNamer(cats.categories);
  for (const tm of teams.teams || []) S.teams.set(tm.id, tm);
  initMap();
  live = new Live({
    token,
    // Unit positions as one frame per server flush (docs/api.md, "batched positions").
    query: { positions: 'batch' },
    onMessage,
    onStatus: (st, info) => conn.set(st, info),
    onAuthFailure: () => location.reload(),
  });
  live.start();
  loadGeography();
  setInterval(tick, 500);
  setInterval(tickUnits, 5000);
  onLangChange(() => { conn.render(); renderChrome(); renderList(); renderDetail(); tickUnits(); });
}

function chrome() {
  conn = connectionPill();
  document.getElementById('conn-slot').appendChild(conn.node);
  document.getElementById('lang-slot').appendChild(langButton());
  document.getElementById('signout-slot').appendChild(signOutButton(PAGE));
  document.getElementById('fullscreen').addEventListener('click', toggleFullscreen);
  document.addEventListener('fullscreenchange', () => {
    document.body.classList.toggle('bigscreen', !!document.fullscreenElement);
    renderChrome();
    if (map) setTimeout(() => map.invalidateSize(), 200);
  });
  document.getElementById('sound-toggle').addEventListener('click', () => {
    S.sound = !S.sound;
    localStorage.setItem('tzd.sound', S.sound ? 'on' : 'off');
    unlockAudio();
    renderChrome();
  });
  document.getElementById('handover').addEventListener('click', handoverDialog);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && S.selected && !document.querySelector('.modal-overlay')) closeDetail();
  });
  // Browsers only let sound start after a user gesture: create the AudioContext then.
  const unlock = () => unlockAudio();
  document.addEventListener('pointerdown', unlock, { once: true, capture: true });
  document.addEventListener('keydown', unlock, { once: true, capture: true });
  if (new URLSearchParams(location.search).get('bigscreen') === '1') document.body.classList.add('bigscreen');
  renderChrome();
}

function renderChrome() {
  const me = S.me;
  const region = me.region_name ? pickName(me.region_name) : (me.region || t('scope.all'));
  replace(document.getElementById('who'), `${tOr(`role.${me.role}`, me.role)} · ${region}`);
  document.getElementById('sound-toggle').textContent = S.sound ? t('ops.sound.on') : t('ops.sound.off');
  document.getElementById('fullscreen').textContent = document.fullscreenElement ? t('ops.fullscreen.exit') : t('ops.fullscreen');
  renderCounts();
}

function toggleFullscreen() {
  if (document.fullscreenElement) {
    document.exitFullscreen().catch(() => {});
  } else if (document.documentElement.requestFullscreen) {
    document.documentElement.requestFullscreen().catch(() => document.body.classList.toggle('bigscreen'));
  } else {
    document.body.classList.toggle('bigscreen');
  }
}

// ---------------------------------------------------------------- sound --------------------
function unlockAudio() {
  if (S.audio) {
    if (S.audio.state === 'suspended') S.audio.resume().catch(() => {});
    return;
  }
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return;
  try { S.audio = new Ctx(); } catch (_) { S.audio = null; }
}

function beep() {
  const ctx = S.audio;
  window.__ops.beeps += 1;
  if (!S.sound || !ctx || ctx.state !== 'running') return;
  try {
    const now = ctx.currentTime;
    for (let i = 0; i < 3; i++) {
      const o = ctx.createOscillator();
      const g = ctx.createGain();
      o.type = 'square';
      o.frequency.value = i % 2 ? 660 : 990;
      g.gain.setValueAtTime(0.0001, now + i * 0.22);
      g.gain.exponentialRampToValueAtTime(0.2, now + i * 0.22 + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.22 + 0.18);
      o.connect(g).connect(ctx.destination);
      o.start(now + i * 0.22);
      o.stop(now + i * 0.22 + 0.2);
    }
  } catch (_) { /* sound is best effort */ }
}

// ---------------------------------------------------------------- map ----------------------
function initMap() {
  P = projector(S.ui.tiles);
  const center = S.ui.center || [121.2, 28.75];
  map = L.map('map', {
    maxZoom: 18, minZoom: 5, zoomControl: true, preferCanvas: false, attributionControl: true,
  }).setView(P(center[0], center[1]), S.ui.zoom || 9);
  map.attributionControl.setPrefix(false);
  const canvas = L.canvas({ padding: 0.3 });
  layers.renderer = canvas;
  layers.county = L.layerGroup().addTo(map);
  layers.township = L.layerGroup();
  layers.grid = L.layerGroup();
  layers.zones = L.layerGroup().addTo(map);
  const tiles = tileLayer(S.ui.tiles);
  if (tiles) tiles.addTo(map);

  eventLayer = L.markerClusterGroup({
    maxClusterRadius: 40,
    showCoverageOnHover: false,
    spiderfyOnMaxZoom: true,
    disableClusteringAtZoom: 16,
    iconCreateFunction: clusterIcon,
  }).addTo(map);
  unitLayer = L.markerClusterGroup({
    maxClusterRadius: 50,
    showCoverageOnHover: false,
    disableClusteringAtZoom: 13,
    iconCreateFunction: (c) => L.divIcon({
      html: el('span', {}, String(c.getChildCount())), className: 'unit-cluster', iconSize: [28, 28],
    }),
  }).addTo(map);

  const overlays = {};
  overlays[t('ops.layer.zones')] = layers.zones;
  overlays[t('ops.layer.events')] = eventLayer;
  overlays[t('ops.layer.units')] = unitLayer;
  const bases = {};
  if (tiles) bases[t('ops.layer.tiles')] = tiles;
  L.control.layers(tiles ? bases : null, overlays, { collapsed: true }).addTo(map);
  L.control.scale({ imperial: false }).addTo(map);
  map.on('zoomend', zoomLayers);
  zoomLayers();
}

function clusterIcon(cluster) {
  let worst = 'on_time';
  for (const m of cluster.getAllChildMarkers()) {
    const s = m.options.evState;
    if ((STATE_ORDER[s] || 0) > (STATE_ORDER[worst] || 0)) worst = s;
  }
  const flashing = cluster.getAllChildMarkers().some((m) => isFlashing(m.options.evId));
  return L.divIcon({
    html: el('span', {}, String(cluster.getChildCount())),
    className: `ev-cluster ev-${worst}${flashing ? ' flash' : ''}`,
    iconSize: [36, 36],
  });
}

let gridLoaded = false;
function zoomLayers() {
  const z = map.getZoom();
  toggleLayer(layers.township, z >= TOWNSHIP_ZOOM);
  toggleLayer(layers.grid, z >= GRID_ZOOM);
  if (z >= GRID_ZOOM && !gridLoaded) {
    gridLoaded = true;
    api('regions', { query: { level: 'grid' } }).then((fc) => {
      drawRegions(layers.grid, (fc.features || []).filter((f) => gridInScope(f)), 'grid');
    }).catch(() => { gridLoaded = false; });
  }
  document.getElementById('map').dataset.zoom = String(z);
}

function toggleLayer(layer, on) {
  if (on && !map.hasLayer(layer)) layer.addTo(map);
  if (!on && map.hasLayer(layer)) map.removeLayer(layer);
}

function gridInScope(f) {
  const p = f.properties || {};
  if (!S.regions.has(String(p.id))) {
    S.regions.set(String(p.id), { id: String(p.id), name: p.name, level: 'grid', parent: p.parent == null ? null : String(p.parent) });
  }
  return inScope(S.regions, p.id, S.scope);
}

const REGION_STYLE = {
  county: { color: '#6fa8ff', weight: 2.5, fill: true, fillColor: '#1b3a5c', fillOpacity: 0.18 },
  township: { color: '#4d7bb3', weight: 1, fill: true, fillColor: '#1b3a5c', fillOpacity: 0.05 },
  grid: { color: '#3d5f86', weight: 0.6, dashArray: '3 3', fill: false },
};

function geoOpts(style, level) {
  return {
    renderer: layers.renderer,
    style: () => style,
    coordsToLatLng: (c) => P(c[0], c[1]),
    interactive: level !== 'grid',
    onEachFeature: (f, layer) => {
      const p = f.properties || {};
      layer.bindTooltip(() => el('span', {}, pickName(p.name || p.id)), { sticky: true, direction: 'top' });
    },
  };
}

const drawnRegions = [];
function drawRegions(group, features, level) {
  for (const f of features) drawnRegions.push(String((f.properties || {}).id));
  if (!features.length) return null;
  const gj = L.geoJSON({ type: 'FeatureCollection', features }, geoOpts(REGION_STYLE[level], level));
  group.addLayer(gj);
  return gj;
}

async function loadGeography() {
  const [counties, townships, zones] = await Promise.all([
    api('regions', { query: { level: 'county' } }).catch(() => ({ features: [] })),
    api('regions', { query: { level: 'township' } }).catch(() => ({ features: [] })),
    api('zones').catch(() => ({ features: [] })),
  ]);
  const all = [...(counties.features || []), ...(townships.features || [])];
  for (const [k, v] of regionIndex(all)) S.regions.set(k, v);
  const keep = (f) => inScope(S.regions, f.properties && f.properties.id, S.scope);
  const cf = (counties.features || []).filter(keep);
  const tf = (townships.features || []).filter(keep);
  const c = drawRegions(layers.county, cf, 'county');
  const tw = drawRegions(layers.township, tf, 'township');
  // A zone is shown when its team is one this token can see (GET /teams is scoped).
  const zf = (zones.features || []).filter((f) => !S.scope || S.teams.has(String((f.properties || {}).team)));
  for (const f of zf) S.zones.set(String(f.properties.id), f.properties);
  if (zf.length) {
    layers.zones.addLayer(L.geoJSON({ type: 'FeatureCollection', features: zf }, {
      renderer: layers.renderer,
      style: () => ({ color: '#ff9f1c', weight: 2, dashArray: '6 4', fillColor: '#ff9f1c', fillOpacity: 0.22 }),
      coordsToLatLng: (co) => P(co[0], co[1]),
      onEachFeature: (f, layer) => {
        const p = f.properties || {};
        layer.bindTooltip(() => el('span', {}, pickName(p.name || p.id), ' · ', tOr(`zone.${p.kind}`, p.kind || '')), { sticky: true });
      },
    }));
  }
  const bounds = (c && c.getBounds().isValid()) ? c.getBounds() : (tw && tw.getBounds().isValid() ? tw.getBounds() : null);
  if (bounds && S.scope) map.fitBounds(bounds, { padding: [10, 10] });
  document.getElementById('map').dataset.regions = String(cf.length + tf.length);
  renderList();
}

// ---------------------------------------------------------------- live messages ------------
function onMessage(msg) {
  switch (msg.type) {
    case 'snapshot':
      S.events.clear();
      for (const e of msg.events || []) if (isOpen(e)) S.events.set(e.id, e);
      S.units.clear();
      for (const u of msg.units || []) S.units.set(u.id, u);
      redrawEvents();
      redrawUnits();
      break;
    case 'event.created':
    case 'event.updated':
    case 'event.escalated':
    case 'timer.warning':
    case 'timer.breached':
      if (msg.event) upsertEvent(msg.event, msg);
      break;
    case 'unit.updated':
      if (msg.unit) upsertUnit(msg.unit);
      break;
    case 'units.updated':
      for (const u of msg.units || []) upsertUnit(u);
      break;
    default:
      break;
  }
}

function isOpen(e) { return e && e.timer_state !== 'closed' && e.status !== 'resolved' && e.status !== 'cancelled'; }

function upsertEvent(e, msg) {
  const prev = S.events.get(e.id);
  if (isOlder(prev, e)) return;
  if (isOpen(e)) S.events.set(e.id, e); else S.events.delete(e.id);
  drawEvent(e);
  if (msg.type === 'timer.breached' || (msg.type === 'event.escalated' && !prev)) {
    flash(e.id);
    if (msg.type === 'timer.breached') {
      beep();
      toast(t('ops.breach', { c: `${S.catName(e.category)} · ${stageLabel(msg.stage || (e.breaches || []).slice(-1)[0])}` }), 'error', 6000);
    }
  }
  scheduleList();
  if (S.selected === e.id) refreshDetail();
}

function flash(id) {
  S.flashUntil.set(id, Date.now() + FLASH_MS);
  const e = S.events.get(id);
  if (e) drawEvent(e);
  setTimeout(() => {
    const cur = S.events.get(id);
    if (cur) drawEvent(cur);
    scheduleList();
  }, FLASH_MS + 50);
}

function isFlashing(id) {
  const u = S.flashUntil.get(id);
  if (!u) return false;
  if (u < Date.now()) { S.flashUntil.delete(id); return false; }
  return true;
}

function eventIcon(e) {
  return L.divIcon({
    className: `ev-icon ev-${e.timer_state}${isFlashing(e.id) ? ' flash' : ''}${S.selected === e.id ? ' selected' : ''} prio-${e.priority || 2}`,
    iconSize: [20, 20],
    iconAnchor: [10, 10],
    html: el('span', { 'data-event': e.id, 'data-state': e.timer_state }),
  });
}

function drawEvent(e) {
  const m = eventMarkers.get(e.id);
  if (!isOpen(e)) {
    if (m) { eventLayer.removeLayer(m); eventMarkers.delete(e.id); }
    return;
  }
  const ll = P(e.location.lon, e.location.lat);
  if (!m) {
    const marker = L.marker(ll, { icon: eventIcon(e), evState: e.timer_state, evId: e.id, keyboard: true, title: S.catName(e.category) });
    marker.bindTooltip(() => eventTooltip(S.events.get(e.id) || e), { direction: 'top', offset: [0, -8] });
    marker.on('click', () => select(e.id));
    eventMarkers.set(e.id, marker);
    eventLayer.addLayer(marker);
  } else {
    m.options.evState = e.timer_state;
    m.setIcon(eventIcon(e));
    if (!m.getLatLng().equals(ll)) m.setLatLng(ll);
    eventLayer.refreshClusters(m);
  }
}

function eventTooltip(e) {
  return el('div', { class: 'tip' },
    el('strong', {}, S.catName(e.category)), ' ', stateBadge(e.timer_state),
    el('div', {}, e.description ? String(e.description).slice(0, 120) : ''),
    el('div', { class: 'muted' }, statusLabel(e.status), ' · ', regionName(e.township)));
}

function redrawEvents() {
  eventLayer.clearLayers();
  eventMarkers.clear();
  for (const e of S.events.values()) drawEvent(e);
  scheduleList();
  if (S.selected) refreshDetail();
}

// ---------------------------------------------------------------- units --------------------
function unitAge(u) {
  if (!u.at) return null;
  const at = Date.parse(u.at);
  return Number.isFinite(at) ? Math.max(0, (clock.now() - at) / 1000) : null;
}

function unitStale(u) {
  const age = unitAge(u);
  return u.source !== 'reported' || age === null || age > STALE_S;
}

function shortAge(u) {
  if (u.source === 'base' || !u.at) return '⌂';
  const s = unitAge(u);
  if (s === null) return '';
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

const KIND_GLYPH = { officer: '人', vehicle: '车', boat: '船' };
function unitIcon(u) {
  const cls = ['unit-icon', `unit-${u.kind || 'officer'}`];
  if (unitStale(u)) cls.push('stale');
  if (u.source === 'base') cls.push('base');
  if (!u.available) cls.push('busy');
  return L.divIcon({
    className: cls.join(' '),
    iconSize: null,
    iconAnchor: [11, 11],
    html: el('span', { class: 'unit-pin', 'data-unit': u.id },
      el('span', { class: 'unit-glyph' }, KIND_GLYPH[u.kind] || '•'),
      el('span', { class: 'unit-age' }, shortAge(u))),
  });
}

function unitTooltip(u) {
  const team = S.teams.get(u.team);
  let pos;
  if (u.source === 'base' || !u.at) pos = t('ops.unit.base');
  else pos = t('ops.unit.age', { t: fmtAge(unitAge(u)) }) + (unitStale(u) ? ` · ${t('ops.unit.stale')}` : '');
  return el('div', { class: 'tip' },
    el('strong', {}, String(u.name || u.id)), ' ', el('span', { class: 'muted' }, tOr(`kind.${u.kind}`, u.kind || '')),
    el('div', {}, team ? pickName(team.name) : String(u.team || '')),
    el('div', { class: 'muted' }, pos),
    el('div', {}, u.available ? t('ops.detail.free') : `${t('ops.detail.busy')} · ${u.event || ''}`));
}

function upsertUnit(u) {
  S.units.set(u.id, u);
  drawUnit(u);
}

function drawUnit(u) {
  if (u.lon == null || u.lat == null) return;
  const ll = P(u.lon, u.lat);
  let m = unitMarkers.get(u.id);
  if (!m) {
    m = L.marker(ll, { icon: unitIcon(u), keyboard: false, zIndexOffset: -100 });
    m.bindTooltip(() => unitTooltip(S.units.get(u.id) || u), { direction: 'top', offset: [0, -8] });
    unitMarkers.set(u.id, m);
    unitLayer.addLayer(m);
  } else {
    m.setIcon(unitIcon(u));
    if (!m.getLatLng().equals(ll)) m.setLatLng(ll);
  }
}

function redrawUnits() {
  unitLayer.clearLayers();
  unitMarkers.clear();
  const list = [...S.units.values()].filter((u) => u.lon != null && u.lat != null);
  const markers = list.map((u) => {
    const m = L.marker(P(u.lon, u.lat), { icon: unitIcon(u), keyboard: false, zIndexOffset: -100 });
    m.bindTooltip(() => unitTooltip(S.units.get(u.id) || u), { direction: 'top', offset: [0, -8] });
    unitMarkers.set(u.id, m);
    return m;
  });
  unitLayer.addLayers(markers);
}

/** Refresh the age labels and the grey of the unit markers that are on screen. */
function tickUnits() {
  for (const [id, m] of unitMarkers) {
    const node = m.getElement();
    if (!node) continue;
    const u = S.units.get(id);
    if (!u) continue;
    const age = node.querySelector('.unit-age');
    if (age) age.textContent = shortAge(u);
    node.classList.toggle('stale', unitStale(u));
  }
}

// ---------------------------------------------------------------- list ---------------------
function regionName(id) {
  if (!id) return '';
  const r = S.regions.get(String(id));
  return r ? pickName(r.name) : String(id);
}

function teamName(id) {
  if (!id) return '';
  const tm = S.teams.get(id);
  return tm ? pickName(tm.name) : String(id);
}

function unitName(id) {
  if (!id) return '';
  const u = S.units.get(id);
  return u ? String(u.name || id) : String(id);
}

function deadlineMs(e) {
  const at = e.next_deadline && Date.parse(e.next_deadline.at);
  return Number.isFinite(at) ? at : Infinity;
}

let listQueued = false;
function scheduleList() {
  if (listQueued) return;
  listQueued = true;
  requestAnimationFrame(() => { listQueued = false; renderList(); });
}

function myTier() {
  if (S.me.role !== 'operator') return null;
  if (!S.scope) return 'city';
  const r = S.regions.get(S.scope);
  if (r) return r.level === 'grid' ? 'township' : r.level;
  return S.regions.size ? 'city' : null; // the city itself is not among the drawn layers
}

function renderCounts() {
  const counts = { on_time: 0, warning: 0, breached: 0, escalated: 0 };
  for (const e of S.events.values()) if (e.timer_state in counts) counts[e.timer_state] += 1;
  const box = document.getElementById('counts');
  const chip = (state, n) => el('button', {
    type: 'button', class: `chip ${state}${S.filter === state ? ' active' : ''}`, 'data-state': state,
    'aria-pressed': S.filter === state ? 'true' : 'false',
    onclick: () => { S.filter = S.filter === state ? null : state; renderList(); },
  }, `${stateLabel(state)} ${n}`);
  // Events held at this operator's own tier (the ones it is expected to act on).
  const tier = myTier();
  const mine = [...S.events.values()].filter((e) => e.tier === tier).length;
  replace(box,
    el('span', { class: 'chip total', id: 'count-open' }, `${t('ops.count.open')} ${S.events.size}`),
    ...Object.entries(counts).map(([k, v]) => chip(k, v)),
    tier ? el('button', {
      type: 'button', class: `chip mine${S.filter === 'mine' ? ' active' : ''}`, 'data-state': 'mine',
      'aria-pressed': S.filter === 'mine' ? 'true' : 'false',
      onclick: () => { S.filter = S.filter === 'mine' ? null : 'mine'; renderList(); },
    }, `${t('ops.count.mine', { tier: tierLabel(tier) })} ${mine}`) : null);
}

function renderList() {
  renderCounts();
  const list = document.getElementById('event-list');
  const evs = [...S.events.values()]
    .filter((e) => !S.filter || e.timer_state === S.filter || (S.filter === 'mine' && e.tier === myTier()))
    .sort((a, b) => deadlineMs(a) - deadlineMs(b) || (a.priority || 2) - (b.priority || 2) || String(a.id).localeCompare(String(b.id)));
  const rows = evs.map((e) => {
    const nd = e.next_deadline;
    return el('li', {
      class: `ev-row ev-${e.timer_state}${isFlashing(e.id) ? ' flash' : ''}${S.selected === e.id ? ' selected' : ''}`,
      'data-id': e.id, 'data-state': e.timer_state, 'data-status': e.status, 'data-tier': e.tier || '',
      tabindex: '0', role: 'button',
      onclick: () => select(e.id),
      onkeydown: (ev) => { if (ev.key === 'Enter') select(e.id); },
    },
    el('div', { class: 'row1' },
      stateBadge(e.timer_state),
      el('span', { class: 'cat' }, S.catName(e.category)),
      el('span', { class: 'prio' }, `P${e.priority || ''}`),
      el('span', { class: 'cd mono', 'data-deadline': nd ? nd.at : '' }, nd ? countdownText(nd.at) : '')),
    el('div', { class: 'row2 muted' },
      nd ? el('span', { class: 'stage' }, stageLabel(nd.stage)) : null,
      el('span', {}, statusLabel(e.status)),
      el('span', {}, regionName(e.township || e.county)),
      el('span', {}, tierLabel(e.tier))),
    el('div', { class: 'row3 desc' }, e.description ? String(e.description) : ''));
  });
  replace(list, rows);
  document.getElementById('list-count').textContent = String(evs.length);
  document.getElementById('list-empty').classList.toggle('hidden', evs.length > 0);
}

function countdownText(iso) {
  return fmtCountdown(Date.parse(iso) - clock.now());
}

function tick() {
  const now = clock.now();
  for (const n of document.querySelectorAll('.cd[data-deadline]')) {
    const at = Date.parse(n.dataset.deadline);
    if (!Number.isFinite(at)) { n.textContent = ''; continue; }
    n.textContent = fmtCountdown(at - now);
    n.classList.toggle('overdue', at - now < 0);
  }
  const c = document.getElementById('clock');
  c.textContent = fmtClock(new Date(now).toISOString());
}

// ---------------------------------------------------------------- detail -------------------
function select(id) {
  const prev = S.selected;
  S.selected = id;
  S.detail = null;
  S.detailUnits = null;
  document.getElementById('list-view').classList.add('hidden');
  document.getElementById('detail-view').classList.remove('hidden');
  renderDetail();
  refreshDetail();
  const m = eventMarkers.get(id);
  if (m) eventLayer.zoomToShowLayer(m, () => map.panTo(m.getLatLng()));
  for (const k of [prev, id]) { const e = k && S.events.get(k); if (e) drawEvent(e); }
  scheduleList();
}

function closeDetail() {
  const id = S.selected;
  S.selected = null;
  S.detail = null;
  document.getElementById('detail-view').classList.add('hidden');
  document.getElementById('list-view').classList.remove('hidden');
  const e = id && S.events.get(id);
  if (e) drawEvent(e);
  renderList();
}

let detailTimer = null;
function refreshDetail() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(async () => {
    const id = S.selected;
    if (!id) return;
    try {
      const [ev, units] = await Promise.all([
        api(`events/${encodeURIComponent(id)}`),
        api(`events/${encodeURIComponent(id)}/units`).catch(() => null),
      ]);
      if (S.selected !== id) return;
      S.detail = ev;
      S.detailUnits = units;
      renderDetail();
    } catch (e) {
      if (S.selected === id) toast(t('error.generic', { msg: e.message }), 'error');
    }
  }, 120);
}

function renderDetail() {
  const box = document.getElementById('detail-view');
  if (!S.selected) { clear(box); return; }
  const e = S.detail || S.events.get(S.selected);
  if (!e) { replace(box, el('p', { class: 'muted' }, t('loading'))); return; }
  const nd = e.next_deadline;
  const note = el('textarea', { id: 'action-note', rows: '2', maxlength: '2000', placeholder: t('ops.detail.note.ph'), 'aria-label': t('ops.detail.note') });
  // Keep what the operator is typing (and where) when an update redraws the panel.
  const prevNote = document.getElementById('action-note');
  const typing = prevNote && prevNote.dataset.event === e.id && document.activeElement === prevNote;
  const caret = typing ? [prevNote.selectionStart, prevNote.selectionEnd] : null;
  if (prevNote && prevNote.dataset.event === e.id) note.value = prevNote.value;
  note.dataset.event = e.id;
  const prevTeam = document.getElementById('reassign-team');
  const keptTeam = prevTeam && prevTeam.dataset.event === e.id ? prevTeam.value : null;
  const teamSel = el('select', { id: 'reassign-team', 'aria-label': t('ops.detail.reassign_team') },
    [...S.teams.values()]
      .sort((a, b) => levelRank(a.level) - levelRank(b.level) || String(a.name).localeCompare(String(b.name), 'zh'))
      .map((tm) => el('option', { value: tm.id, selected: tm.id === e.team }, `${pickName(tm.name)} (${tierLabel(tm.level)})`)));
  teamSel.dataset.event = e.id;
  if (keptTeam) teamSel.value = keptTeam;
  // Supervisors may watch /ops but not act: no buttons that would only answer 403.
  const open = isOpen(e) && ['operator', 'admin'].includes(S.me.role);
  const act = (action, extra = {}) => doAction(e.id, action, { ...extra, note: note.value.trim() || undefined });
  // Transferred to another department (移送): its clocks are stopped; only cancel applies.
  const transferred = e.status === 'transferred';

  replace(box,
    el('div', { class: 'detail-head' },
      el('button', { type: 'button', class: 'btn small', id: 'detail-back', onclick: closeDetail }, `← ${t('back')}`),
      el('h2', { id: 'detail-title' }, S.catName(e.category)),
      stateBadge(e.timer_state)),
    el('div', { class: 'detail-cd' },
      nd ? el('span', { class: 'muted' }, stageLabel(nd.stage)) : null,
      nd ? el('span', { class: 'cd big mono', 'data-deadline': nd.at }, countdownText(nd.at)) : el('span', { class: 'muted' }, statusLabel(e.status))),
    el('p', { class: 'desc-full', id: 'detail-description' }, e.description ? String(e.description) : ''),
    el('dl', { class: 'kv' },
      el('dt', {}, t('ops.detail.status')), el('dd', {}, statusLabel(e.status)),
      el('dt', {}, t('ops.detail.tier')), el('dd', {}, tierLabel(e.tier)),
      el('dt', {}, t('ops.detail.team')), el('dd', {}, teamName(e.team), e.mutual_aid ? ` · ${t('ops.detail.mutual_aid')}` : ''),
      el('dt', {}, t('ops.detail.unit')), el('dd', {}, e.unit ? unitName(e.unit) : t('none')),
      el('dt', {}, t('ops.detail.township')), el('dd', {}, regionName(e.township), e.grid ? ` · ${t('ops.detail.grid')} ${regionName(e.grid)}` : ''),
      e.zone ? el('dt', {}, t('ops.detail.zone')) : null, e.zone ? el('dd', {}, zoneName(e.zone)) : null,
      el('dt', {}, t('ops.detail.location')), el('dd', { class: 'mono' }, `${Number(e.location.lon).toFixed(5)}, ${Number(e.location.lat).toFixed(5)}`),
      el('dt', {}, t('ops.detail.source')), el('dd', {}, sourceLabel(e.source), e.external_id ? ` · ${String(e.external_id)}` : ''),
      el('dt', {}, t('ops.detail.priority')), el('dd', {}, `P${e.priority}`),
      el('dt', {}, t('ops.detail.created')), el('dd', {}, fmtClock(e.created_at, true))),
    e.transfer ? section(t('ops.detail.transfer'), transferBlock(e)) : null,
    section(t('ops.detail.deadlines'), deadlinesBlock(e)),
    open && transferred ? section(t('ops.detail.actions'), el('div', { class: 'actions' },
      note, el('div', { class: 'action-row' }, cancelButton(act)))) : null,
    open && !transferred ? section(t('ops.detail.actions'), el('div', { class: 'actions' },
      note,
      e.team && S.departments.size ? transferRow(e, note, act) : null,
      el('div', { class: 'action-row' },
        teamSel,
        el('button', { type: 'button', class: 'btn', id: 'do-reassign-team', onclick: () => act('reassign', { team: teamSel.value }) }, t('action.reassign'))),
      el('div', { class: 'action-row' },
        el('button', { type: 'button', class: 'btn', id: 'do-escalate', disabled: e.tier === 'city', onclick: () => act('escalate') }, t('action.escalate')),
        // Resolving closes the case: only once a unit is on scene (the lifecycle's rule).
        el('button', {
          type: 'button', class: 'btn primary', id: 'do-resolve', disabled: e.status !== 'arrived',
          title: e.status !== 'arrived' ? t('ops.resolve.after_arrive') : null, onclick: () => act('resolve'),
        }, t('action.resolve')),
        cancelButton(act)))) : null,
    section(t('ops.detail.units'), unitsBlock(e, act, open)),
    section(t('ops.detail.routing'), routingBlock(e.routing)),
    section(t('evidence.title'), evidenceBlock(e)),
    section(t('ops.detail.timeline'), S.detail ? timelineBlock(S.detail, { names: (v) => teamName(v) || unitName(v) }) : el('p', { class: 'muted' }, t('loading'))));
  if (caret && note.isConnected) {
    note.focus();
    note.setSelectionRange(caret[0], caret[1]);
  }
}

/** Evidence of the event: thumbnails and chips, attach (operators, admins; any status),
 * and the dossier for legal review. */
function evidenceBlock(e) {
  const d = S.detail && S.detail.id === e.id ? S.detail : e;
  const canAttach = ['operator', 'admin'].includes(S.me.role);
  const input = el('input', {
    type: 'file', accept: ACCEPT, id: 'evidence-input', class: 'hidden-input', multiple: true,
    onchange: (ev) => attachFiles(e.id, ev.target),
  });
  return el('div', { class: 'evidence', id: 'evidence-block' },
    evidenceStrip(d),
    el('div', { class: 'action-row' },
      canAttach ? el('label', { class: 'btn', id: 'evidence-attach', for: 'evidence-input' }, t('evidence.attach'), input) : null,
      el('button', {
        type: 'button', class: 'btn', id: 'evidence-dossier',
        onclick: () => download(`/api/v1/events/${encodeURIComponent(e.id)}/dossier`, null, `dossier-${e.id}.zip`)
          .catch((err) => toast(t('error.generic', { msg: err.message }), 'error')),
      }, t('evidence.dossier'))));
}

async function attachFiles(id, input) {
  const files = [...(input.files || [])];
  input.value = '';
  for (const f of files) {
    const why = refusal(f);
    if (why) { toast(why, 'warn', 6000); continue; }
    try {
      await uploadEvidence(id, f);
      toast(t('evidence.sent', { name: f.name }), 'info');
    } catch (err) {
      toast(t('error.generic', { msg: err.message }), 'error', 8000);
    }
  }
  if (S.selected === id) refreshDetail();
}

// Cancel asks twice on the button itself (no blocking browser dialog on a big screen).
function cancelButton(act) {
  return el('button', {
    type: 'button', class: 'btn danger', id: 'do-cancel',
    onclick: (ev) => {
      const b = ev.currentTarget;
      if (b.dataset.armed === '1') { act('cancel'); return; }
      b.dataset.armed = '1';
      b.textContent = t('ops.confirm.cancel');
      setTimeout(() => { if (b.isConnected) { b.dataset.armed = ''; b.textContent = t('action.cancel'); } }, 4000);
    },
  }, t('action.cancel'));
}

function departmentName(id) {
  const d = S.departments.get(String(id));
  return d ? pickName(d.name) : String(id ?? '');
}

// 移送: choose the department; the note above is the reason (required).
function transferRow(e, note, act) {
  const prev = document.getElementById('transfer-department');
  const kept = prev && prev.dataset.event === e.id ? prev.value : null;
  const sel = el('select', { id: 'transfer-department', 'aria-label': t('ops.transfer.department') },
    [...S.departments.values()].map((d) => el('option', { value: d.id }, pickName(d.name))));
  sel.dataset.event = e.id;
  if (kept) sel.value = kept;
  return el('div', { class: 'action-row' }, sel,
    el('button', {
      type: 'button', class: 'btn', id: 'do-transfer',
      onclick: () => {
        if (!note.value.trim()) { toast(t('ops.transfer.need_note'), 'error'); note.focus(); return; }
        act('transfer', { department: sel.value });
      },
    }, t('action.transfer')));
}

function transferBlock(e) {
  const tr = e.transfer;
  return el('dl', { class: 'kv', id: 'detail-transfer' },
    el('dt', {}, t('ops.transfer.department')), el('dd', { 'data-department': tr.department }, departmentName(tr.department)),
    el('dt', {}, t('ops.transfer.at')), el('dd', {}, fmtClock(tr.at, true)),
    el('dt', {}, t('ops.transfer.note')), el('dd', {}, tr.note ? String(tr.note) : ''),
    el('dt', {}, t('ops.transfer.answer')), el('dd', { id: 'transfer-answer' }, transferAnswer(tr)));
}

function levelRank(l) { return { township: 0, county: 1, city: 2 }[l] ?? 3; }

function zoneName(id) {
  const z = S.zones.get(String(id));
  return z ? pickName(z.name) : String(id);
}

function section(title, body) {
  return el('section', { class: 'detail-section' }, el('h3', {}, title), body);
}

function unitsBlock(e, act, open) {
  const u = S.detailUnits;
  if (!u) return el('p', { class: 'muted' }, t('loading'));
  const row = (pick, label) => {
    const unit = S.units.get(pick.unit);
    return el('li', { class: 'pick', 'data-unit': pick.unit },
      el('div', {},
        label ? el('span', { class: 'badge outline' }, label) : null, ' ',
        el('strong', {}, unitName(pick.unit)), ' ',
        el('span', { class: 'muted' }, teamName(pick.team)),
        pick.mutual_aid ? el('span', { class: 'badge outline' }, t('ops.detail.mutual_aid')) : null),
      el('div', { class: 'muted' },
        pick.distance_m != null ? t('ops.detail.distance', { d: Math.round(pick.distance_m) }) : '',
        unit ? ` · ${unit.available ? t('ops.detail.free') : t('ops.detail.busy')}` : '',
        unit && unit.at ? ` · ${fmtAge(unitAge(unit))}` : ''),
      typeof pick.explanation === 'string' || (pick.explanation && (pick.explanation.zh || pick.explanation.en))
        ? el('div', { class: 'muted small' }, pickText(pick.explanation)) : null,
      open && pick.unit !== e.unit ? el('button', {
        type: 'button', class: 'btn small', onclick: () => act('reassign', { unit: pick.unit }),
      }, t('ops.detail.reassign_unit')) : null);
  };
  const items = [];
  if (u.recommended) items.push(row(u.recommended, t('ops.detail.recommended')));
  for (const n of u.nearby || []) {
    if (u.recommended && n.unit === u.recommended.unit) continue;
    items.push(row(n, null));
  }
  if (!items.length) return el('p', { class: 'muted' }, t('none'));
  return el('ol', { class: 'picks' }, items);
}

async function doAction(id, action, body) {
  const clean = {};
  for (const [k, v] of Object.entries(body)) if (v !== undefined && v !== '') clean[k] = v;
  try {
    const ev = await api(`events/${encodeURIComponent(id)}/${action}`, { method: 'POST', body: clean });
    toast(t('ops.done', { a: tOr(`action.${action}`, action) }), 'ok');
    const note = document.getElementById('action-note');
    if (note) note.value = '';
    if (ev && ev.id) {
      if (isOpen(ev)) S.events.set(ev.id, ev); else S.events.delete(ev.id);
      drawEvent(ev);
      scheduleList();
      // Closed by this operator: back to the list (the timeline stays one click away).
      if (!isOpen(ev) && S.selected === ev.id) { closeDetail(); return; }
    }
    refreshDetail();
  } catch (e) {
    toast(t('error.generic', { msg: e.message }), 'error', 6000);
  }
}

// ---------------------------------------------------------------- hand-over link -----------
function handoverDialog() {
  const input = el('input', { type: 'text', id: 'handover-token', placeholder: t('signin.token'), autocomplete: 'off' });
  const out = el('div', { class: 'handover-out' });
  const close = () => overlay.remove();
  const make = () => {
    const tk = input.value.trim();
    if (!tk) return;
    const link = `${location.origin}/field?token=${encodeURIComponent(tk)}`;
    const canvas = el('canvas', { id: 'handover-qr', width: '240', height: '240', 'aria-label': link });
    import('/static/vendor/qrcode-generator/qrcode.mjs').then(({ default: qrcode }) => {
      const qr = qrcode(0, 'M');
      qr.addData(link);
      qr.make();
      const n = qr.getModuleCount();
      const cell = Math.floor(240 / (n + 8));
      const off = Math.floor((240 - cell * n) / 2);
      const g = canvas.getContext('2d');
      g.fillStyle = '#fff';
      g.fillRect(0, 0, 240, 240);
      g.fillStyle = '#000';
      for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) if (qr.isDark(r, c)) g.fillRect(off + c * cell, off + r * cell, cell, cell);
    }).catch(() => canvas.remove());
    replace(out, canvas,
      el('a', { href: link, target: '_blank', rel: 'noopener', id: 'handover-link' }, link),
      el('button', {
        type: 'button', class: 'btn small',
        onclick: () => navigator.clipboard && navigator.clipboard.writeText(link).then(() => toast(t('copy'), 'ok')).catch(() => {}),
      }, t('copy')));
  };
  const overlay = el('div', { class: 'modal-overlay', onclick: (ev) => { if (ev.target === overlay) close(); } },
    el('div', { class: 'modal', role: 'dialog', 'aria-modal': 'true' },
      el('header', {}, el('h2', {}, t('ops.handover')), el('button', { type: 'button', class: 'btn small', onclick: close }, t('close'))),
      el('p', { class: 'muted' }, t('ops.handover.prompt')),
      el('div', { class: 'action-row' }, input, el('button', { type: 'button', class: 'btn primary', onclick: make }, t('ops.handover.make'))),
      out));
  document.body.appendChild(overlay);
  input.focus();
}

// A read-only view for the browser tests and for debugging from the console.
window.__ops = {
  state: S,
  live: () => live,
  eventIds: () => [...eventMarkers.keys()],
  unitIds: () => [...unitMarkers.keys()],
  regionIds: () => drawnRegions.slice(),
  center: () => (map ? map.getCenter() : null),
  map: () => map,
  beeps: 0,
};

applyStatic();
main().catch((e) => toast(String(e && e.message ? e.message : e), 'error', 10000));
