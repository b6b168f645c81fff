// Gavel's web client: the shell (header, banners, toasts), the hash router and the one live
// socket. Read this file first, then live.js (clock, socket, version rules), buyer.js, admin.js.
//
// Routes (hash routing, so the server only serves `/`):
//   #/login  #/ (Available now)  #/live/<event_id>  #/won
//   #/admin/users  #/admin/inventory  #/admin/events  #/admin/events/<event_id>
//   #/admin/monitor/<event_id>  #/admin/lots/<sold|unsold|cancelled>
//
// Stable handles for browser tests (ids are unique on the page; data-testid may repeat per lane
// or row, scope them by the lane or row):
//
// Shell
//   #main  #nav-feed  #nav-won  #nav-admin  #user-name  #logout
//   [data-testid=conn-status]        "Live" | "Connecting…" | "Reconnecting…" | "Offline"
//   [data-testid=unverified-banner]  shown while the account is not verified
//   [data-testid=outbid-banner]      outbid notice; [data-testid=outbid-bid] offers min_next,
//                                    [data-testid=outbid-dismiss]
//   [data-testid=won-notice]         won notice, [data-testid=won-notice-link] → #/won
//   [data-testid=toast]              transient messages
// Log in / register (#/login)
//   #login-email  #login-password  #login-submit  #login-error
//   #register-name  #register-email  #register-password  #register-submit  #register-message
// Available now (#/)
//   [data-testid=event-list]  [data-testid=events-live]  [data-testid=events-scheduled]
//   [data-testid=event-card][data-event-id=…] with [data-testid=event-enter],
//   [data-testid=event-register] (scheduled events: start alert)
// Live auction (#/live/<id>)
//   [data-testid=event-name]  [data-testid=event-status]  [data-testid=event-ended]
//   [data-testid=lanes] > [data-testid=lane-1], [data-testid=lane-2], … each with
//     [data-testid=car-photo] [data-testid=car-title] [data-testid=car-mileage] [data-testid=car-vin]
//     [data-testid=lot-state] [data-testid=lot-position] [data-testid=rotate-notice]
//     [data-testid=countdown] [data-testid=high] [data-testid=bidder] [data-testid=bid-count]
//     [data-testid=leading] [data-testid=bid-button] [data-testid=bid-confirm]
//     [data-testid=bid-cancel] [data-testid=bid-feedback] (class ok | error | warn | pending)
//     [data-testid=bid-retry] (inside bid-feedback after stale / too_low / rate_limited)
//     [data-testid=lane-upnext]
// Won (#/won)
//   [data-testid=won-list] > [data-testid=won-item][data-lot-id=…] with [data-testid=won-amount],
//   [data-testid=won-pickup]
// Admin
//   [data-testid=admin-tab-users|admin-tab-inventory|admin-tab-events|admin-tab-lots]
//   users:     [data-testid=pending-users] > [data-testid=pending-user][data-user-id=…]
//              with [data-testid=user-verify]; [data-testid=users-refresh]
//   inventory: #vendor-name #vendor-contact #vendor-submit [data-testid=vendor-form-status]
//              #vehicle-vendor #vehicle-vin #vehicle-year #vehicle-mileage #vehicle-make
//              #vehicle-model #vehicle-trim #vehicle-photo #vehicle-photo-url #vehicle-pickup
//              #vehicle-submit [data-testid=vehicle-form-status]
//   events:    #event-name #event-starts-at #event-lanes #event-lot-seconds #event-reset-seconds
//              #event-submit [data-testid=event-form-status] [data-testid=admin-events] >
//              [data-testid=admin-event][data-event-id=…]
//              with [data-testid=event-manage]
//   one event: [data-testid=manage-event-status] #event-schedule #event-start (click twice)
//              #event-monitor #lot-vehicle #lot-lane #lot-position #lot-start-price
//              #lot-reserve #lot-submit [data-testid=lot-form-status] [data-testid=event-lane-N]
//   monitor:   [data-testid=monitor] [data-testid=monitor-status] [data-testid=monitor-clients]
//              [data-testid=monitor-lane-N] with [data-testid=countdown] [data-testid=high]
//              [data-testid=bids-per-minute] [data-testid=lot-state] [data-testid=lot-pause]
//              [data-testid=lot-resume] [data-testid=lot-cancel] (click twice);
//              [data-testid=monitor-log]
//   results:   [data-testid=outcome-sold|outcome-unsold|outcome-cancelled]
//              [data-testid=lots-list] > [data-testid=lot-row][data-lot-id=…] with
//              [data-testid=relist-event] [data-testid=relist-lane] [data-testid=relist-position]
//              [data-testid=relist-submit]
// Every admin form `x` reports success or the server's message in [data-testid=x-form-status]
// (class ok | error); actions elsewhere report in the toast.

import {
  clearSession, get, isAdmin, loadSession, request, session, setUnauthorizedHandler, setUser,
} from './api.js';
import { LiveSocket } from './live.js';
import { feedView, liveView, loginView, wonView } from './buyer.js';
import { adminView } from './admin.js';
import { carTitle, fill, h, money, setText } from './format.js';

const $ = (sel) => document.querySelector(sel);
const main = $('#main');
const frameHandlers = new Set();
let cleanup = () => {};
let offer = null;
let lotLookup = null;
let afterLogin = null;

const socket = new LiveSocket({
  onFrame: (f) => {
    for (const fn of [...frameHandlers]) fn(f);
    if (f.type === 'outbid') showOutbid(f);
    else if (f.type === 'won') showWon(f);
    else if (f.type === 'error' && f.code === 'rate_limited') toast('Slow down: too many messages.', 'error');
  },
  onStatus: (s) => {
    const el = $('[data-testid=conn-status]');
    el.dataset.state = s;
    setText(el, { live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', offline: 'Offline' }[s] ?? s);
  },
  onAuthLost: () => loggedOut('Your session ended. Please log in again.'),
});

// ----- shared with the views -----

const ctx = {
  socket,
  toast,
  go,
  loggedIn,
  onFrame(fn) {
    frameHandlers.add(fn);
    return () => frameHandlers.delete(fn);
  },
  setOffer(fn, lookup) {
    offer = fn;
    lotLookup = lookup;
  },
  clearOutbid(lotId) {
    const b = $('[data-testid=outbid-banner]');
    if (!lotId || b.dataset.lotId === lotId) b.hidden = true;
  },
};

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

let toastTimer;
function toast(text, kind = 'info') {
  const t = $('[data-testid=toast]');
  t.className = `toast ${kind}`;
  setText(t, text);
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    t.hidden = true;
  }, kind === 'error' ? 7000 : 4000);
}

// ----- notices that come on any page -----

function showOutbid(f) {
  const b = $('[data-testid=outbid-banner]');
  const lot = lotLookup?.(f.lot_id);
  b.dataset.lotId = f.lot_id;
  const bid = h('button', { class: 'btn primary', type: 'button', 'data-testid': 'outbid-bid' }, `Bid ${money(f.min_next)}`);
  const dismiss = h('button', { class: 'btn ghost', type: 'button', 'data-testid': 'outbid-dismiss', 'aria-label': 'Dismiss' }, 'Dismiss');
  bid.addEventListener('click', async () => {
    b.hidden = true;
    if (offer?.(f.lot_id, f.min_next)) return;
    // Not on this lot's page: open its auction.
    const r = await request('GET', `/api/lots/${encodeURIComponent(f.lot_id)}`);
    if (r.ok && r.data?.event_id) go(`#/live/${r.data.event_id}`);
  });
  dismiss.addEventListener('click', () => {
    b.hidden = true;
  });
  fill(b,
    h('div', null,
      h('strong', null, "You've been outbid"),
      h('span', null, ` on ${lot ? carTitle(lot.vehicle) : 'a car you bid on'}: your ${money(f.your_bid)}, high bid now ${money(f.high)}.`)),
    h('div', { class: 'row' }, bid, dismiss));
  b.hidden = false;
}

function showWon(f) {
  const n = $('[data-testid=won-notice]');
  const lot = lotLookup?.(f.lot_id);
  ctx.clearOutbid(f.lot_id);
  const close = h('button', { class: 'btn ghost', type: 'button', 'aria-label': 'Dismiss' }, 'Dismiss');
  close.addEventListener('click', () => {
    n.hidden = true;
  });
  fill(n,
    h('div', null,
      h('strong', null, `You won ${lot ? carTitle(lot.vehicle) : 'a car'} for ${money(f.amount)}!`),
      f.pickup ? h('span', null, ` Pickup: ${f.pickup}`) : null),
    h('div', { class: 'row' }, h('a', { class: 'btn primary', href: '#/won', 'data-testid': 'won-notice-link' }, 'See your cars'), close));
  n.hidden = false;
}

// ----- session -----

async function loggedIn() {
  paintHeader();
  socket.start();
  const next = afterLogin ?? '#/';
  afterLogin = null;
  go(next);
}

function loggedOut(message) {
  socket.stop();
  clearSession();
  paintHeader();
  $('[data-testid=outbid-banner]').hidden = true;
  $('[data-testid=won-notice]').hidden = true;
  if (message) toast(message, 'error');
  if (!location.hash.startsWith('#/login')) {
    afterLogin = location.hash.startsWith('#/') ? location.hash : null;
    go('#/login');
  } else route();
}

function paintHeader() {
  const user = session.user;
  $('#nav').hidden = !user;
  $('#who').hidden = !user;
  $('#nav-admin').hidden = !isAdmin();
  setText($('#user-name'), user?.name ?? '');
  $('[data-testid=unverified-banner]').hidden = !user || user.verified || user.role === 'admin';
  $('[data-testid=conn-status]').hidden = !user;
}

// ----- the router -----

const ROUTES = [
  [/^#\/login$/, () => loginView(main, ctx), { open: true }],
  [/^(?:#\/?)?$|^#\/events$/, () => feedView(main, ctx)],
  [/^#\/live\/([0-9a-fA-F-]{36})$/, (m) => liveView(main, ctx, m[1].toLowerCase())],
  [/^#\/won$/, () => wonView(main, ctx)],
  [/^#\/admin(?:\/(users|inventory|events|lots))?\/?$/, (m) => adminView(main, ctx, m[1] ?? 'users'), { admin: true }],
  [/^#\/admin\/events\/([0-9a-fA-F-]{36})$/, (m) => adminView(main, ctx, 'events', m[1].toLowerCase()), { admin: true }],
  [/^#\/admin\/monitor\/([0-9a-fA-F-]{36})$/, (m) => adminView(main, ctx, 'monitor', m[1].toLowerCase()), { admin: true }],
  [/^#\/admin\/lots\/(sold|unsold|cancelled)$/, (m) => adminView(main, ctx, 'lots', m[1]), { admin: true }],
];

function route() {
  const hash = location.hash;
  // In-page anchors (not "#/…") are not routes.
  if (hash && !hash.startsWith('#/')) return;
  let found = null;
  for (const [re, view, opts] of ROUTES) {
    const m = re.exec(hash);
    if (m) {
      found = { m, view, opts: opts ?? {} };
      break;
    }
  }
  cleanup();
  cleanup = () => {};
  ctx.setOffer(null, null);
  if (!found) {
    fill(main, h('div', { class: 'card empty' }, h('h1', null, 'Page not found'), h('p', null, h('a', { href: '#/' }, 'Go to Available now'))));
    return;
  }
  if (!found.opts.open && !session.token) {
    afterLogin = hash;
    go('#/login');
    return;
  }
  if (found.opts.open && session.token) {
    go('#/');
    return;
  }
  if (found.opts.admin && !isAdmin()) {
    fill(main, h('div', { class: 'card empty' }, h('h1', null, 'Admins only'), h('p', null, 'Your account cannot open this page.')));
    return;
  }
  for (const a of document.querySelectorAll('#nav a')) {
    const active = hash.startsWith(a.getAttribute('href')) && (a.getAttribute('href') !== '#/' || !/^#\/(won|admin)/.test(hash));
    if (active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  cleanup = found.view(found.m) ?? (() => {});
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

// ----- start -----

async function start() {
  setUnauthorizedHandler(() => loggedOut('Your session ended. Please log in again.'));
  $('#logout').addEventListener('click', () => loggedOut());
  $('.skip').addEventListener('click', (e) => {
    e.preventDefault();
    main.focus();
  });
  window.addEventListener('hashchange', route);
  if (loadSession()) {
    paintHeader();
    socket.start();
    // Refresh role and verification (an admin may have verified this buyer since).
    get('/api/me').then((u) => {
      setUser(u);
      paintHeader();
    }).catch(() => {});
  } else {
    paintHeader();
  }
  // Pick up a verification while the page stays open.
  setInterval(() => {
    if (session.token && session.user && !session.user.verified) {
      get('/api/me').then((u) => {
        setUser(u);
        paintHeader();
      }).catch(() => {});
    }
  }, 30000);
  route();
}

start();
