// Shared by the three pages: DOM building without HTML strings, the token, HTTP calls,
// the WebSocket with resume, the server clock offset and formatting.
import { t, getLang, setLang, applyStatic } from '../i18n.js';

// ---------------------------------------------------------------- DOM ----------------------
/**
 * el('div', {class: 'x', onclick: fn, dataset: {id: 1}}, 'text', child, [more])
 * Strings become text nodes: nothing here ever parses HTML.
 */
export function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') n.className = v;
      else if (k === 'text') n.textContent = v;
      else if (k === 'dataset') Object.assign(n.dataset, v);
      else if (k === 'style' && typeof v === 'object') Object.assign(n.style, v);
      else if (k.startsWith('on') && typeof v === 'function') n.addEventListener(k.slice(2), v);
      else if (k === 'value') n.value = v;
      else if (k === 'checked' || k === 'disabled' || k === 'selected') n[k] = !!v;
      else n.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(n, children);
  return n;
}

function append(n, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(n, c);
    else if (c instanceof Node) n.appendChild(c);
    else n.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(n) { while (n.firstChild) n.removeChild(n.firstChild); return n; }

export function replace(n, ...children) { clear(n); append(n, children); return n; }

// ---------------------------------------------------------------- token --------------------
const tokenKey = (page) => `tzd.token.${page}`;

/** The token from ?token= (then remembered and removed from the address bar) or storage. */
export function takeToken(page) {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl) {
    try { localStorage.setItem(tokenKey(page), fromUrl); } catch (_) { /* ignore */ }
    url.searchParams.delete('token');
    history.replaceState(null, '', url.pathname + (url.search || '') + url.hash);
    return fromUrl;
  }
  try { return localStorage.getItem(tokenKey(page)); } catch (_) { return null; }
}

export function forgetToken(page) {
  try { localStorage.removeItem(tokenKey(page)); } catch (_) { /* ignore */ }
}

/** A pasted link like https://host/field?token=abc → abc; anything else is the token. */
export function tokenFromInput(text) {
  const s = (text || '').trim();
  try {
    const u = new URL(s);
    const tk = u.searchParams.get('token');
    if (tk) return tk;
  } catch (_) { /* not a URL */ }
  return s;
}

/** Show the sign-in form and resolve with the entered token (stored for the page). */
export function signIn(page, message) {
  return new Promise((resolve) => {
    const input = el('input', {
      type: 'password', id: 'signin-token', autocomplete: 'current-password',
      required: true, 'aria-label': t('signin.token'), placeholder: t('signin.token'),
    });
    const form = el('form', { class: 'signin-card' },
      el('h1', {}, t('app.name')),
      el('h2', {}, t('signin.title')),
      el('p', {}, t('signin.prompt')),
      message ? el('p', { class: 'signin-error', role: 'alert' }, message) : null,
      input,
      el('button', { type: 'submit', class: 'btn primary', id: 'signin-submit' }, t('signin.submit')),
    );
    const overlay = el('div', { class: 'signin-overlay', id: 'signin' }, form);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const tk = tokenFromInput(input.value);
      if (!tk) return;
      try { localStorage.setItem(tokenKey(page), tk); } catch (_) { /* ignore */ }
      overlay.remove();
      resolve(tk);
    });
    document.body.appendChild(overlay);
    input.focus();
  });
}

// ---------------------------------------------------------------- HTTP ---------------------
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

let authToken = null;
let onUnauthorized = null;

export function setAuth(token, unauthorizedHandler) {
  authToken = token;
  onUnauthorized = unauthorizedHandler || null;
}

/** JSON call with the bearer token. Network failures throw ApiError with status 0. */
export async function api(path, { method = 'GET', body, query, raw = false, signal, file } = {}) {
  let url = path.startsWith('/') ? path : `/api/v1/${path}`;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const s = q.toString();
    if (s) url += (url.includes('?') ? '&' : '?') + s;
  }
  const headers = { Accept: 'application/json' };
  if (authToken) headers.Authorization = `Bearer ${authToken}`;
  const init = { method, headers, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  } else if (file !== undefined) { // raw bytes (evidence): the Blob's own type
    headers['Content-Type'] = file.type;
    init.body = file;
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, 'network', t('error.network'));
  }
  if (res.status === 401 && onUnauthorized) onUnauthorized();
  if (raw && res.ok) return res;
  let data = null;
  const type = res.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try { data = await res.json(); } catch (_) { data = null; }
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(res.status, err.code || `http_${res.status}`, err.message || res.statusText, data);
  }
  return data;
}

/** Fetch a file with the bearer header and save it under `filename`. */
export async function download(path, query, filename) {
  const res = await api(path, { query, raw: true });
  const blob = await res.blob();
  const cd = res.headers.get('Content-Disposition') || '';
  const m = cd.match(/filename="?([^";]+)"?/);
  const a = el('a', { href: URL.createObjectURL(blob), download: filename || (m ? m[1] : 'export') });
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

// ---------------------------------------------------------------- clock --------------------
/** Server time = Date.now() + offset; the offset comes from server_time in WS messages. */
export const clock = {
  offset: 0,
  samples: [],
  now() { return Date.now() + this.offset; },
  observe(serverIso) {
    const s = Date.parse(serverIso);
    if (!Number.isFinite(s)) return;
    // A message is never older than when it was sent, so the largest recent sample is the
    // best estimate (the others carry queueing and network delay).
    this.samples.push(s - Date.now());
    if (this.samples.length > 20) this.samples.shift();
    this.offset = Math.max(...this.samples);
  },
};

// ---------------------------------------------------------------- WebSocket ----------------
/**
 * A WebSocket that reconnects with backoff and resumes with ?since=<last seq>.
 * onMessage(msg) gets every message (snapshots included); onStatus(state, info) gets
 * 'connecting' | 'online' | 'offline'.
 */
export class Live {
  constructor({ token, onMessage, onStatus, onAuthFailure, query }) {
    this.token = token;
    this.query = query || {};
    this.onMessage = onMessage;
    this.onStatus = onStatus || (() => {});
    this.onAuthFailure = onAuthFailure || (() => {});
    this.lastSeq = null;
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.stopped = false;
    this.pending = new Map();
    this.nextId = 1;
    window.addEventListener('online', () => this.kick());
    window.addEventListener('offline', () => {
      // No network interface: the socket is dead even if it has not noticed yet.
      if (this.ws) this.ws.close();
      this.onStatus('offline');
    });
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams({ token: this.token, ...this.query });
    if (this.lastSeq !== null) q.set('since', String(this.lastSeq));
    return `${proto}//${location.host}/ws?${q}`;
  }

  start() { this.stopped = false; this.connect(); }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }

  /** Reconnect now (e.g. the browser says it is back online). */
  kick() {
    if (this.stopped) return;
    if (this.ws && (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING)) return;
    clearTimeout(this.timer);
    this.attempt = 0;
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    if (navigator.onLine === false) {
      // The browser knows it is offline: wait for its 'online' event (kick) instead of
      // failing connection attempts.
      this.onStatus('offline');
      return;
    }
    this.onStatus('connecting');
    let opened = false;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => { opened = true; this.attempt = 0; this.onStatus('online'); };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      if (msg.server_time) clock.observe(msg.server_time);
      if (typeof msg.seq === 'number' && (msg.type === 'snapshot' || this.lastSeq === null || msg.seq > this.lastSeq)) {
        this.lastSeq = msg.seq;
      }
      if ((msg.type === 'ack' || msg.type === 'error') && msg.id != null && this.pending.has(msg.id)) {
        const p = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        if (msg.type === 'ack') p.resolve(msg); else p.reject(msg.error);
      }
      this.onMessage(msg);
    };
    ws.onerror = () => { /* followed by close */ };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const p of this.pending.values()) p.reject({ code: 'disconnected' });
      this.pending.clear();
      if (this.stopped) return;
      if (!opened) this.checkAuth();
      const delay = Math.min(30000, 1000 * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
      this.attempt = Math.min(this.attempt + 1, 6);
      this.onStatus('offline', { retryInMs: delay });
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  async checkAuth() {
    try { await api('me'); } catch (e) { if (e.status === 401) { this.stop(); this.onAuthFailure(); } }
  }

  /** Send a message; returns a promise of its ack when it carries an id. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return Promise.reject({ code: 'disconnected' });
    const id = `c${this.nextId++}`;
    const p = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.ws.send(JSON.stringify({ ...msg, id }));
    return p;
  }
}

// ---------------------------------------------------------------- formatting ---------------
let timeZone = 'Asia/Shanghai';
export function setTimeZone(tz) { if (tz) timeZone = tz; }

export function fmtClock(iso, withDate = false) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const opts = { timeZone, hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false };
  if (withDate) Object.assign(opts, { year: 'numeric', month: '2-digit', day: '2-digit' });
  return d.toLocaleString(getLang() === 'zh' ? 'zh-CN' : 'en-GB', opts);
}

/** ms → "m:ss" (or "h:mm:ss"); negative values give "-m:ss". */
export function fmtCountdown(ms) {
  const neg = ms < 0;
  let s = Math.floor(Math.abs(ms) / 1000);
  if (!neg && ms > 0 && ms % 1000) s = Math.ceil(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const body = h ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`
    : `${m}:${String(sec).padStart(2, '0')}`;
  return (neg ? '-' : '') + body;
}

/** seconds → "12 秒" / "3 分" / "2 h" style short duration. */
export function fmtDuration(s) {
  if (s === null || s === undefined || !Number.isFinite(Number(s))) return '–';
  s = Number(s);
  if (s < 90) return t('seconds', { n: Math.round(s) });
  if (s < 5400) return t('minutes', { n: Math.round(s / 60) });
  return `${(s / 3600).toFixed(1)} h`;
}

export function fmtAge(s) {
  if (s === null || s === undefined) return '';
  if (s < 5) return t('just_now');
  return t('ago', { t: fmtDuration(s) });
}

// ---------------------------------------------------------------- page chrome --------------
export function langButton() {
  const b = el('button', {
    type: 'button', class: 'btn lang', id: 'lang-toggle', 'data-i18n': 'lang.switch',
    'data-i18n-title': 'lang.switch.title',
  }, t('lang.switch'));
  b.addEventListener('click', () => setLang(getLang() === 'zh' ? 'en' : 'zh'));
  return b;
}

/** A small status pill for the connection. */
export function connectionPill() {
  const pill = el('span', { class: 'conn conn-connecting', id: 'conn', role: 'status' }, t('conn.connecting'));
  let last = ['connecting'];
  const render = () => {
    const [state, info] = last;
    pill.className = `conn conn-${state}`;
    let text = t(`conn.${state}`);
    if (state === 'offline' && info && info.retryInMs) text += ` · ${t('conn.retry', { s: Math.round(info.retryInMs / 1000) })}`;
    pill.textContent = text;
  };
  return {
    node: pill,
    set(state, info) { last = [state, info]; render(); },
    render,
  };
}

export function toast(message, kind = 'info', ms = 4000) {
  let box = document.getElementById('toasts');
  if (!box) { box = el('div', { id: 'toasts', 'aria-live': 'polite' }); document.body.appendChild(box); }
  const n = el('div', { class: `toast toast-${kind}` }, message);
  box.appendChild(n);
  // A storm of breaches must not cover the screen: keep the newest few.
  while (box.children.length > 4) box.removeChild(box.firstChild);
  setTimeout(() => n.remove(), ms);
}

/** Start a page: language, token (URL, storage or form), /me. Returns {token, me}. */
export async function boot(page) {
  applyStatic();
  let token = takeToken(page);
  let message = null;
  for (;;) {
    if (!token) token = await signIn(page, message);
    setAuth(token, null);
    try {
      const me = await api('me');
      setAuth(token, () => { forgetToken(page); location.reload(); });
      return { token, me };
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        forgetToken(page);
        token = null;
        message = t('signin.bad');
      } else {
        // Server unreachable: keep the token and try again shortly.
        message = null;
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }
}

export function signOutButton(page) {
  return el('button', {
    type: 'button', class: 'btn ghost', id: 'signout', 'data-i18n': 'signout',
    onclick: () => { forgetToken(page); location.reload(); },
  }, t('signout'));
}

/** Region features → {id: {name, level, parent}} and the set of ids inside `scope`. */
export function regionIndex(features) {
  const byId = new Map();
  for (const f of features) {
    const p = f.properties || {};
    byId.set(String(p.id), { id: String(p.id), name: p.name, level: p.level, parent: p.parent == null ? null : String(p.parent), feature: f });
  }
  return byId;
}

/** True when region `id` is `scope` or lies below it (walks parents in `byId`). */
export function inScope(byId, id, scope) {
  if (!scope) return true;
  let cur = id == null ? null : String(id);
  let guard = 0;
  while (cur && guard++ < 10) {
    if (cur === scope) return true;
    const r = byId.get(cur);
    cur = r ? r.parent : null;
  }
  return false;
}
