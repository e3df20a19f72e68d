// /supervisor — response-time compliance for a region and a period: per township / team /
// category / day, charts (ECharts), the breach list with each event's timeline, and export.
import {
  el, replace, api, boot, download, fmtClock, fmtDuration, langButton, signOutButton, toast, setTimeZone,
  regionIndex, inScope,
} from './common.js';
import { t, tOr, onLangChange, pickName, applyStatic } from '../i18n.js';
import {
  STAGES, allEvents, makeCategoryNamer, stateBadge, statusLabel, stageLabel, tierLabel, deadlinesBlock,
  routingBlock, timelineBlock,
} from './eventview.js';

const PAGE = 'supervisor';
const S = {
  me: null,
  tz: 'Asia/Shanghai',
  regions: new Map(),
  teams: new Map(),
  catName: (id) => id,
  groups: [],
  transfers: [], // contract §8: per department (移送)
  days: [],
  breaches: [],
  events: [],
  groupBy: 'township',
  charts: {},
};

async function main() {
  const { me } = await boot(PAGE);
  S.me = me;
  document.getElementById('lang-slot').appendChild(langButton());
  document.getElementById('signout-slot').appendChild(signOutButton(PAGE));
  const [ui, cats, counties, townships, teams] = await Promise.all([
    api('ui').catch(() => ({})),
    api('categories').catch(() => ({ categories: [] })),
    api('regions', { query: { level: 'county' } }).catch(() => ({ features: [] })),
    api('regions', { query: { level: 'township' } }).catch(() => ({ features: [] })),
    api('teams').catch(() => ({ teams: [] })),
  ]);
  if (ui.timezone) { S.tz = ui.timezone; setTimeZone(ui.timezone); }
  S.catName = makeCategoryNamer(cats.categories);
  for (const [k, v] of regionIndex([...(counties.features || []), ...(townships.features || [])])) {
    v.feature = null; // names only: drop the geometry
    S.regions.set(k, v);
  }
  for (const tm of teams.teams || []) S.teams.set(tm.id, tm);
  initControls();
  initCharts();
  onLangChange(() => { renderWho(); fillRegions(); renderAll(); });
  renderWho();
  await query();
}

function renderWho() {
  const me = S.me;
  const region = me.region_name ? pickName(me.region_name) : (me.region || t('scope.all'));
  document.getElementById('who').textContent = `${tOr(`role.${me.role}`, me.role)} · ${region}`;
  for (const s of STAGES) {
    document.getElementById(`chart-${s}-title`).textContent = t('sup.chart.times', { stage: t(`stage.${s}.long`) });
  }
}

// ---------------------------------------------------------------- controls ----------------
function dateInTz(d) {
  // YYYY-MM-DD of instant d in the configured time zone.
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: S.tz, year: 'numeric', month: '2-digit', day: '2-digit' }).formatToParts(d);
  const get = (k) => parts.find((p) => p.type === k).value;
  return `${get('year')}-${get('month')}-${get('day')}`;
}

function tzOffset(dateStr) {
  // "+08:00" for the configured zone on that date.
  try {
    const f = new Intl.DateTimeFormat('en-US', { timeZone: S.tz, timeZoneName: 'longOffset' });
    const name = f.formatToParts(new Date(`${dateStr}T12:00:00Z`)).find((p) => p.type === 'timeZoneName').value;
    const m = name.match(/GMT([+-]\d{2}:\d{2})/);
    return m ? m[1] : '+00:00';
  } catch (_) {
    return '+08:00';
  }
}

function addDays(dateStr, n) {
  const d = new Date(`${dateStr}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

function initControls() {
  const params = new URLSearchParams(location.search);
  const today = dateInTz(new Date());
  document.getElementById('until').value = params.get('until') || today;
  document.getElementById('since').value = params.get('since') || addDays(today, -6);
  const gb = params.get('group_by');
  if (gb) document.getElementById('group-by').value = gb;
  fillRegions(params.get('region'));
  document.getElementById('controls').addEventListener('submit', (e) => { e.preventDefault(); query(); });
  document.getElementById('group-by').addEventListener('change', () => query());
  document.getElementById('region').addEventListener('change', () => query());
  document.getElementById('export-csv').addEventListener('click', () => exportAs('csv'));
  document.getElementById('export-xlsx').addEventListener('click', () => exportAs('xlsx'));
}

function fillRegions(wanted) {
  const sel = document.getElementById('region');
  const keep = wanted || sel.value;
  const scope = S.me.role === 'admin' ? null : S.me.region;
  const name = (r) => pickName(r.name || r.id);
  const opts = [el('option', { value: scope || '' }, scope ? name(S.regions.get(scope) || { id: scope, name: S.me.region_name || scope }) : t('scope.all'))];
  const counties = [...S.regions.values()].filter((r) => r.level === 'county' && r.id !== scope && inScope(S.regions, r.id, scope));
  const towns = [...S.regions.values()].filter((r) => r.level === 'township' && r.id !== scope && inScope(S.regions, r.id, scope));
  counties.sort((a, b) => a.id.localeCompare(b.id));
  for (const c of counties) opts.push(el('option', { value: c.id }, name(c)));
  const byCounty = new Map();
  for (const tw of towns) {
    if (!byCounty.has(tw.parent)) byCounty.set(tw.parent, []);
    byCounty.get(tw.parent).push(tw);
  }
  for (const [cid, list] of [...byCounty.entries()].sort()) {
    list.sort((a, b) => a.id.localeCompare(b.id));
    const label = S.regions.get(cid) ? name(S.regions.get(cid)) : cid;
    opts.push(el('optgroup', { label: `${label} · ${t('sup.group.township')}` }, list.map((r) => el('option', { value: r.id }, name(r)))));
  }
  replace(sel, opts);
  if (keep && [...sel.options].some((o) => o.value === keep)) sel.value = keep;
}

function params() {
  const since = document.getElementById('since').value;
  const until = document.getElementById('until').value;
  const q = {
    since: since ? `${since}T00:00:00${tzOffset(since)}` : undefined,
    until: until ? `${addDays(until, 1)}T00:00:00${tzOffset(until)}` : undefined,
  };
  const region = document.getElementById('region').value;
  if (region) q.region = region;
  return q;
}

async function query() {
  S.groupBy = document.getElementById('group-by').value;
  const q = params();
  document.body.classList.add('busy');
  try {
    const [groups, days, breaches, events] = await Promise.all([
      api('stats/response-times', { query: { ...q, group_by: S.groupBy } }),
      S.groupBy === 'day' ? null : api('stats/response-times', { query: { ...q, group_by: 'day' } }),
      allEvents({ ...q, breached: 'true' }),
      allEvents(q),
    ]);
    S.groups = groups.groups || [];
    S.transfers = groups.transfers || [];
    S.days = days ? days.groups || [] : S.groups;
    S.breaches = breaches;
    S.events = events;
    renderAll();
  } catch (e) {
    toast(t('error.generic', { msg: e.message }), 'error', 8000);
  } finally {
    document.body.classList.remove('busy');
  }
}

async function exportAs(format) {
  try {
    await download('/api/v1/stats/export', { ...params(), format, group_by: S.groupBy },
      `response-times-${S.groupBy}.${format}`);
  } catch (e) {
    toast(t('error.generic', { msg: e.message }), 'error', 8000);
  }
}

// ---------------------------------------------------------------- rendering ---------------
function groupName(g) {
  if (S.groupBy === 'category') return S.catName(g.key);
  if (S.groupBy === 'day') return String(g.key);
  return pickName(g.name || g.key);
}

const num = (v, digits = 1) => (v === null || v === undefined ? '–' : Number(v).toFixed(digits).replace(/\.0+$/, ''));
const pct = (v) => (v === null || v === undefined ? '–' : `${num(v, 1)}%`);

function renderAll() {
  renderKpis();
  renderTable();
  renderCharts();
  renderBreaches();
  renderTransfers();
}

// Transfers per department (移送) with their answer times.
function renderTransfers() {
  const rows = S.transfers;
  const cols = [['sup.tr.department', (r) => pickName(r.name)], ['sup.tr.count', (r) => r.count],
    ['sup.tr.accepted', (r) => r.accepted], ['sup.tr.returned', (r) => r.returned],
    ['sup.tr.pending', (r) => r.pending], ['sup.tr.cancelled', (r) => r.cancelled],
    ['sup.tr.p50', (r) => (r.answer.p50_s == null ? '—' : fmtDuration(r.answer.p50_s))],
    ['sup.tr.max', (r) => (r.answer.max_s == null ? '—' : fmtDuration(r.answer.max_s))]];
  replace(document.getElementById('transfer-table'),
    el('thead', {}, el('tr', {}, cols.map(([k]) => el('th', {}, t(k))))),
    el('tbody', {}, rows.map((r) => el('tr', { 'data-department': r.department },
      cols.map(([, f]) => el('td', {}, String(f(r))))))));
  document.getElementById('transfer-empty').classList.toggle('hidden', rows.some((r) => r.count > 0));
}

function overall(groups, stage) {
  let counted = 0;
  let within = 0;
  for (const g of groups) {
    const s = g[stage] || {};
    const c = s.counted ?? null;
    if (c === null || s.within_pct === null || s.within_pct === undefined) continue;
    counted += c;
    within += (s.within_pct / 100) * c;
  }
  return counted ? (100 * within) / counted : null;
}

function renderKpis() {
  const total = S.groups.reduce((a, g) => a + (g.count || 0), 0);
  replace(document.getElementById('kpis'),
    el('div', { class: 'kpi', id: 'kpi-total' }, el('div', { class: 'kpi-v' }, String(total)), el('div', { class: 'kpi-l' }, t('sup.col.count'))),
    STAGES.map((s) => {
      const v = overall(S.groups, s);
      return el('div', { class: 'kpi', id: `kpi-${s}` },
        el('div', { class: `kpi-v ${v === null ? '' : v >= 90 ? 'good' : v >= 70 ? 'warn' : 'bad'}` }, pct(v)),
        el('div', { class: 'kpi-l' }, t(`stage.${s}.long`)));
    }),
    el('div', { class: 'kpi', id: 'kpi-breaches' }, el('div', { class: 'kpi-v bad' }, String(S.breaches.length)), el('div', { class: 'kpi-l' }, t('sup.breaches'))));
}

function renderTable() {
  const table = document.getElementById('stats-table');
  const head1 = el('tr', {},
    el('th', { rowspan: '2' }, tOr(`sup.group.${S.groupBy}`, S.groupBy)),
    el('th', { rowspan: '2', class: 'num' }, t('sup.col.count')),
    STAGES.map((s) => el('th', { colspan: '4', class: 'stage-h' }, t(`stage.${s}.long`))));
  const head2 = el('tr', {}, STAGES.map(() => [
    el('th', { class: 'num' }, t('sup.col.within')), el('th', { class: 'num' }, t('sup.col.p50')),
    el('th', { class: 'num' }, t('sup.col.p90')), el('th', { class: 'num' }, t('sup.col.max'))]));
  const rows = S.groups.map((g) => el('tr', { 'data-key': g.key },
    el('td', { 'data-col': 'name' }, groupName(g)),
    el('td', { class: 'num', 'data-col': 'count' }, String(g.count)),
    STAGES.map((s) => {
      const x = g[s] || {};
      return [
        el('td', { class: `num ${cls(x.within_pct)}`, 'data-col': `${s}.within_pct` }, pct(x.within_pct)),
        el('td', { class: 'num', 'data-col': `${s}.p50_s` }, num(x.p50_s)),
        el('td', { class: 'num', 'data-col': `${s}.p90_s` }, num(x.p90_s)),
        el('td', { class: 'num', 'data-col': `${s}.max_s` }, num(x.max_s)),
      ];
    })));
  replace(table, el('thead', {}, head1, head2), el('tbody', {}, rows));
  document.getElementById('stats-empty').classList.toggle('hidden', S.groups.length > 0);
}

function cls(v) {
  if (v === null || v === undefined) return '';
  return v >= 90 ? 'good' : v >= 70 ? 'warn' : 'bad';
}

function renderBreaches() {
  const table = document.getElementById('breach-table');
  const head = el('tr', {},
    ['sup.col.time', 'sup.col.category', 'sup.col.township', 'sup.col.team', 'sup.col.breaches', 'sup.col.status'].map((k) => el('th', {}, t(k))),
    el('th', {}, t('ops.detail.tier')));
  const rows = S.breaches.map((e) => el('tr', {
    'data-id': e.id, tabindex: '0',
    onclick: () => openEvent(e.id),
    onkeydown: (ev) => { if (ev.key === 'Enter') openEvent(e.id); },
  },
  el('td', { class: 'mono' }, fmtClock(e.created_at, true)),
  el('td', {}, S.catName(e.category)),
  el('td', {}, regionName(e.township)),
  el('td', {}, teamName(e.team)),
  el('td', {}, (e.breaches || []).map((s) => stageLabel(s)).join('、')),
  el('td', {}, statusLabel(e.status)),
  el('td', {}, tierLabel(e.tier))));
  replace(table, el('thead', {}, head), el('tbody', {}, rows));
  document.getElementById('breach-count').textContent = `(${S.breaches.length})`;
  document.getElementById('breach-empty').classList.toggle('hidden', S.breaches.length > 0);
}

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

async function openEvent(id) {
  let ev;
  try { ev = await api(`events/${encodeURIComponent(id)}`); } catch (e) {
    toast(t('error.generic', { msg: e.message }), 'error');
    return;
  }
  const close = () => overlay.remove();
  const overlay = el('div', { class: 'modal-overlay', id: 'event-modal', onclick: (x) => { if (x.target === overlay) close(); } },
    el('div', { class: 'modal', role: 'dialog', 'aria-modal': 'true' },
      el('header', {},
        el('h2', {}, `${S.catName(ev.category)} · ${ev.id}`), stateBadge(ev.timer_state),
        el('button', { type: 'button', class: 'btn small', id: 'modal-close', onclick: close }, t('close'))),
      el('p', { class: 'desc-full' }, ev.description ? String(ev.description) : ''),
      el('dl', { class: 'kv' },
        el('dt', {}, t('ops.detail.status')), el('dd', {}, statusLabel(ev.status)),
        el('dt', {}, t('ops.detail.township')), el('dd', {}, regionName(ev.township)),
        el('dt', {}, t('ops.detail.team')), el('dd', {}, teamName(ev.team)),
        el('dt', {}, t('ops.detail.unit')), el('dd', {}, ev.unit ? String(ev.unit) : t('none'))),
      el('h3', {}, t('ops.detail.deadlines')), deadlinesBlock(ev),
      el('h3', {}, t('ops.detail.routing')), routingBlock(ev.routing),
      el('h3', {}, t('sup.timeline')), timelineBlock(ev, { names: teamName })));
  document.addEventListener('keydown', function esc(k) { if (k.key === 'Escape') { close(); document.removeEventListener('keydown', esc); } });
  document.body.appendChild(overlay);
}

// ---------------------------------------------------------------- charts ------------------
const COLORS = { respond: '#2f80ed', depart: '#f2a40c', arrive: '#22a559' };

function initCharts() {
  if (typeof echarts === 'undefined') return;
  for (const id of ['within', 'respond', 'depart', 'arrive', 'dist', 'trend']) {
    S.charts[id] = echarts.init(document.getElementById(`chart-${id}`), 'dark', { renderer: 'canvas' });
  }
  window.addEventListener('resize', () => { for (const c of Object.values(S.charts)) c.resize(); });
}

// The tooltip is built as DOM nodes: ECharts' own writes HTML with style="" attributes,
// which the page's Content-Security-Policy (style-src 'self') refuses.
function tooltipNodes(params) {
  const list = Array.isArray(params) ? params : [params];
  const tip = el('div', { class: 'chart-tip' });
  const head = list.length ? (list[0].axisValueLabel ?? list[0].name) : '';
  if (head !== undefined && head !== '') tip.appendChild(el('div', { class: 'chart-tip-head' }, String(head)));
  for (const p of list) {
    const dot = el('span', { class: 'chart-tip-dot' });
    if (typeof p.color === 'string') dot.style.backgroundColor = p.color; // CSSOM: allowed by CSP
    const v = Array.isArray(p.value) ? p.value[p.value.length - 1] : p.value;
    const shown = typeof v === 'number' && Number.isFinite(v) ? String(Math.round(v * 10) / 10) : '–';
    tip.appendChild(el('div', { class: 'chart-tip-row' }, dot,
      el('span', { class: 'chart-tip-name' }, String(p.seriesName ?? '')),
      el('span', { class: 'chart-tip-value' }, shown)));
  }
  return tip;
}

function base() {
  return {
    backgroundColor: 'transparent',
    textStyle: { fontFamily: getComputedStyle(document.documentElement).fontFamily },
    tooltip: { trigger: 'axis', formatter: tooltipNodes },
    grid: { left: 48, right: 16, top: 36, bottom: 60 },
    legend: { top: 0 },
    animation: false,
  };
}

function renderCharts() {
  if (!S.charts.within) return;
  const names = S.groups.map(groupName);
  const many = names.length > 12;
  const zoom = many ? [{ type: 'slider', height: 16, bottom: 6, start: 0, end: Math.max(10, Math.round(1200 / names.length)) }] : [];
  const xAxis = { type: 'category', data: names, axisLabel: { interval: 0, rotate: names.length > 6 ? 35 : 0, fontSize: 11 } };
  S.charts.within.setOption({
    ...base(),
    dataZoom: zoom,
    xAxis,
    yAxis: { type: 'value', min: 0, max: 100, axisLabel: { formatter: '{value}%' } },
    series: STAGES.map((s) => ({
      name: t(`stage.${s}.long`), type: 'bar', itemStyle: { color: COLORS[s] },
      data: S.groups.map((g) => (g[s] ? g[s].within_pct : null)),
    })),
  }, true);
  for (const s of STAGES) {
    S.charts[s].setOption({
      ...base(),
      dataZoom: zoom,
      xAxis,
      yAxis: { type: 'value', name: 's' },
      series: [
        { name: 'P50', type: 'bar', itemStyle: { color: COLORS[s] }, data: S.groups.map((g) => (g[s] ? g[s].p50_s : null)) },
        { name: 'P90', type: 'bar', itemStyle: { color: COLORS[s], opacity: 0.55 }, data: S.groups.map((g) => (g[s] ? g[s].p90_s : null)) },
        { name: t('sup.col.max'), type: 'scatter', itemStyle: { color: '#e5383b' }, data: S.groups.map((g) => (g[s] ? g[s].max_s : null)) },
      ],
    }, true);
  }
  renderDistribution();
  const days = S.days.map((g) => String(g.key));
  S.charts.trend.setOption({
    ...base(),
    xAxis: { type: 'category', data: days },
    yAxis: [
      { type: 'value', min: 0, max: 100, axisLabel: { formatter: '{value}%' } },
      { type: 'value', name: t('sup.col.count'), splitLine: { show: false } },
    ],
    series: [
      { name: t('sup.col.count'), type: 'bar', yAxisIndex: 1, itemStyle: { color: '#4b5b70' }, data: S.days.map((g) => g.count) },
      ...STAGES.map((s) => ({
        name: t(`stage.${s}.long`), type: 'line', smooth: false, itemStyle: { color: COLORS[s] }, connectNulls: true,
        data: S.days.map((g) => (g[s] ? g[s].within_pct : null)),
      })),
    ],
  }, true);
}

// How long each done stage took, as a share of its own time limit (dispatch → deadline):
// one scale for the 1-, 3- and 15-minute stages; bars right of 100% were late.
const BINS = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 150, 200, Infinity];
const DONE_AT = { respond: 'responded_at', depart: 'departed_at', arrive: 'arrived_at' };

function distribution() {
  const counts = Object.fromEntries(STAGES.map((s) => [s, BINS.map(() => 0)]));
  for (const e of S.events) {
    const start = Date.parse(e.dispatched_at);
    if (!Number.isFinite(start) || e.status === 'cancelled') continue;
    for (const s of STAGES) {
      const done = Date.parse(e[DONE_AT[s]]);
      const due = Date.parse(e.deadlines && e.deadlines[s]);
      if (!Number.isFinite(done) || !Number.isFinite(due) || due <= start) continue;
      const pctOf = (100 * (done - start)) / (due - start);
      counts[s][BINS.findIndex((b) => pctOf <= b)] += 1;
    }
  }
  return counts;
}

function renderDistribution() {
  const counts = distribution();
  let lo = 0;
  const labels = BINS.map((b) => {
    const l = b === Infinity ? `>${lo}%` : `${lo}–${b}%`;
    lo = b;
    return l;
  });
  S.charts.dist.setOption({
    ...base(),
    xAxis: { type: 'category', data: labels, axisLabel: { fontSize: 11 } },
    yAxis: { type: 'value', name: t('sup.dist.count'), minInterval: 1 },
    series: STAGES.map((s, i) => ({
      name: t(`stage.${s}.long`), type: 'bar', itemStyle: { color: COLORS[s] }, data: counts[s],
      markArea: i ? undefined : {
        silent: true, itemStyle: { color: 'rgba(229, 56, 59, 0.12)' },
        data: [[{ xAxis: labels[10] }, { xAxis: labels[12] }]],
      },
    })),
  }, true);
}

applyStatic();
main().catch((e) => toast(String(e && e.message ? e.message : e), 'error', 10000));
