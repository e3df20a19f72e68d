// Evidence (电子证据, contract §8) on the pages: thumbnails and file chips, uploads, and the
// IndexedDB box the field page keeps queued photos in while offline.
// Files are fetched with the bearer header and shown through blob: URLs (the pages' CSP
// allows img-src blob:); every value from the server goes through text nodes.
import { el, api, fmtClock, toast } from './common.js';
import { t } from '../i18n.js';

export const TYPES = ['image/jpeg', 'image/png', 'video/mp4', 'application/pdf'];
export const ACCEPT = TYPES.join(',');

const urls = new Map(); // sha256 → Promise<object URL>

function blobUrl(sha) {
  if (!urls.has(sha)) {
    const p = api(`evidence/${sha}`, { raw: true }).then((res) => res.blob()).then((b) => URL.createObjectURL(b));
    p.catch(() => urls.delete(sha));
    urls.set(sha, p);
  }
  return urls.get(sha);
}

function save(entry) {
  blobUrl(entry.sha256).then((href) => {
    const a = el('a', { href, download: entry.name || entry.sha256 });
    document.body.appendChild(a);
    a.click();
    a.remove();
  }).catch((e) => toast(e.message, 'warn'));
}

function kindIcon(type) {
  if (type === 'application/pdf') return 'PDF';
  if (type === 'video/mp4') return '▶ MP4';
  return '▣';
}

/** A thumbnail (images) or a chip (pdf, mp4) for one evidence entry; a click saves it. */
export function evidenceChip(entry) {
  const title = `${entry.name || ''} · ${fmtClock(entry.at, true)} · ${entry.actor || ''}`;
  const isImage = entry.type === 'image/jpeg' || entry.type === 'image/png';
  const node = el('button', {
    type: 'button', class: `ev-chip ${isImage ? 'image' : 'file'}`, title,
    'data-sha256': entry.sha256 || '', 'data-type': entry.type || '',
    onclick: () => save(entry),
  });
  if (isImage && entry.sha256) {
    const img = el('img', { class: 'ev-thumb', alt: entry.name || '' });
    node.appendChild(img);
    blobUrl(entry.sha256).then((href) => { img.src = href; }).catch(() => { img.alt = '⚠'; });
  } else {
    node.appendChild(el('span', { class: 'ev-kind' }, kindIcon(entry.type)));
  }
  node.appendChild(el('span', { class: 'ev-name' }, String(entry.name || '')));
  return node;
}

/** The chips of an event's evidence list (newest last), or null when it has none. */
export function evidenceStrip(ev) {
  const list = Array.isArray(ev.evidence) ? ev.evidence : [];
  if (!list.length) return null;
  return el('div', { class: 'ev-strip' }, list.map(evidenceChip));
}

/** The entry a timeline item names (``evidence`` holds its SHA-256), or null. */
export function entryOf(ev, item) {
  if (!item || !item.evidence || !Array.isArray(ev.evidence)) return null;
  return ev.evidence.find((x) => x.sha256 === item.evidence) || null;
}

/** A message for a file the server would refuse (type, size), or null. */
export function refusal(file, maxBytes = 20 * 1024 * 1024) {
  if (!TYPES.includes(file.type)) return t('evidence.bad_type', { type: file.type || '?' });
  if (file.size > maxBytes) return t('evidence.too_large');
  if (!file.size) return t('evidence.empty');
  return null;
}

/** POST the file to the event; the entry. ``takenAt``: ISO time it was taken. */
export function uploadEvidence(eventId, file, { name, takenAt } = {}) {
  return api(`events/${encodeURIComponent(eventId)}/evidence`, {
    method: 'POST', file, query: { name: name || file.name, taken_at: takenAt },
  });
}

// ---------------------------------------------------------------- offline blobs -------------
// The field page's queue keeps its items in localStorage; their files wait here, by item id.
const DB = 'tzd.evidence';
const BOX = 'blobs';

function db() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(BOX);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function tx(mode, fn) {
  return db().then((d) => new Promise((resolve, reject) => {
    const x = d.transaction(BOX, mode);
    const out = fn(x.objectStore(BOX));
    x.oncomplete = () => { d.close(); resolve(out && 'result' in out ? out.result : undefined); };
    x.onerror = () => { d.close(); reject(x.error); };
    x.onabort = () => { d.close(); reject(x.error); };
  }));
}

export const blobBox = {
  put: (id, blob) => tx('readwrite', (s) => s.put(blob, id)),
  get: (id) => tx('readonly', (s) => s.get(id)),
  delete: (id) => tx('readwrite', (s) => s.delete(id)),
};
