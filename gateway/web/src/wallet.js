// The member web wallet: one page, served by each gateway of the alliance, holding the member's
// accounts at several brands. It talks to the gateways' member API (CORS between the alliance's
// gateways); the key stays in this browser (keys.js). Every text node is set as text, never as HTML.
import * as keys from './keys.js';
import { LANGS, pick, translator } from './i18n.js';

const HOME = location.origin;
const STORE = { wallet: 'alliance.wallet.v1', brands: 'alliance.brands.v1', lang: 'alliance.lang', signed: 'alliance.signed.v1' };
const tokens = JSON.parse(sessionStorage.getItem('alliance.tokens.v1') || '{}');
let lang = pick(new URLSearchParams(location.search).get('lang') || localStorage.getItem(STORE.lang) || navigator.language);
let t = translator(lang);
let seed = null;  // the unlocked wallet's entropy, in memory only while the page is open
let flash = null;  // {kind: 'notice'|'error', text}
const pending = {};  // idempotency keys of requests not yet answered: a retry reuses its key

const load = (k, d) => JSON.parse(localStorage.getItem(k) || JSON.stringify(d));
const save = (k, v) => localStorage.setItem(k, JSON.stringify(v));
const brands = () => load(STORE.brands, []);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else if (v !== false && v != null) el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

const field = (id, label, attrs = {}) => h('div', {}, h('label', { for: id }, label), h('input', { id, name: id, ...attrs }));

async function api(base, method, path, body, headers = {}) {
  const all = { ...headers };
  if (tokens[base]) all.Authorization = 'Bearer ' + tokens[base];
  if (body !== undefined) all['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(base + path, { method, headers: all, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new Error(t('offline'));
  }
  const data = (r.headers.get('content-type') || '').includes('json') ? await r.json() : await r.text();
  if (!r.ok) throw new Error(t('error', { detail: (data && (data.detail || data.title)) || r.status }));
  return data;
}

function download(name, value) {
  const a = h('a', { href: URL.createObjectURL(new Blob([JSON.stringify(value, null, 2)], { type: 'application/json' })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

function act(fn) {
  // A form's or a button's action: what it says (or its refusal) shown on the next screen, which is
  // this one again unless the action names another ({text, go: '#/...'}).
  return async (e) => {
    e.preventDefault();
    const button = e.target.querySelector?.('button[type=submit]') || e.target;
    button.disabled = true;
    let go = null;
    try {
      const result = await fn(e.target);
      const text = typeof result === 'string' ? result : result?.text;
      go = result?.go || null;
      flash = text ? { kind: 'notice', text } : null;
    } catch (err) {
      flash = { kind: 'error', text: err.message };
    }
    if (go && go !== location.hash) location.hash = go;  // the hashchange renders it
    else await render();
  };
}

function setToken(base, token) {
  tokens[base] = token;
  sessionStorage.setItem('alliance.tokens.v1', JSON.stringify(tokens));
}

// ---------------------------------------------------------------- the wallet

async function wallet0() {
  if (!seed) throw new Error(t('wrong'));
  return keys.account(seed, 0);
}

function walletView() {
  const stored = localStorage.getItem(STORE.wallet);
  if (!stored) {
    return [h('h1', {}, t('create')), h('p', {}, t('createHelp')),
      h('form', { class: 'card', id: 'create-form', onsubmit: act(async (f) => {
        if (f.pass.value.length < 10) throw new Error(t('short'));
        if (f.pass.value !== f.again.value) throw new Error(t('mismatch'));
        const entropy = keys.newEntropy();
        save(STORE.wallet, await keys.encryptKeystore(entropy, f.pass.value));
        seed = entropy;
        return { text: t('done'), go: '#/wallet' };
      }) }, field('pass', t('passphrase'), { type: 'password', autocomplete: 'new-password', required: true }),
      field('again', t('again'), { type: 'password', autocomplete: 'new-password', required: true }),
      h('p', {}, h('button', { type: 'submit', id: 'create' }, t('create')))),
      h('form', { class: 'card', id: 'import-form', onsubmit: act(async (f) => {
        const keystore = JSON.parse(await f.file.files[0].text());
        const secret = await keys.decryptKeystore(keystore, f.importpass.value);
        if (keystore['x-alliance-kind'] !== keys.SEED_KIND) throw new Error('this keystore holds a single key, not a wallet seed');
        save(STORE.wallet, await keys.encryptKeystore(secret, f.importpass.value));  // PBKDF2 here: scrypt unlocks slowly in a browser
        seed = secret;
        return { text: t('imported'), go: '#/wallet' };
      }) }, h('div', {}, h('label', { for: 'file' }, t('importFile')), h('input', { id: 'file', name: 'file', type: 'file', accept: '.json,application/json', required: true })),
      field('importpass', t('passphrase'), { type: 'password', autocomplete: 'current-password', required: true }),
      h('p', {}, h('button', { type: 'submit', id: 'import' }, t('importFile'))))];
  }
  if (!seed) {
    return [h('h1', {}, t('unlock')), h('form', { class: 'card', id: 'unlock-form', onsubmit: act(async (f) => {
      try {
        seed = await keys.decryptKeystore(JSON.parse(stored), f.pass.value);
      } catch (e) {
        throw new Error(t('wrong'));
      }
      return { go: '#/brands' };
    }) }, field('pass', t('passphrase'), { type: 'password', autocomplete: 'current-password', required: true }),
    h('p', {}, h('button', { type: 'submit', id: 'unlock' }, t('unlock'))))];
  }
  const out = [h('h1', {}, t('wallet')), h('p', {}, t('address'), ': ', h('code', { id: 'address' }, '…')),
    h('p', { class: 'row' }, h('button', { type: 'button', id: 'export', onclick: () => download('alliance-wallet.json', JSON.parse(stored)) }, t('export')),
      h('button', { type: 'button', class: 'secondary', id: 'forget', onclick: () => {
        if (confirm(t('forget') + '?')) { localStorage.removeItem(STORE.wallet); seed = null; render(); }
      } }, t('forget'))),
    h('details', {}, h('summary', {}, t('phrase')), h('p', {}, t('phraseHelp')), h('p', { class: 'secret', id: 'phrase' }, keys.recoveryPhrase(seed)))];
  wallet0().then((a) => { document.getElementById('address').textContent = a.address; });
  return out;
}

// ---------------------------------------------------------------- brands: sign-up and log-in

async function brandsView() {
  const list = brands();
  // Balances at every brand the wallet is logged in to, side by side.
  const balances = await Promise.all(list.map((b) => (tokens[b.url] ? api(b.url, 'GET', '/v1/me/balance').catch(() => null) : null)));
  const rows = list.map((b, i) => h('tr', {}, h('td', {}, h('a', { href: `#/brand/${i}`, class: 'brand-link' }, b.name)),
    h('td', { class: 'num' }, balances[i] ? t('points', { n: balances[i].points.toLocaleString(lang) }) : h('a', { href: `#/login/${i}` }, t('logIn'))),
    h('td', { class: 'num' }, balances[i]?.alliance_points != null ? t('apUnit', { n: balances[i].alliance_points.toLocaleString(lang) }) : '–')));
  return [h('h1', {}, t('brands')),
    list.length ? h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': t('brands') },
      h('table', { id: 'brands' }, h('tr', {}, h('th', {}, t('brands')), h('th', { class: 'num' }, t('balance')), h('th', { class: 'num' }, t('ap'))), rows)) : null,
    h('h2', {}, t('addBrand')),
    h('form', { class: 'card', id: 'signup-form', onsubmit: act(async (f) => {
      const url = f.url.value.replace(/\/+$/, '');
      const info = await api(url, 'GET', '/v1/brand');
      const identifiers = {};
      if (f.phone.value) identifiers.phone = f.phone.value;
      if (f.email.value) identifiers.email = f.email.value;
      const started = await api(url, 'POST', '/v1/enrolments', { identifiers, name: f.name.value, passphrase: f.accountpass.value, channel: 'web' });
      sessionStorage.setItem('alliance.enrolment', JSON.stringify({ url, info: { name: info.name, brand_id: info.brand_id }, started }));
      return { go: '#/verify' };
    }) }, field('url', t('brandUrl'), { type: 'url', value: HOME, required: true }),
    field('phone', t('phone'), { type: 'tel', autocomplete: 'tel' }), field('email', t('email'), { type: 'email', autocomplete: 'email' }),
    field('name', t('name'), { autocomplete: 'name', required: true }),
    field('accountpass', t('accountPass'), { type: 'password', autocomplete: 'new-password', minlength: '10', required: true }),
    h('p', {}, h('button', { type: 'submit', id: 'signup' }, t('signUp')))),
    h('form', { class: 'card', id: 'login-form', onsubmit: act(async (f) => {
      const url = f.loginurl.value.replace(/\/+$/, '');
      const info = await api(url, 'GET', '/v1/brand');
      const kind = f.loginemail.value ? 'email' : 'phone';
      const session = await api(url, 'POST', '/v1/sessions', { kind, value: f.loginemail.value || f.loginphone.value, passphrase: f.loginpass.value });
      setToken(url, session.token);
      remember(url, info, session.member_ref);
      return { go: '#/brands' };
    }) }, h('h2', {}, t('logIn')), field('loginurl', t('brandUrl'), { type: 'url', value: HOME, required: true }),
    field('loginphone', t('phone'), { type: 'tel' }), field('loginemail', t('email'), { type: 'email' }),
    field('loginpass', t('accountPass'), { type: 'password', autocomplete: 'current-password', required: true }),
    h('p', {}, h('button', { type: 'submit', id: 'login' }, t('logIn'))))];
}

function remember(url, info, memberRef) {
  const list = brands().filter((b) => b.url !== url);
  list.push({ url, name: info.name, brand_id: info.brand_id, member_ref: memberRef });
  save(STORE.brands, list);
}

function verifyView() {
  const e = JSON.parse(sessionStorage.getItem('alliance.enrolment') || 'null');
  if (!e) { location.hash = '#/brands'; return []; }
  return [h('h1', {}, t('signUp'), ': ', e.info.name), h('form', { class: 'card', id: 'verify-form', onsubmit: act(async (f) => {
    const codes = Object.fromEntries(e.started.sent_to.map((kind) => [kind, f['code-' + kind].value.trim()]));
    const done = await api(e.url, 'POST', `/v1/enrolments/${e.started.enrolment_id}/verification`, { codes });
    setToken(e.url, done.token);
    remember(e.url, e.info, done.member_ref);
    sessionStorage.removeItem('alliance.enrolment');
    return { go: `#/brand/${brands().findIndex((b) => b.url === e.url)}` };
  }) }, e.started.sent_to.map((kind) => field('code-' + kind, t('code', { kind: t(kind) }), { inputmode: 'numeric', autocomplete: 'one-time-code', required: true })),
  h('p', {}, h('button', { type: 'submit', id: 'verify' }, t('verify'))))];
}

// ---------------------------------------------------------------- one brand

async function linkAt(b) {
  const a = await wallet0();
  const challenge = await api(b.url, 'POST', '/v1/me/wallet/challenges', { address: a.address });
  await api(b.url, 'POST', '/v1/me/wallet', { challenge_id: challenge.challenge_id, signature: keys.personalSign(challenge.message, a.key) });
  return a.address;
}

async function redeemAt(b, amount) {
  // The brand where the AP are spent: the wallet is linked there, and signs an EIP-712 authorisation
  // with a nonce it never signed before (recorded before the signature leaves this page).
  const a = await wallet0();
  const me = await api(b.url, 'GET', '/v1/me');
  if (me.wallet_address !== a.address) await linkAt(b);
  const signed = load(STORE.signed, {});
  let info = await api(b.url, 'GET', `/v1/redemption-nonce?owner=${a.address}`);
  const slot = `${info.chain_id}:${info.points_contract}:${info.brand}:${a.address}`.toLowerCase();
  const mine = signed[slot] || [];
  while (mine.includes(info.nonce)) {
    const ahead = mine.filter((n) => n >= info.nonce).sort((x, y) => x - y).slice(0, 256);
    info = await api(b.url, 'GET', `/v1/redemption-nonce?owner=${a.address}&` + ahead.map((n) => `reserved=${n}`).join('&'));
  }
  signed[slot] = [...mine, info.nonce];
  save(STORE.signed, signed);
  const auth = keys.signRedemption(info.domain, { owner: a.address, brand: info.brand, amount, nonce: info.nonce,
    deadline: Math.floor(Date.now() / 1000) + 3600 }, a.key);
  return api(b.url, 'POST', '/v1/me/redemptions', auth);
}

async function brandView(i) {
  const list = brands();
  const b = list[i];
  if (!b) { location.hash = '#/brands'; return []; }
  if (!tokens[b.url]) { location.hash = `#/login/${i}`; return []; }
  const [info, me, balance, ledger, consents, history] = await Promise.all([
    api(b.url, 'GET', '/v1/brand'), api(b.url, 'GET', '/v1/me'), api(b.url, 'GET', '/v1/me/balance'), api(b.url, 'GET', '/v1/me/ledger'),
    api(b.url, 'GET', '/v1/me/consents'), api(b.url, 'GET', '/v1/me/consents/history')]);
  const [rewards, orders] = await Promise.all([api(b.url, 'GET', '/v1/rewards').catch(() => []),
    api(b.url, 'GET', '/v1/me/reward-orders').catch(() => [])]);
  const others = list.map((o, j) => ({ ...o, j })).filter((o) => o.j !== i && tokens[o.url]);
  const receipts = history.map((r) => ({ ...r, ok: r.jws ? keys.verifyReceipt({ format: r.format, jws: r.jws, receipt: r.receipt }, info.receipt_public_key_pem, info.receipt_key_id) : null }));
  return [
    h('h1', {}, info.name),
    h('div', { class: 'cards' },
      h('div', { class: 'card' }, h('div', { class: 'muted' }, t('balance')), h('div', { class: 'figure', id: 'points' }, t('points', { n: balance.points.toLocaleString(lang) }))),
      h('div', { class: 'card' }, h('div', { class: 'muted' }, t('ap')), h('div', { class: 'figure', id: 'ap-balance' }, balance.alliance_points == null ? '–' : t('apUnit', { n: balance.alliance_points.toLocaleString(lang) }))),
      h('div', { class: 'card' }, h('div', { class: 'muted' }, t('tier')), h('div', { class: 'figure' }, balance.tier))),
    balance.expiring_soon.map((x) => h('p', { class: 'notice' }, t('expiring', { points: x.points.toLocaleString(lang), date: new Date(x.expires_at).toLocaleDateString(lang) }))),
    h('p', {}, me.wallet_address ? t('linked', { address: me.wallet_address }) : t('notLinked'), ' ',
      h('button', { type: 'button', id: 'link', class: 'secondary', onclick: act(async () => t('linked', { address: await linkAt(b) })) }, t('link'))),
    h('h2', {}, t('exchange')),
    h('form', { class: 'card row', id: 'exchange-form', onsubmit: act(async (f) => {
      const body = { ap_amount: Number(f.ap.value) };
      const key = pending['exchange:' + JSON.stringify(body)] ||= crypto.randomUUID();
      const done = await api(b.url, 'POST', '/v1/me/exchanges', body, { 'Idempotency-Key': key });
      delete pending['exchange:' + JSON.stringify(body)];
      return t('status', { status: done.status });
    }) }, h('p', { class: 'muted' }, t('exchangeHelp', { rate: info.rate ?? '?' })),
    field('ap', t('apAmount'), { type: 'number', min: '1', step: '1', required: true }), h('div', {}, h('button', { type: 'submit', id: 'exchange' }, t('exchange')))),
    others.length ? [h('h2', {}, t('redeem')), h('form', { class: 'card row', id: 'redeem-form', onsubmit: act(async (f) => {
      const target = list[Number(f.at.value)];
      const done = await redeemAt(target, Number(f.redeemap.value));
      return t('status', { status: done.status });
    }) }, h('p', { class: 'muted' }, t('redeemHelp')),
    h('div', {}, h('label', { for: 'at' }, t('redeemAt')), h('select', { id: 'at', name: 'at' }, others.map((o) => h('option', { value: String(o.j) }, o.name)))),
    field('redeemap', t('apAmount'), { type: 'number', min: '1', step: '1', required: true }), h('div', {}, h('button', { type: 'submit', id: 'redeem' }, t('redeem'))))] : null,
    h('h2', {}, t('consents')),
    h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': t('consents') }, h('table', { id: 'consents' }, Object.entries(consents).map(([purpose, granted]) => h('tr', {},
      h('th', { scope: 'row' }, t('purpose_' + purpose)), h('td', { class: granted ? 'ok' : 'bad' }, granted ? t('granted') : t('notGranted')),
      h('td', {}, h('button', { type: 'button', class: 'secondary', 'data-purpose': purpose, onclick: act(async () => {
        await api(b.url, 'PUT', `/v1/me/consents/${purpose}`, { granted: !granted, channel: 'web' });
        return t('done');
      }) }, granted ? t('withdraw') : t('grant'))))))),
    h('details', { id: 'receipts' }, h('summary', {}, t('receipt'), ` (${receipts.length})`),
      h('ul', {}, receipts.map((r) => h('li', {}, h('span', { class: r.ok ? 'ok' : 'bad', 'data-seq': String(r.seq) },
        (r.ok ? t('receiptOk', { seq: r.seq, brand: info.name }) : t('receiptBad', { seq: r.seq })) + ` ${t('purpose_' + r.consent.purpose)}: ${r.consent.state}`), ' ',
      h('button', { type: 'button', class: 'secondary', onclick: () => download(`receipt-${info.brand_id}-${r.seq}.json`, { format: r.format, jws: r.jws, receipt: r.receipt }) }, t('download')))))),
    rewards.length ? [h('h2', {}, t('rewards')), h('ul', { id: 'rewards' }, rewards.map((r) => h('li', {}, `${r.name}: ${t('points', { n: r.points_price.toLocaleString(lang) })} `,
      r.orderable ? h('button', { type: 'button', class: 'secondary', onclick: act(async () => {
        const body = { reward: r.code };
        const key = pending['order:' + r.code] ||= crypto.randomUUID();
        const done = await api(b.url, 'POST', '/v1/me/reward-orders', body, { 'Idempotency-Key': key });
        delete pending['order:' + r.code];
        return t('status', { status: done.status });
      }) }, t('order')) : h('span', { class: 'muted' }, t('notOrderable', { reason: r.reason || '' })))))] : null,
    orders.length ? [h('h2', {}, t('orders')), h('ul', { id: 'orders' }, orders.map((o) => h('li', {},
      `${o.reward}: ${t('points', { n: o.points.toLocaleString(lang) })}, ${t('status', { status: o.status })}`,
      o.coupon ? [' ', t('coupon', { code: o.coupon.code, date: new Date(o.coupon.expires_at).toLocaleDateString(lang) })] : null)))] : null,
    h('h2', {}, t('history')),
    h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': t('history') }, h('table', { id: 'history' },
      ledger.slice().reverse().map((l) => h('tr', {}, h('td', {}, new Date(l.at).toLocaleString(lang)), h('td', {}, t('k_' + l.kind)),
        h('td', { class: 'num' }, (l.amount > 0 ? '+' : '') + t('points', { n: l.amount.toLocaleString(lang) })))))),
    h('h2', {}, t('exportData')),
    h('p', { class: 'row' }, h('button', { type: 'button', class: 'secondary', id: 'export-data', onclick: act(async () => {
      download(`my-data-${info.brand_id}.json`, await api(b.url, 'GET', '/v1/me/export'));
    }) }, t('exportData')),
    h('button', { type: 'button', class: 'danger', id: 'erase', onclick: act(async () => {
      if (!confirm(t('eraseConfirm', { brand: info.name }))) return null;
      await api(b.url, 'POST', '/v1/me/erasure');
      delete tokens[b.url];
      sessionStorage.setItem('alliance.tokens.v1', JSON.stringify(tokens));
      save(STORE.brands, brands().filter((x) => x.url !== b.url));
      return { text: t('erased', { brand: info.name }), go: '#/brands' };
    }) }, t('erase'))),
    h('p', {}, h('a', { href: '#/brands' }, t('back'))),
  ];
}

// ---------------------------------------------------------------- the page

async function render() {
  document.documentElement.lang = lang;
  document.title = t('title');
  const route = location.hash.slice(1) || (localStorage.getItem(STORE.wallet) && seed ? '/brands' : '/wallet');
  const nav = document.getElementById('nav');
  nav.replaceChildren(h('strong', {}, t('title')), h('a', { href: '#/wallet' }, t('wallet')), h('a', { href: '#/brands' }, t('brands')),
    h('span', { class: 'who' }, h('label', { for: 'lang', class: 'inline' }, t('lang')), ' ',
      h('select', { id: 'lang', onchange: (e) => { lang = e.target.value; t = translator(lang); localStorage.setItem(STORE.lang, lang); render(); } },
        Object.entries(LANGS).map(([code, name]) => h('option', { value: code, selected: code === lang }, name))),
      seed ? h('button', { type: 'button', class: 'secondary', id: 'lock', onclick: () => { seed = null; render(); } }, t('lock')) : null));
  let view;
  try {
    if (!seed && route !== '/wallet') view = walletView();
    else if (route === '/wallet') view = walletView();
    else if (route === '/brands' || route.startsWith('/login')) view = await brandsView();
    else if (route === '/verify') view = verifyView();
    else if (route.startsWith('/brand/')) view = await brandView(Number(route.split('/')[2]));
    else view = await brandsView();
  } catch (err) {
    view = [h('p', { class: 'error', role: 'alert' }, err.message), h('p', {}, h('a', { href: '#/brands' }, t('back')))];
  }
  const main = document.getElementById('main');
  main.replaceChildren(flash ? h('p', { class: flash.kind, role: flash.kind === 'error' ? 'alert' : 'status', id: 'flash' }, flash.text) : '', ...[view].flat(3).filter((x) => x != null && x !== false));
  flash = null;
  main.dataset.ready = route;  // what the tests wait for
}

window.addEventListener('hashchange', render);
render();
