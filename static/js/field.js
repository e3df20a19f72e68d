// /field — the phone of a unit on a weak network: the current assignment with a big
// countdown, one big button for the next step, navigation, a small map, position sharing,
// and an offline queue of taps that is replayed in order with their real times.
import {
  el, replace, api, boot, Live, clock, fmtClock, fmtCountdown, fmtAge, langButton,
  connectionPill, signOutButton, toast, setTimeZone,
} from './common.js';
import { t, onLangChange, pickName, pickText, applyStatic } from '../i18n.js';
import { projector, tileLayer, haversine } from './geo.js';
import {
  isOlder, makeCategoryNamer, stateBadge, statusLabel, stageLabel, sourceLabel, actionLabel,
} from './eventview.js';
import { ACCEPT, evidenceStrip, refusal, uploadEvidence, blobBox } from './evidence.js';

const PAGE = 'field';
const POSITION_EVERY_MS = 10000;
const NEXT = { new: 'respond', dispatched: 'respond', responded: 'depart', departed: 'arrive', arrived: 'resolve' };
const AFTER = { respond: 'responded', depart: 'departed', arrive: 'arrived', resolve: 'resolved' };
const STAGE_OF = { respond: 'respond', depart: 'depart', arrive: 'arrive' };
const OPEN = new Set(['new', 'dispatched', 'responded', 'departed', 'arrived']);

const S = {
  me: null,
  ui: null,
  events: new Map(),
  current: null,
  catName: (id) => id,
  team: null,
  online: false,
  position: null, // last fix {lon, lat, accuracy_m, at}
  positionSentAt: 0,
  positionState: 'off',
  positionSentIso: null,
  pendingFolded: false,
};

let live;
let conn;

// ---------------------------------------------------------------- offline queue -----------
/**
 * Taps are stored before anything is sent: {id, event, action, at (device time of the tap,
 * ISO), tries}. They are replayed strictly in order; a network failure keeps them and
 * retries with backoff; an answer from the server (200/201, or a 4xx that will never change)
 * removes them.
 */
const queue = {
  key: null,
  items: [],
  flushing: false,
  timer: null,
  attempt: 0,
  load(unit) {
    this.key = `tzd.field.queue.${unit}`;
    try { this.items = JSON.parse(localStorage.getItem(this.key) || '[]') || []; } catch (_) { this.items = []; }
    if (!Array.isArray(this.items)) this.items = [];
  },
  save() {
    try { localStorage.setItem(this.key, JSON.stringify(this.items)); } catch (_) { /* full */ }
    renderPending();
  },
  add(event, action) {
    // The time of the tap, on the server's clock when the page has seen it (a phone whose
    // clock is off would otherwise record a wrong time, or one the server refuses as being
    // in the future); the device's own reading is kept alongside.
    const device = Date.now();
    const at = new Date(device + (clock.samples.length ? clock.offset : 0)).toISOString();
    const item = {
      id: `${device.toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
      event, action, at, device_at: new Date(device).toISOString(), tries: 0,
    };
    this.items.push(item);
    this.save();
    return item;
  },
  /**
   * A photo or file for an event: the bytes go to IndexedDB before the item is queued, so
   * a reload or a dead battery keeps both. ``at`` is when it was taken: the file's own time
   * when that is plausible (a camera capture, a recent file), else now; on the server's
   * clock like the taps.
   */
  async addEvidence(event, file) {
    const device = Date.now();
    const own = Number(file.lastModified);
    const taken = own > 0 && own <= device && device - own < 7 * 86400000 ? own : device;
    const item = {
      id: `${device.toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
      event, action: 'evidence', name: file.name || `photo-${device}.jpg`, type: file.type,
      size: file.size, at: new Date(taken + (clock.samples.length ? clock.offset : 0)).toISOString(),
      device_at: new Date(taken).toISOString(), tries: 0,
    };
    await blobBox.put(item.id, file);
    this.items.push(item);
    this.save();
    return item;
  },
  async send(item) {
    if (item.action !== 'evidence') {
      return api(`events/${encodeURIComponent(item.event)}/${item.action}`, {
        method: 'POST', body: { at: item.at },
      });
    }
    let blob;
    try {
      blob = await blobBox.get(item.id);
    } catch (err) { // storage busy: try again later, like a network failure
      throw Object.assign(new Error(String(err && err.message)), { status: 0 });
    }
    if (!blob) return { lost: true };
    await uploadEvidence(item.event, blob, { name: item.name, takenAt: item.at });
    blobBox.delete(item.id).catch(() => {});
    toast(t('evidence.sent', { name: item.name }), 'info');
    refreshEvent(item.event);
    return null;
  },
  forEvent(id) { return this.items.filter((x) => x.event === id); },
  async flush() {
    if (this.flushing || !this.items.length) return;
    if (navigator.onLine === false) return; // the 'online' event flushes
    this.flushing = true;
    clearTimeout(this.timer);
    try {
      while (this.items.length) {
        const item = this.items[0];
        try {
          const ev = await this.send(item);
          if (ev && ev.lost) toast(t('evidence.lost', { name: item.name }), 'warn', 8000);
          this.items.shift();
          this.attempt = 0;
          this.save();
          if (ev && ev.id) upsert(ev);
        } catch (e) {
          if (e.status === 0 || e.status === 429 || e.status >= 500 || e.status === 401) {
            item.tries += 1;
            item.error = e.message;
            this.save();
            this.retry();
            break;
          }
          // 409 illegal transition, 403 no longer ours, 404, 413/415/422: it can never succeed.
          this.items.shift();
          this.save();
          if (item.action === 'evidence') blobBox.delete(item.id).catch(() => {});
          toast(t('field.rejected', { a: actionLabel(item.action), msg: e.message }), 'warn', 8000);
          if (e.body && e.body.error && e.body.error.status) refreshEvent(item.event);
        }
      }
    } finally {
      this.flushing = false;
      render();
    }
  },
  retry() {
    clearTimeout(this.timer);
    const delay = Math.min(60000, 2000 * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
    this.attempt = Math.min(this.attempt + 1, 5);
    this.timer = setTimeout(() => this.flush(), delay);
  },
};

// ---------------------------------------------------------------- start --------------------
async function main() {
  const { token, me } = await boot(PAGE);
  S.me = me;
  queue.load(me.unit || me.role);
  conn = connectionPill();
  document.getElementById('conn-slot').appendChild(conn.node);
  document.getElementById('lang-slot').appendChild(langButton());
  document.getElementById('signout-slot').appendChild(signOutButton(PAGE));
  document.getElementById('pending-toggle').addEventListener('click', () => {
    S.pendingFolded = !S.pendingFolded;
    renderPending();
  });
  buildMain();
  const [ui, cats, teams] = await Promise.all([
    api('ui').catch(() => ({ tiles: null })),
    api('categories').catch(() => ({ categories: [] })),
    api('teams').catch(() => ({ teams: [] })),
  ]);
  S.ui = ui;
  setTimeZone(ui.timezone);
  S.catName = makeCategoryNamer(cats.categories);
  S.team = (teams.teams || []).find((x) => x.id === me.team) || null;
  live = new Live({
    token,
    onMessage,
    onStatus: (st, info) => {
      conn.set(st, info);
      S.online = st === 'online';
      if (S.online) { queue.attempt = 0; queue.flush(); flushPosition(); }
    },
    onAuthFailure: () => location.reload(),
  });
  live.start();
  window.addEventListener('online', () => { queue.attempt = 0; queue.flush(); flushPosition(); });
  startPosition();
  setInterval(tick, 250);
  onLangChange(() => { conn.render(); render(); renderPending(); renderPosition(); });
  render();
  renderPending();
  if (queue.items.length) queue.flush();
}

function onMessage(msg) {
  if (msg.type === 'snapshot') {
    S.events.clear();
    for (const e of msg.events || []) if (mine(e)) S.events.set(e.id, e);
    // Events that still have queued taps stay visible even if the snapshot dropped them.
    render();
    return;
  }
  if (msg.event) upsert(msg.event, msg);
}

function mine(e) { return e && e.unit === S.me.unit && OPEN.has(e.status); }

function upsert(e, msg) {
  const prev = S.events.get(e.id);
  if (isOlder(prev, e)) return;
  const isNew = !prev && mine(e);
  if (mine(e)) S.events.set(e.id, e); else S.events.delete(e.id);
  if (isNew && msg && msg.type !== 'snapshot') {
    toast(`${S.catName(e.category)} · ${t('status.dispatched')}`, 'warn', 6000);
    // Vibration needs a prior tap on the page (Chrome logs an intervention otherwise).
    const active = navigator.userActivation ? navigator.userActivation.hasBeenActive : false;
    if (navigator.vibrate && active) { try { navigator.vibrate([200, 100, 200]); } catch (_) { /* ignore */ } }
  }
  render();
}

async function refreshEvent(id) {
  try { upsert(await api(`events/${encodeURIComponent(id)}`)); } catch (_) { /* ignore */ }
}

// ---------------------------------------------------------------- derived state -----------
/** The status the device believes, after the taps still waiting in the queue. */
function effectiveStatus(e) {
  let st = e.status;
  for (const q of queue.forEvent(e.id)) if (NEXT[st] === q.action) st = AFTER[q.action];
  return st;
}

function currentEvent() {
  const list = [...S.events.values()];
  if (!list.length) return null;
  if (S.current && S.events.has(S.current)) return S.events.get(S.current);
  list.sort((a, b) => deadlineOf(a) - deadlineOf(b));
  return list[0];
}

function nextStage(e) {
  const st = effectiveStatus(e);
  const action = NEXT[st];
  return action && STAGE_OF[action] ? action : null;
}

function deadlineOf(e) {
  const stage = nextStage(e);
  const iso = stage && e.deadlines ? e.deadlines[stage] : null;
  const at = iso ? Date.parse(iso) : NaN;
  return Number.isFinite(at) ? at : Infinity;
}

// ---------------------------------------------------------------- rendering ---------------
let mapState = null;

function buildMain() {
  replace(document.getElementById('main'),
    el('section', { id: 'card', class: 'card' }),
    el('div', { id: 'action-bar', class: 'action-bar' }),
    el('section', { id: 'nav', class: 'nav-links' }),
    el('section', { id: 'evidence', class: 'evidence-box' }),
    el('section', { id: 'map-box', class: 'map-box hidden' }, el('div', { id: 'field-map' })),
    el('section', { id: 'details', class: 'details' }),
    el('section', { id: 'others', class: 'others' }));
}

function render() {
  if (!S.me) return;
  const unitLabel = S.me.unit ? `${t('field.unit')} ${S.me.unit}` : t('field.title');
  document.getElementById('unit-name').textContent = S.team ? `${pickName(S.team.name)} · ${S.me.unit}` : unitLabel;
  const e = currentEvent();
  const card = document.getElementById('card');
  const bar = document.getElementById('action-bar');
  if (!e) {
    replace(card, el('div', { class: 'none' },
      el('div', { class: 'none-title', id: 'no-assignment' }, t('field.none')),
      el('div', { class: 'muted' }, t('field.none.hint'))));
    replace(bar);
    replace(document.getElementById('nav'));
    replace(document.getElementById('evidence'));
    replace(document.getElementById('details'));
    replace(document.getElementById('others'));
    document.getElementById('map-box').classList.add('hidden');
    return;
  }
  S.current = e.id;
  const st = effectiveStatus(e);
  const stage = nextStage(e);
  const action = NEXT[st];
  const queued = queue.forEvent(e.id).length;
  replace(card,
    el('div', { class: 'card-head' },
      el('span', { class: 'cat', id: 'event-category' }, S.catName(e.category)),
      stateBadge(e.timer_state)),
    el('div', { class: 'status-line' },
      el('span', { id: 'event-status', 'data-status': st }, statusLabel(st)),
      queued ? el('span', { class: 'badge warning' }, t('field.pending.queued')) : null),
    stage ? el('div', { class: 'count-label' }, t('field.deadline', { stage: stageLabel(stage) })) : null,
    stage ? el('div', { class: `countdown mono ${e.timer_state}`, id: 'countdown', 'data-deadline': e.deadlines[stage] || '' }, '')
      : el('div', { class: 'countdown done', id: 'countdown' }, st === 'resolved' ? t('field.resolved') : t('field.all_done')));
  replace(bar, action ? el('button', {
    type: 'button', class: `big-btn act-${action}`, id: 'next-step', 'data-action': action,
    onclick: () => tap(e.id, action),
  }, t(`action.${action}`)) : null);
  renderNav(e);
  renderEvidence(e);
  renderDetails(e);
  renderOthers(e);
  renderMap(e);
  tick();
}

function tap(eventId, action) {
  queue.add(eventId, action);
  render();
  // The next step's button appears under the thumb: ignore it for a moment so that a
  // double tap does not also send the following step.
  const btn = document.getElementById('next-step');
  if (btn) {
    btn.disabled = true;
    setTimeout(() => { btn.disabled = false; }, 700);
  }
  queue.flush();
}

function renderNav(e) {
  const { lon, lat } = e.location;
  const name = S.catName(e.category);
  const amap = `https://uri.amap.com/navigation?to=${lon},${lat},${encodeURIComponent(name)}&mode=car&coordinate=wgs84&callnative=1&src=taizhou-dispatch`;
  const geo = `geo:${lat},${lon}?q=${lat},${lon}(${encodeURIComponent(name)})`;
  replace(document.getElementById('nav'),
    el('a', { class: 'btn nav', id: 'nav-amap', href: amap, target: '_blank', rel: 'noopener' }, t('field.navigate')),
    el('a', { class: 'btn nav', id: 'nav-geo', href: geo }, t('field.geo')));
}

/** Take a photo or pick a file for the current event; what it already has, as thumbnails. */
function renderEvidence(e) {
  const input = (id, attrs) => el('input', {
    type: 'file', id, class: 'hidden-input', ...attrs, onchange: (ev) => pickFiles(e.id, ev.target),
  });
  const waiting = queue.forEvent(e.id).filter((q) => q.action === 'evidence').length;
  replace(document.getElementById('evidence'),
    el('h3', {}, t('evidence.title')),
    el('div', { class: 'ev-buttons' },
      el('label', { class: 'btn', id: 'evidence-photo-btn', for: 'evidence-photo' }, t('evidence.photo'),
        input('evidence-photo', { accept: 'image/*', capture: 'environment' })),
      el('label', { class: 'btn', id: 'evidence-file-btn', for: 'evidence-file' }, t('evidence.pick'),
        input('evidence-file', { accept: ACCEPT }))),
    waiting ? el('div', { class: 'muted small', id: 'evidence-waiting' }, t('field.pending', { n: waiting })) : null,
    evidenceStrip(e));
}

async function pickFiles(eventId, inputNode) {
  const files = [...(inputNode.files || [])];
  inputNode.value = '';
  for (const file of files) {
    const why = refusal(file);
    if (why) { toast(why, 'warn', 6000); continue; }
    try {
      const item = await queue.addEvidence(eventId, file);
      if (navigator.onLine === false) toast(t('evidence.queued', { name: item.name }), 'info', 6000);
    } catch (err) {
      toast(t('error.generic', { msg: err.message }), 'error', 8000);
    }
  }
  render();
  queue.flush();
}

function renderDetails(e) {
  let dist = null;
  if (S.position) dist = haversine(S.position.lon, S.position.lat, e.location.lon, e.location.lat);
  const steps = e.routing && Array.isArray(e.routing.steps) ? e.routing.steps : [];
  replace(document.getElementById('details'),
    el('h3', {}, t('field.details')),
    el('p', { class: 'desc', id: 'event-description' }, e.description ? String(e.description) : ''),
    el('dl', { class: 'kv' },
      el('dt', {}, t('ops.detail.location')),
      el('dd', { class: 'mono' }, `${Number(e.location.lon).toFixed(5)}, ${Number(e.location.lat).toFixed(5)}`,
        dist !== null ? ` · ${dist < 1000 ? `${Math.round(dist)} m` : `${(dist / 1000).toFixed(1)} km`}` : ''),
      el('dt', {}, t('ops.detail.township')), el('dd', { id: 'event-township' }, townshipName(e)),
      el('dt', {}, t('ops.detail.priority')), el('dd', {}, `P${e.priority}`),
      el('dt', {}, t('ops.detail.source')), el('dd', {}, sourceLabel(e.source)),
      el('dt', {}, t('ops.detail.created')), el('dd', {}, fmtClock(e.created_at, true)),
      e.reporter && typeof e.reporter === 'object' && e.reporter.phone
        ? [el('dt', {}, '☎'), el('dd', {}, el('a', { href: `tel:${String(e.reporter.phone).replace(/[^0-9+]/g, '')}` }, String(e.reporter.phone)))] : null),
    steps.length ? el('ol', { class: 'steps muted small' }, steps.map((s) => el('li', {}, pickText(s)))) : null);
}

function renderOthers(cur) {
  const others = [...S.events.values()].filter((e) => e.id !== cur.id).sort((a, b) => deadlineOf(a) - deadlineOf(b));
  replace(document.getElementById('others'), others.length ? [
    el('h3', {}, t('field.other')),
    el('ul', { class: 'other-list' }, others.map((e) => el('li', {},
      el('button', { type: 'button', class: 'btn other', onclick: () => { S.current = e.id; render(); window.scrollTo(0, 0); } },
        stateBadge(e.timer_state), ' ', S.catName(e.category), ' · ', statusLabel(effectiveStatus(e)))))),
  ] : []);
}

function renderMap(e) {
  const box = document.getElementById('map-box');
  box.classList.remove('hidden');
  if (typeof L === 'undefined') return;
  if (!mapState) {
    const P = projector(S.ui && S.ui.tiles);
    const m = L.map('field-map', { zoomControl: true, attributionControl: true, maxZoom: 18 });
    m.attributionControl.setPrefix(false);
    const tiles = tileLayer(S.ui && S.ui.tiles);
    if (tiles) tiles.addTo(m);
    mapState = { map: m, P, event: null, me: null, line: null, eventId: null };
  }
  const { map, P } = mapState;
  const ll = P(e.location.lon, e.location.lat);
  if (!mapState.event) {
    mapState.event = L.marker(ll, {
      icon: L.divIcon({ className: 'field-ev', iconSize: [22, 22], iconAnchor: [11, 11], html: el('span') }),
    }).addTo(map);
  } else {
    mapState.event.setLatLng(ll);
  }
  mapState.event.getElement() && mapState.event.getElement().setAttribute('data-state', e.timer_state);
  drawMe();
  if (mapState.eventId !== e.id) {
    mapState.eventId = e.id;
    fitMap();
    drawTownships(e);
  }
}

/**
 * Context for the small map: the townships of the event's county, the event's own township
 * outlined. Loaded once, after everything else (about 100 KB), and only when online.
 */
let townships = null;
function townshipName(e) {
  const f = townships && townships.find((x) => String(x.properties.id) === String(e.township));
  return f ? pickName(f.properties.name) : String(e.township || '');
}
let townshipsLoading = false;
let townshipLayer = null;
function drawTownships(e) {
  if (!mapState) return;
  if (!townships) {
    if (townshipsLoading || navigator.onLine === false) return;
    townshipsLoading = true;
    api('regions', { query: { level: 'township' } }).then((fc) => {
      townships = fc.features || [];
      const cur = currentEvent();
      if (cur) drawTownships(cur);
    }).catch(() => {}).finally(() => { townshipsLoading = false; });
    return;
  }
  const { map, P } = mapState;
  if (townshipLayer) map.removeLayer(townshipLayer);
  const feats = townships.filter((f) => String((f.properties || {}).parent) === String(e.county)
    || String((f.properties || {}).id) === String(e.township));
  townshipLayer = L.geoJSON({ type: 'FeatureCollection', features: feats }, {
    coordsToLatLng: (c) => P(c[0], c[1]),
    interactive: false,
    style: (f) => (String(f.properties.id) === String(e.township)
      ? { color: '#6fa8ff', weight: 2.5, fillColor: '#1b3a5c', fillOpacity: 0.35 }
      : { color: '#3d5f86', weight: 1, fill: false }),
  }).addTo(map);
  townshipLayer.bringToBack();
  const own = feats.find((f) => String(f.properties.id) === String(e.township));
  const slot = document.getElementById('event-township');
  if (slot && own) slot.textContent = pickName(own.properties.name);
}

function drawMe() {
  if (!mapState || !S.position) return;
  const { map, P } = mapState;
  const me = P(S.position.lon, S.position.lat);
  if (!mapState.me) {
    mapState.me = L.circleMarker(me, { radius: 7, color: '#fff', weight: 2, fillColor: '#2f80ed', fillOpacity: 1 }).addTo(map);
    mapState.me.bindTooltip(() => el('span', {}, t('field.mine')));
  } else {
    mapState.me.setLatLng(me);
  }
  const ev = mapState.event && mapState.event.getLatLng();
  if (ev) {
    if (!mapState.line) mapState.line = L.polyline([me, ev], { color: '#2f80ed', dashArray: '4 6', weight: 2 }).addTo(map);
    else mapState.line.setLatLngs([me, ev]);
  }
}

function fitMap() {
  const { map } = mapState;
  const pts = [mapState.event.getLatLng()];
  if (mapState.me) pts.push(mapState.me.getLatLng());
  if (pts.length > 1) map.fitBounds(L.latLngBounds(pts), { padding: [36, 36], maxZoom: 14 });
  else map.setView(pts[0], 14);
  setTimeout(() => map.invalidateSize(), 50);
}

function renderPending() {
  const n = queue.items.length;
  const bar = document.getElementById('pending-bar');
  bar.classList.toggle('hidden', n === 0);
  bar.dataset.count = String(n);
  document.getElementById('pending-count').textContent = n ? t('field.pending', { n }) : t('field.pending.none');
  replace(document.getElementById('pending-items'), queue.items.map((q) => {
    const e = S.events.get(q.event);
    return el('li', { 'data-action': q.action, 'data-at': q.at },
      el('strong', {}, actionLabel(q.action)), ' · ',
      q.action === 'evidence' ? [String(q.name || ''), ' · '] : null,
      e ? S.catName(e.category) : String(q.event), ' · ',
      el('span', { class: 'mono' }, fmtClock(q.at)),
      q.tries ? el('span', { class: 'muted small' }, ` ×${q.tries}`) : null);
  }));
  // What is waiting is shown unless the user folded it away.
  document.getElementById('pending-list').classList.toggle('hidden', !n || S.pendingFolded);
}

function tick() {
  const n = document.getElementById('countdown');
  if (n && n.dataset.deadline) {
    const ms = Date.parse(n.dataset.deadline) - clock.now();
    n.textContent = fmtCountdown(ms);
    n.classList.toggle('overdue', ms < 0);
  }
}

// ---------------------------------------------------------------- position ----------------
function startPosition() {
  if (!('geolocation' in navigator)) { S.positionState = 'unsupported'; renderPosition(); return; }
  if (!S.me.unit) return;
  S.positionState = 'waiting';
  navigator.geolocation.watchPosition((pos) => {
    S.position = {
      lon: pos.coords.longitude, lat: pos.coords.latitude,
      accuracy_m: pos.coords.accuracy, at: new Date(pos.timestamp || Date.now()).toISOString(),
    };
    S.positionState = 'on';
    drawMe();
    flushPosition();
    renderPosition();
  }, (err) => {
    S.positionState = err && err.code === 1 ? 'denied' : 'waiting';
    renderPosition();
  }, { enableHighAccuracy: true, maximumAge: 15000, timeout: 60000 });
  renderPosition();
}

let positionTimer = null;
/** At most one PUT per POSITION_EVERY_MS; the latest fix wins. */
async function flushPosition() {
  if (!S.position || !S.me.unit || navigator.onLine === false) return;
  const wait = S.positionSentAt + POSITION_EVERY_MS - Date.now();
  if (wait > 0) {
    clearTimeout(positionTimer);
    positionTimer = setTimeout(flushPosition, wait);
    return;
  }
  const fix = S.position;
  S.positionSentAt = Date.now();
  try {
    const body = { lon: fix.lon, lat: fix.lat, at: fix.at };
    if (Number.isFinite(fix.accuracy_m)) body.accuracy_m = Math.round(fix.accuracy_m * 10) / 10;
    await api(`units/${encodeURIComponent(S.me.unit)}/position`, { method: 'PUT', body });
    S.positionSentIso = new Date().toISOString();
    renderPosition();
  } catch (_) {
    // Offline: the next fix or reconnect sends the latest position; positions are not queued.
  }
}

function renderPosition() {
  const box = document.getElementById('position-status');
  let text;
  if (S.positionState === 'on') {
    text = t('field.position.on');
    if (S.positionSentIso) text += ` · ${t('field.position.sent', { t: fmtAge((Date.now() - Date.parse(S.positionSentIso)) / 1000) })}`;
  } else if (S.positionState === 'denied') text = t('field.position.denied');
  else if (S.positionState === 'unsupported') text = t('field.position.unsupported');
  else text = t('field.position.off');
  box.textContent = text;
}

applyStatic();
main().catch((e) => toast(String(e && e.message ? e.message : e), 'error', 10000));
