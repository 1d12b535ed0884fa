'use strict';
// chat-api admin dashboard: plain DOM, no dependencies, CSP-safe.
const KEY = 'chat-api-admin-token';
const nf = new Intl.NumberFormat('en-US');
const compact = new Intl.NumberFormat('en-US', { notation: 'compact' });
const fmt = (n) => (n == null ? '—' : nf.format(n));
const plural = (n, w) => `${fmt(n)} ${w}${n === 1 ? '' : 's'}`;
const $ = (id) => document.getElementById(id);
const apiError = (status, msg) => Object.assign(new Error(msg), { status });
let E, token = null, seq = 0;
try { token = sessionStorage.getItem(KEY); } catch (_) {}

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'text') e.textContent = v;
    else if (v != null) e.setAttribute(k, v);
  }
  e.append(...kids);
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function setToken(t) {
  token = t || null;
  try { token ? sessionStorage.setItem(KEY, token) : sessionStorage.removeItem(KEY); } catch (_) {}
}

function showError(msg) {
  E.error.textContent = msg || '';
  E.error.hidden = !msg;
}

// "403 Forbidden: <detail> (<field>: <message>)" from an RFC 9457 problem body.
function describe(res, p) {
  p = p && typeof p === 'object' ? p : {};
  let msg = `${res.status} ${p.title || res.statusText || 'Error'}`;
  if (p.detail) msg += `: ${p.detail}`;
  const errs = (Array.isArray(p.errors) ? p.errors : []).map((e) => (e.field ? `${e.field}: ` : '') + e.message);
  if (errs.length) msg += ` (${errs.join('; ')})`;
  return msg;
}

async function api(method, path, body, auth = true) {
  const headers = {};
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  if (body) headers['Content-Type'] = 'application/json';
  let res, data = null;
  try {
    res = await fetch(path, { method, headers, cache: 'no-store', body: body && JSON.stringify(body) });
  } catch (e) {
    throw apiError(0, `Network error: ${e.message || e}`);
  }
  try { data = JSON.parse(await res.text()); } catch (_) {}
  if (!res.ok) throw apiError(res.status, describe(res, data));
  return data;
}

function fail(err) {
  showError(err.message || String(err));
  if (err.status === 401 || err.status === 403) { setToken(null); showLogin(); }
}

function showLogin() {
  E.dashboard.hidden = true;
  E.form.hidden = false;
  (E.email.value ? E.password : E.email).focus();
}

const usagePath = (m) => '/admin/usage' + (m ? `?month=${encodeURIComponent(m)}` : '');

async function loadDashboard() {
  const my = ++seq;
  E.form.hidden = true;
  try {
    const [users, usage] = await Promise.all([api('GET', '/admin/users?limit=100&offset=0'), api('GET', usagePath())]);
    if (my !== seq) return;
    renderUsers(users);
    renderUsage(usage);
    E.month.value = usage.month || '';
    E.dashboard.hidden = false;
  } catch (e) {
    if (my !== seq) return;
    fail(e);
    if (E.dashboard.hidden) E.form.hidden = false;
  }
}

async function loadUsage(month) {
  const my = ++seq;
  E.dashboard.setAttribute('aria-busy', 'true');
  try {
    const usage = await api('GET', usagePath(month));
    if (my === seq) { renderUsage(usage); showError(''); }
  } catch (e) {
    if (my === seq) fail(e);
  }
  if (my === seq) E.dashboard.removeAttribute('aria-busy');
}

function renderUsage(u) {
  const totals = u.totals || {};
  for (const dd of E.totals.querySelectorAll('dd[data-total]')) {
    const key = dd.dataset.total, v = totals[key];
    if (v == null) {
      dd.textContent = '—';
      dd.removeAttribute('data-value');
      continue;
    }
    dd.textContent = key === 'cost_usd'
      ? '$' + v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 4 })
      : fmt(v);
    dd.dataset.value = String(v);
  }
  renderChart(u.days || [], u.month || '');
}

function renderChart(days, month) {
  const W = 720, H = 220, L = 56, R = 8, T = 14, base = H - 26, ph = base - T;
  const max = Math.max(0, ...days.map((d) => d.total_tokens || 0));
  const slot = (W - L - R) / (days.length || 1), bw = Math.max(1, slot * 0.72);
  const c = E.chart;
  c.setAttribute('viewBox', `0 0 ${W} ${H}`);
  c.setAttribute('aria-label', `Total tokens per day, ${month}; peak ${plural(max, 'token')}`);
  c.replaceChildren(
    svg('line', { class: 'grid', x1: L, x2: W - R, y1: T, y2: T }),
    svg('line', { class: 'axis', x1: L, x2: W - R, y1: base, y2: base }),
    svg('text', { class: 'label y-max', x: L - 6, y: T + 4, 'text-anchor': 'end' }, compact.format(max)),
    svg('text', { class: 'label', x: L - 6, y: base + 4, 'text-anchor': 'end' }, '0'),
  );
  days.forEach((d, i) => {
    const t = d.total_tokens || 0;
    const h = max ? Math.max(t ? 1 : 0, (t / max) * ph) : 0;
    const r = svg('rect', {
      class: 'bar', x: (L + i * slot + (slot - bw) / 2).toFixed(1), y: (base - h).toFixed(1),
      width: bw.toFixed(1), height: h.toFixed(1), 'data-day': d.day, 'data-tokens': t,
    });
    r.append(svg('title', {}, `${d.day}: ${plural(t, 'token')}, ${plural(d.requests || 0, 'request')}`));
    c.append(r);
  });
  for (const i of new Set([0, 7, 14, 21, days.length - 1])) {
    if (i < 0 || i >= days.length) continue;
    c.append(svg('text', { class: 'label', x: (L + (i + 0.5) * slot).toFixed(1), y: H - 8, 'text-anchor': 'middle' },
      String(Number(String(days[i].day).slice(8, 10)) || i + 1)));
  }
}

function renderUsers(data) {
  const users = data.users || [];
  const total = data.total_users ?? users.length;
  E.users.replaceChildren(...users.map(userRow));
  E.caption.textContent = `Users: ${users.length < total ? `${users.length} of ` : ''}${fmt(total)} (tokens for ${data.month})`;
}

function userRow(u) {
  const td = (text, cls) => el('td', { class: cls, text: String(text ?? '') });
  const q = u.effective_quota == null ? 'unlimited' : fmt(u.effective_quota);
  const input = el('input', {
    type: 'number', min: 0, step: 1, class: 'quota-input', placeholder: q,
    'aria-label': `Monthly token quota for ${u.email}`,
  });
  if (u.token_quota != null) input.value = String(u.token_quota);
  const set = el('button', { type: 'button', class: 'quota-set', text: 'Set' });
  const def = el('button', { type: 'button', class: 'quota-default', text: 'Default' });
  const tr = el('tr', { 'data-user-id': u.id },
    td(u.id, 'num'), td(u.email, 'email'), td(u.is_admin ? 'yes' : ''), td(fmt(u.sessions), 'num'),
    td(fmt(u.messages), 'num'), td(fmt(u.tokens_this_month), 'num'),
    el('td', {}, el('div', { class: 'quota' }, el('span', { class: 'quota-value', text: q }), input, set, def)));
  const save = async (value) => {
    const controls = [input, set, def];
    controls.forEach((c) => { c.disabled = true; });
    try {
      tr.replaceWith(userRow(await api('PUT', `/admin/users/${u.id}/quota`, { monthly_tokens: value })));
      showError('');
    } catch (e) {
      controls.forEach((c) => { c.disabled = false; });
      fail(e);
    }
  };
  set.addEventListener('click', () => {
    const raw = input.value.trim();
    if (raw === '') return showError('Enter a whole number of tokens (0 or more), or use Default.');
    save(Number(raw));
  });
  def.addEventListener('click', () => save(null));
  input.addEventListener('keydown', (e) => { if (e.key === 'Enter') set.click(); });
  return tr;
}

async function onLogin(ev) {
  ev.preventDefault();
  showError('');
  setToken(null);
  E.signIn.disabled = true;
  try {
    const r = await api('POST', '/auth/login', { email: E.email.value.trim(), password: E.password.value }, false);
    setToken(r && r.access_token);
    E.password.value = '';
    await loadDashboard();
  } catch (e) {
    fail(e);
  }
  E.signIn.disabled = false;
}

function signOut() {
  seq++;
  setToken(null);
  showError('');
  E.users.replaceChildren();
  showLogin();
}

function init() {
  E = {
    error: $('error'), form: $('login-form'), email: $('email'), password: $('password'), signIn: $('sign-in'),
    dashboard: $('dashboard'), month: $('month'), totals: $('totals'), chart: $('usage-chart'),
    users: $('users').tBodies[0], caption: $('users-caption'),
  };
  E.form.addEventListener('submit', onLogin);
  $('sign-out').addEventListener('click', signOut);
  E.month.addEventListener('change', () => { if (/^\d{4}-\d{2}$/.test(E.month.value)) loadUsage(E.month.value); });
  if (token) loadDashboard(); else showLogin();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
