// /department — a department's transferred events (移送, contract §8): the ones to answer
// (accept, or return with a reason) and the ones it answered; live over the WebSocket,
// refreshed from the REST list on demand and after each answer.
import {
  el, replace, api, boot, Live, fmtClock, langButton, connectionPill, signOutButton, toast,
  setTimeZone,
} from './common.js';
import { t, tOr, onLangChange, pickName } from '../i18n.js';
import {
  allEvents, isOlder, makeCategoryNamer, statusLabel, transferAnswer,
} from './eventview.js';

const PAGE = 'department';
const S = { me: null, events: new Map(), catName: (id) => id, departments: new Map() };
let conn;

async function main() {
  const { token, me } = await boot(PAGE);
  S.me = me;
  conn = connectionPill();
  document.getElementById('conn-slot').appendChild(conn.node);
  document.getElementById('lang-slot').appendChild(langButton());
  document.getElementById('signout-slot').appendChild(signOutButton(PAGE));
  document.getElementById('refresh').addEventListener('click', () => load());
  const [ui, cats, deps] = await Promise.all([
    api('ui').catch(() => ({})),
    api('categories').catch(() => ({ categories: [] })),
    api('departments').catch(() => ({ departments: [] })),
  ]);
  if (ui.timezone) setTimeZone(ui.timezone);
  S.catName = makeCategoryNamer(cats.categories);
  for (const d of deps.departments || []) S.departments.set(d.id, d);
  renderWho();
  onLangChange(() => { conn.render(); renderWho(); render(); });
  await load();
  new Live({
    token,
    onMessage,
    onStatus: (st, info) => conn.set(st, info),
    onAuthFailure: () => location.reload(),
  }).start();
}

function renderWho() {
  const d = S.departments.get(S.me.department);
  document.getElementById('who').textContent =
    `${tOr(`role.${S.me.role}`, S.me.role)} · ${d ? pickName(d.name) : (S.me.department || '')}`;
}

async function load() {
  try {
    S.events = new Map((await allEvents()).map((e) => [e.id, e]));
    render();
  } catch (e) {
    toast(t('error.generic', { msg: e.message }), 'error');
  }
}

function onMessage(msg) {
  if (msg.type === 'snapshot') {
    for (const e of msg.events || []) upsert(e);
    render();
  } else if (msg.event && msg.event.id) {
    upsert(msg.event);
    render();
  }
}

function upsert(e) {
  const prev = S.events.get(e.id);
  if (isOlder(prev, e)) return;
  S.events.set(e.id, e);
}

// Transferred to this department now: its to answer.
function mine(e) {
  return e.status === 'transferred' && e.transfer && e.transfer.department === S.me.department;
}

function render() {
  const all = [...S.events.values()].sort((a, b) => String(b.id).localeCompare(String(a.id)));
  const pending = all.filter(mine);
  const answered = all.filter((e) => !mine(e));
  replace(document.getElementById('pending'), pending.map((e) => item(e, true)));
  replace(document.getElementById('answered'), answered.map((e) => item(e, false)));
  document.getElementById('pending-count').textContent = String(pending.length);
  document.getElementById('answered-count').textContent = String(answered.length);
  document.getElementById('pending-empty').classList.toggle('hidden', pending.length > 0);
}

function item(e, open) {
  const tr = e.transfer || {};
  const prev = document.querySelector(`textarea[data-event="${CSS.escape(e.id)}"]`);
  const note = el('textarea', {
    rows: '2', maxlength: '2000', placeholder: t('dept.note.ph'), 'aria-label': t('dept.note.ph'),
  });
  note.dataset.event = e.id;
  if (prev) note.value = prev.value;
  return el('li', { class: `dept-item${open ? '' : ' answered'}`, 'data-id': e.id, 'data-status': e.status },
    el('div', { class: 'head' },
      el('strong', {}, S.catName(e.category)),
      el('span', { class: 'muted mono' }, e.id),
      el('span', { class: `badge ${e.status === 'transferred' ? 'transferred' : 'closed'}` }, statusLabel(e.status))),
    e.description ? el('p', { class: 'desc' }, String(e.description)) : null,
    el('dl', { class: 'kv' },
      el('dt', {}, t('dept.col.at')), el('dd', {}, fmtClock(tr.at, true)),
      el('dt', {}, t('dept.col.from')), el('dd', {}, tr.actor ? String(tr.actor) : ''),
      el('dt', {}, t('dept.col.note')), el('dd', { class: 'transfer-note' }, tr.note ? String(tr.note) : ''),
      el('dt', {}, t('dept.col.place')), el('dd', { class: 'mono' },
        e.location ? `${Number(e.location.lon).toFixed(5)}, ${Number(e.location.lat).toFixed(5)}` : ''),
      open ? null : el('dt', {}, t('dept.col.answer')),
      open ? null : el('dd', { class: 'answer-text' }, transferAnswer(tr))),
    open ? el('div', { class: 'answer' },
      note,
      el('button', { type: 'button', class: 'btn primary do-accept', onclick: () => answerIt(e.id, 'accept', note) }, t('action.accept')),
      el('button', { type: 'button', class: 'btn danger do-return', onclick: () => answerIt(e.id, 'return', note) }, t('action.return')))
      : null);
}

async function answerIt(id, action, note) {
  const text = note.value.trim();
  if (action === 'return' && !text) { toast(t('dept.need_note'), 'error'); note.focus(); return; }
  try {
    const ev = await api(`events/${encodeURIComponent(id)}/${action}`, { method: 'POST', body: text ? { note: text } : {} });
    toast(t('ops.done', { a: t(`action.${action}`) }), 'ok');
    note.value = '';
    if (ev && ev.id) upsert(ev);
    render();
  } catch (e) {
    toast(t('error.generic', { msg: e.message }), 'error');
  }
}

main();
