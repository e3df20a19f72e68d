// Pieces of an event shown by the pages: labels, deadlines, routing, timeline, and reading
// events (all of them, page by page; which copy is newer).
// Every value from the server goes through text nodes (el / textContent).
import { el, api, fmtClock } from './common.js';
import { t, tOr, pickName, pickText } from '../i18n.js';
import { evidenceChip, entryOf } from './evidence.js';

export const STAGES = ['respond', 'depart', 'arrive'];
const DONE = { respond: 'responded_at', depart: 'departed_at', arrive: 'arrived_at' };
export const STATE_ORDER = { escalated: 4, breached: 3, warning: 2, on_time: 1, closed: 0 };

// A copy of an event older than the one held (a push or an answer that arrived late).
export function isOlder(prev, e) {
  return !!prev && typeof prev.seq === 'number' && typeof e.seq === 'number' && e.seq < prev.seq;
}

// A transfer's answer (移送, contract §8): accepted, returned or pending; when; the note.
export function transferAnswer(tr) {
  return [
    tr.answer ? tOr(`transfer.answer.${tr.answer}`, tr.answer) : t('transfer.answer.pending'),
    tr.answered_at ? ` · ${fmtClock(tr.answered_at, true)}` : '',
    tr.answer_note ? ` · ${String(tr.answer_note)}` : '',
  ];
}

// Every event the caller reads that matches ``query`` (GET /events, page by page; at most
// 10,000, newest first).
export async function allEvents(query = {}) {
  const out = [];
  let cursor = null;
  for (let page = 0; page < 10; page++) {
    const res = await api('events', { query: { ...query, limit: 1000, cursor } });
    out.push(...(res.events || []));
    cursor = res.next;
    if (!cursor) break;
  }
  return out;
}

export function stateLabel(s) { return tOr(`state.${s}`, s || ''); }
export function statusLabel(s) { return tOr(`status.${s}`, s || ''); }
export function stageLabel(s) { return tOr(`stage.${s}`, s || ''); }
export function tierLabel(s) { return tOr(`tier.${s}`, s || ''); }
export function actionLabel(a) { return tOr(`action.${a}`, a || ''); }
export function sourceLabel(s) { return tOr(`source.${s}`, s || ''); }

/** Category id → display name (from GET /categories), in the current language. */
export function makeCategoryNamer(categories) {
  const byId = new Map((categories || []).map((c) => [c.id, c]));
  return (id) => {
    const c = byId.get(id);
    return c ? pickName(c.name) : String(id || '');
  };
}

export function stateBadge(state) {
  return el('span', { class: `badge ${state || 'closed'}`, 'data-state': state || '' }, stateLabel(state));
}

/** Deadline per stage with done time and late flag. */
export function deadlinesBlock(ev) {
  const rows = [];
  const breaches = new Set(ev.breaches || []);
  for (const s of STAGES) {
    const due = ev.deadlines && ev.deadlines[s];
    const done = ev[DONE[s]];
    rows.push(el('dt', {}, t(`stage.${s}.long`)));
    rows.push(el('dd', { class: breaches.has(s) ? 'late' : '' },
      due ? fmtClock(due) : '–',
      done ? ` · ${t('ops.detail.done', { t: fmtClock(done) })}` : '',
      breaches.has(s) ? t('ops.detail.late') : ''));
  }
  return el('dl', { class: 'kv deadlines' }, rows);
}

/** The routing explanation: rule plus steps ({zh, en} or plain strings). */
export function routingBlock(routing) {
  if (!routing) return el('p', { class: 'muted' }, t('none'));
  const steps = Array.isArray(routing.steps) ? routing.steps : [];
  return el('div', { class: 'routing' },
    routing.rule ? el('div', { class: 'muted' }, pickText(routing.rule)) : null,
    el('ol', { class: 'steps' }, steps.map((s) => el('li', {}, pickText(s)))));
}

/** The event's timeline, oldest first. */
export function timelineBlock(ev, { names } = {}) {
  const items = (ev.timeline || []).map((x) => {
    const cls = x.action === 'breached' ? 'breach' : x.action === 'escalated' ? 'escalate'
      : x.action === 'warned' ? 'warn' : '';
    const late = x.received_at && x.at && Math.abs(Date.parse(x.received_at) - Date.parse(x.at)) > 2000;
    let change = '';
    if (x.from || x.to) {
      const label = (v) => (x.action === 'escalated' ? tierLabel(v) : x.action === 'reassigned' && names ? names(v) : statusLabel(v));
      change = `${label(x.from) || '–'} → ${label(x.to) || '–'}`;
    }
    return el('li', { class: cls, 'data-action': x.action || '' },
      el('div', { class: 'tl-head' },
        el('span', { class: 'tl-time' }, fmtClock(x.at, true)),
        el('strong', {}, actionLabel(x.action)),
        x.stage ? el('span', {}, stageLabel(x.stage)) : null,
        change ? el('span', { class: 'muted' }, change) : null,
        x.actor ? el('span', { class: 'muted' }, String(x.actor)) : null),
      late ? el('div', { class: 'tl-note' }, `↳ ${fmtClock(x.received_at, true)}`) : null,
      x.note && !x.evidence ? el('div', { class: 'tl-note' }, String(x.note)) : null,
      entryOf(ev, x) ? el('div', { class: 'tl-evidence' }, evidenceChip(entryOf(ev, x))) : null);
  });
  return el('ol', { class: 'timeline' }, items);
}
