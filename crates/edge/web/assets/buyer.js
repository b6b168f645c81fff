// Buyers' pages: log in / register, the Available Now feed, the live auction of an event, and
// the Won list. Each view takes (main, ctx, ...params) and returns its clean-up function.

import { ApiError, get, post, request, saveSession } from './api.js';
import { Board, now } from './live.js';
import {
  carPhoto, carTitle, countdown, dateTime, fill, h, mileage, money, relative, setText,
} from './format.js';

// ----- log in and register -----

export function loginView(main, ctx) {
  const loginError = h('p', { id: 'login-error', class: 'form-error', role: 'alert', 'data-testid': 'login-error' });
  const regMessage = h('p', { id: 'register-message', class: 'form-error', role: 'alert', 'data-testid': 'register-message' });

  const login = h('form', { id: 'login-form', class: 'card form', novalidate: true, 'aria-labelledby': 'login-heading' },
    h('h1', { id: 'login-heading' }, 'Log in'),
    h('div', { class: 'field' },
      h('label', { for: 'login-email' }, 'Email'),
      h('input', { id: 'login-email', name: 'email', type: 'email', autocomplete: 'username', required: true })),
    h('div', { class: 'field' },
      h('label', { for: 'login-password' }, 'Password'),
      h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true })),
    loginError,
    h('button', { id: 'login-submit', class: 'btn primary wide', type: 'submit' }, 'Log in'));

  const register = h('form', { id: 'register-form', class: 'card form', novalidate: true, 'aria-labelledby': 'register-heading' },
    h('h2', { id: 'register-heading' }, 'New to Gavel? Create an account'),
    h('div', { class: 'field' },
      h('label', { for: 'register-name' }, 'Full name'),
      h('input', { id: 'register-name', name: 'name', autocomplete: 'name', required: true, maxlength: 100 })),
    h('div', { class: 'field' },
      h('label', { for: 'register-email' }, 'Email'),
      h('input', { id: 'register-email', name: 'email', type: 'email', autocomplete: 'email', required: true })),
    h('div', { class: 'field' },
      h('label', { for: 'register-password' }, 'Password'),
      h('input', {
        id: 'register-password', name: 'password', type: 'password', autocomplete: 'new-password',
        required: true, minlength: 8, maxlength: 128, 'aria-describedby': 'register-password-hint',
      }),
      h('small', { id: 'register-password-hint', class: 'hint' }, '8 to 128 characters.')),
    regMessage,
    h('button', { id: 'register-submit', class: 'btn wide', type: 'submit' }, 'Create account'),
    h('p', { class: 'muted small' }, 'New accounts can watch at once; an admin verifies you before your first bid.'));

  async function doLogin(email, password, errorEl, button) {
    button.disabled = true;
    setText(errorEl, '');
    try {
      const r = await post('/api/auth/login', { email: email.trim(), password });
      saveSession(r);
      ctx.loggedIn();
    } catch (e) {
      errorEl.textContent = e.code === 'invalid_credentials' ? 'Wrong email or password.' : e.message;
    } finally {
      button.disabled = false;
    }
  }

  login.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const email = login.querySelector('#login-email').value;
    const password = login.querySelector('#login-password').value;
    if (!email || !password) {
      loginError.textContent = 'Enter your email and password.';
      return;
    }
    doLogin(email, password, loginError, login.querySelector('#login-submit'));
  });

  register.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = register.querySelector('#register-name').value.trim();
    const email = register.querySelector('#register-email').value.trim();
    const password = register.querySelector('#register-password').value;
    if (!name || !email) {
      regMessage.textContent = 'Enter your name and email.';
      return;
    }
    if (password.length < 8 || password.length > 128) {
      regMessage.textContent = 'The password needs 8 to 128 characters.';
      return;
    }
    const button = register.querySelector('#register-submit');
    button.disabled = true;
    setText(regMessage, '');
    try {
      await post('/api/auth/register', { email, password, name });
      button.disabled = false;
      await doLogin(email, password, regMessage, button);
    } catch (e) {
      regMessage.textContent = e.status === 409 ? 'That email is already registered. Log in instead.' : e.message;
      button.disabled = false;
    }
  });

  fill(main, h('div', { class: 'auth' },
    h('div', { class: 'auth-intro' },
      h('img', { src: '/assets/cars/coupe.svg', alt: '', class: 'auth-art' }),
      h('p', { class: 'lead' }, 'Live car auctions. Every bidder sees the same car, the same high bid and the same clock.')),
    h('div', { class: 'auth-forms' }, login, register)));
  main.querySelector('#login-email').focus();
  return () => {};
}

// ----- the Available Now feed -----

export function feedView(main, ctx) {
  const liveList = h('div', { class: 'event-grid', 'data-testid': 'events-live' });
  const soonList = h('div', { class: 'event-grid', 'data-testid': 'events-scheduled' });
  const status = h('p', { class: 'muted', role: 'status' });
  const details = new Map();

  fill(main,
    h('div', { class: 'page-head' },
      h('h1', null, 'Available now'),
      h('p', { class: 'muted' }, 'Live and upcoming auctions. Open one to watch and bid.')),
    status,
    h('section', { 'aria-labelledby': 'live-heading', 'data-testid': 'event-list' },
      h('h2', { id: 'live-heading' }, h('span', { class: 'dot live', 'aria-hidden': 'true' }), 'Live now'),
      liveList),
    h('section', { 'aria-labelledby': 'soon-heading' },
      h('h2', { id: 'soon-heading' }, 'Coming up'),
      soonList));

  function card(e) {
    const d = details.get(e.id);
    const lots = d?.lots ?? [];
    const thumbs = lots.slice(0, 3).map((l) => h('img', { src: carPhoto(l.vehicle), alt: carTitle(l.vehicle), loading: 'lazy' }));
    const isLive = e.status === 'live';
    const register = h('button', { class: 'btn', type: 'button', 'data-testid': 'event-register' }, 'Remind me');
    register.addEventListener('click', async () => {
      register.disabled = true;
      try {
        await post(`/api/events/${e.id}/register`);
        register.textContent = "You're on the list";
        ctx.toast('We will alert you when it starts.');
      } catch (err) {
        register.disabled = false;
        ctx.toast(err.message, 'error');
      }
    });
    return h('article', { class: `event-card ${isLive ? 'is-live' : ''}`, 'data-testid': 'event-card', 'data-event-id': e.id },
      h('div', { class: 'thumbs', 'aria-hidden': thumbs.length ? null : 'true' }, thumbs),
      h('div', { class: 'event-body' },
        h('h3', null, e.name),
        h('p', { class: 'meta' },
          h('span', { class: `chip ${isLive ? 'live' : 'scheduled'}` }, isLive ? 'Live' : 'Scheduled'),
          ` ${e.lanes} ${e.lanes === 1 ? 'lane' : 'lanes'}`,
          lots.length ? ` · ${lots.length} ${lots.length === 1 ? 'car' : 'cars'}` : ''),
        h('p', { class: 'muted small' }, isLive ? `Started ${dateTime(e.starts_at)}` : `Starts ${dateTime(e.starts_at)} (${relative(e.starts_at)})`),
        h('div', { class: 'row' },
          h('a', { class: `btn ${isLive ? 'primary' : ''}`, href: `#/live/${e.id}`, 'data-testid': 'event-enter' }, isLive ? 'Enter auction' : 'Preview'),
          isLive ? null : register)));
  }

  let alive = true;
  async function load() {
    try {
      const [live, soon] = await Promise.all([get('/api/events?status=live'), get('/api/events?status=scheduled')]);
      if (!alive) return;
      await Promise.all([...live, ...soon].filter((e) => !details.has(e.id)).slice(0, 12).map(async (e) => {
        try {
          details.set(e.id, await get(`/api/events/${e.id}`));
        } catch {
          details.set(e.id, null);
        }
      }));
      if (!alive) return;
      fill(liveList, live.length ? live.map(card) : h('p', { class: 'empty' }, 'No auction is live right now.'));
      fill(soonList, soon.length ? soon.map(card) : h('p', { class: 'empty' }, 'Nothing scheduled yet. Check back soon.'));
      setText(status, '');
    } catch (e) {
      if (alive) status.textContent = `Could not load auctions: ${e.message}`;
    }
  }
  load();
  const timer = setInterval(load, 10000);
  return () => {
    alive = false;
    clearInterval(timer);
  };
}

// ----- the live auction -----

const REASONS = {
  stale: 'Another bid landed first.',
  too_low: 'That bid is below the current minimum.',
  already_high: "You're already the high bidder.",
  closed: 'Bidding on this car is closed.',
  paused: 'Bidding is paused on this car. Try again when it resumes.',
  not_verified: 'Your account is not verified yet. An admin must verify it before you can bid.',
  not_found: 'This car is no longer on the block.',
  rate_limited: 'Too many bids at once. Wait a moment, then try again.',
  invalid: 'That bid could not be placed.',
  logged_out: 'You logged out before the bid was answered.',
};

const OUTCOMES = { sold: 'Sold', unsold: 'Not sold', cancelled: 'Withdrawn' };

/** The car part of a lane card, shared with the admin monitor. */
export function carBlock(prefix = '') {
  const els = {
    photo: h('img', { class: 'car-photo', alt: '', 'data-testid': `${prefix}car-photo`, width: 400, height: 200 }),
    notice: h('div', { class: 'rotate-notice', hidden: true, 'data-testid': `${prefix}rotate-notice`, role: 'status' }),
    title: h('h2', { class: 'car-title', 'data-testid': `${prefix}car-title` }),
    mileage: h('dd', { 'data-testid': `${prefix}car-mileage` }),
    vin: h('dd', { class: 'vin', 'data-testid': `${prefix}car-vin` }),
  };
  els.root = h('div', { class: 'car' },
    h('figure', { class: 'photo' }, els.photo, els.notice),
    els.title,
    h('dl', { class: 'specs' }, h('div', null, h('dt', null, 'Mileage'), els.mileage), h('div', null, h('dt', null, 'VIN'), els.vin)));
  els.show = (lot, closing) => {
    const shown = closing?.lot ?? lot;
    const v = shown?.vehicle;
    const src = v ? carPhoto(v) : '/assets/cars/sedan.svg';
    if (els.photo.getAttribute('src') !== src) els.photo.setAttribute('src', src);
    els.photo.alt = v ? carTitle(v) : '';
    els.photo.classList.toggle('empty', !v);
    setText(els.title, v ? carTitle(v) : 'No car on the block');
    setText(els.mileage, v ? mileage(v.mileage) : '—');
    setText(els.vin, v?.vin ?? '—');
    if (closing) {
      els.notice.hidden = false;
      els.notice.className = `rotate-notice ${closing.outcome ?? ''}`;
      setText(els.notice, closing.outcome === 'sold'
        ? `Sold for ${money(closing.amount)}`
        : (OUTCOMES[closing.outcome] ?? 'Closed'));
    } else {
      els.notice.hidden = true;
    }
  };
  return els;
}

/** Time left on a lot, from the server clock estimate; null when it is not running. */
export function remaining(lot, clock) {
  if (!lot) return null;
  if (lot.state === 'paused') return lot.remaining_ms ?? null;
  if (lot.state !== 'open' || lot.ends_at == null) return null;
  return Math.max(0, lot.ends_at - clock.serverNow());
}

/** The clock text and urgency class for a lot. */
export function clockFace(lot, clock) {
  if (!lot) return { text: '—', cls: 'idle' };
  const ms = remaining(lot, clock);
  switch (lot.state) {
    case 'open':
      return { text: countdown(ms), cls: ms <= 5000 ? 'urgent' : ms <= 10000 ? 'soon' : 'ok', ms };
    case 'paused':
      return { text: ms != null ? `Paused · ${countdown(ms)}` : 'Paused', cls: 'paused', ms };
    case 'scheduled':
    case 'draft':
      return { text: 'Opening…', cls: 'idle' };
    case 'cancelled':
      return { text: 'Withdrawn', cls: 'idle' };
    default:
      return { text: 'Closed', cls: 'idle' };
  }
}

function aliasKey(eventId) {
  return `gavel.alias.${eventId}`;
}

export function liveView(main, ctx, eventId) {
  const socket = ctx.socket;
  const clock = socket.clock;
  const lanesEl = h('div', { class: 'lanes', 'data-testid': 'lanes', 'aria-live': 'off' });
  const title = h('h1', { 'data-testid': 'event-name' }, 'Live auction');
  const sub = h('p', { class: 'muted', 'data-testid': 'event-status' });
  const endedEl = h('p', { class: 'notice', hidden: true, 'data-testid': 'event-ended' }, 'This auction has ended. Thanks for bidding!');
  const cards = new Map();
  const lastBid = new Map();
  const acceptedAt = new Map();
  const checking = new Map();
  let event = null;
  let lotsByLane = new Map();
  let myAlias = sessionStorage.getItem(aliasKey(eventId));
  let alive = true;

  fill(main,
    h('div', { class: 'page-head live-head' },
      h('a', { href: '#/', class: 'back' }, '← Available now'),
      title, sub),
    endedEl,
    lanesEl);

  const board = new Board({
    onChange: (lane, bid) => {
      if (bid) learnAlias(bid);
      if (lane == null) renderAll();
      else render(lane);
    },
    onUnknown: (f) => check(f.lot_id, f.version),
    onRotate: (lane) => {
      const ui = cards.get(lane);
      if (ui) disarm(ui);
    },
  });

  function learnAlias(f) {
    lastBid.set(f.lot_id, { amount: f.amount, bidder: f.bidder });
    if (acceptedAt.get(f.lot_id) === f.amount) setAlias(f.bidder);
  }

  function setAlias(alias) {
    if (!alias || alias === myAlias) return;
    myAlias = alias;
    sessionStorage.setItem(aliasKey(eventId), alias);
    renderAll();
  }

  /** A frame about a lot this page does not show (or newer than what it shows): ask REST. */
  function check(lotId, version) {
    if (!lotId || checking.has(lotId)) return;
    checking.set(lotId, setTimeout(async () => {
      const known = board.findLot(lotId);
      if (!known || known.version < version) {
        const r = await request('GET', `/api/lots/${encodeURIComponent(lotId)}`);
        if (alive && r.ok && r.data?.event_id === eventId) board.viewFromRest(r.data);
      }
      setTimeout(() => checking.delete(lotId), 3000);
    }, 1200));
  }

  function laneCard(n) {
    let ui = cards.get(n);
    if (ui) return ui;
    const car = carBlock();
    ui = {
      n,
      car,
      armed: null,
      busy: false,
      stateChip: h('span', { class: 'chip', 'data-testid': 'lot-state' }),
      position: h('span', { class: 'muted small', 'data-testid': 'lot-position' }),
      clock: h('div', { class: 'countdown', role: 'timer', 'aria-live': 'off', 'data-testid': 'countdown' }),
      barFill: h('span'),
      high: h('span', { class: 'high', 'data-testid': 'high' }),
      bidder: h('span', { class: 'bidder', 'data-testid': 'bidder' }),
      count: h('span', { class: 'muted small', 'data-testid': 'bid-count' }),
      leading: h('span', { class: 'chip leading', hidden: true, 'data-testid': 'leading' }, "You're the high bidder"),
      bidButton: h('button', { class: 'btn primary bid', type: 'button', 'data-testid': 'bid-button' }, 'Bid'),
      confirm: h('button', { class: 'btn confirm', type: 'button', 'data-testid': 'bid-confirm' }, 'Confirm'),
      cancel: h('button', { class: 'btn ghost', type: 'button', 'data-testid': 'bid-cancel' }, 'Cancel'),
      feedback: h('div', { class: 'feedback', role: 'status', 'aria-live': 'polite', 'data-testid': 'bid-feedback' }),
      next: h('p', { class: 'muted small', 'data-testid': 'lane-upnext' }),
    };
    ui.confirmRow = h('div', { class: 'confirm-row', hidden: true }, ui.confirm, ui.cancel);
    ui.bar = h('div', { class: 'bar', 'aria-hidden': 'true' }, ui.barFill);
    ui.bidButton.addEventListener('click', () => arm(ui));
    ui.confirm.addEventListener('click', () => confirm(ui));
    ui.cancel.addEventListener('click', () => {
      disarm(ui);
      ui.bidButton.focus();
    });
    ui.root = h('section', { class: 'lane', 'data-testid': `lane-${n}`, 'data-lane': n, 'aria-labelledby': `lane-${n}-label` },
      h('header', { class: 'lane-head' },
        h('span', { class: 'lane-no', id: `lane-${n}-label` }, `Lane ${n}`),
        ui.position, ui.stateChip),
      car.root,
      h('div', { class: 'clock-row' }, ui.clock, ui.bar),
      h('div', { class: 'bid-row' },
        h('div', null, h('div', { class: 'label' }, 'High bid'), ui.high),
        h('div', { class: 'right' }, ui.bidder, ui.count)),
      ui.leading,
      h('div', { class: 'actions' }, ui.bidButton, ui.confirmRow),
      ui.feedback,
      ui.next);
    cards.set(n, ui);
    const after = [...cards.keys()].filter((k) => k > n).sort((a, b) => a - b)[0];
    if (after != null) lanesEl.insertBefore(ui.root, cards.get(after).root);
    else lanesEl.append(ui.root);
    return ui;
  }

  function renderAll() {
    if (event) for (let n = 1; n <= event.lanes; n += 1) board.lane(n);
    for (const l of board.list()) render(l.lane);
  }

  function render(n) {
    const l = board.lane(n);
    const ui = laneCard(n);
    const lot = l.lot;
    const closing = l.closing;
    const shown = closing ? null : lot;
    ui.car.show(lot, closing);
    ui.root.classList.toggle('closing', !!closing);
    ui.root.classList.toggle('done', !lot && !closing);
    setText(ui.stateChip, closing ? (OUTCOMES[closing.outcome] ?? 'Closed') : lot ? stateLabel(lot.state) : 'Finished');
    ui.stateChip.className = `chip ${closing ? closing.outcome : lot?.state ?? 'closed'}`;
    setText(ui.position, lot && !closing ? `Lot ${lot.position}` : '');
    setText(ui.high, shown?.high != null ? money(shown.high) : shown ? `Opens at ${money(shown.min_next)}` : '—');
    setText(ui.bidder, shown?.bidder ? (shown.bidder === myAlias ? 'You' : shown.bidder) : shown ? 'No bids yet' : '');
    setText(ui.count, shown ? `${shown.bid_count ?? 0} ${shown.bid_count === 1 ? 'bid' : 'bids'}` : '');
    const leading = !!(shown?.bidder && myAlias && shown.bidder === myAlias);
    ui.leading.hidden = !leading;
    ui.root.classList.toggle('leading', leading);
    const biddable = !!shown && shown.state === 'open';
    ui.bidButton.disabled = !biddable || ui.busy;
    setText(ui.bidButton, shown ? (shown.state === 'paused' ? 'Paused' : `Bid ${money(shown.min_next)}`) : 'No car');
    ui.bidButton.setAttribute('aria-label', shown ? `Bid ${money(shown.min_next)} on ${carTitle(shown.vehicle)}` : 'No car to bid on');
    if (ui.armed && (!shown || ui.armed.lot_id !== shown.lot_id || shown.state !== 'open')) disarm(ui);
    const upcoming = (lotsByLane.get(n) ?? []).filter((x) => x.state === 'scheduled' && (!lot || x.position > lot.position) && x.lot_id !== lot?.lot_id);
    setText(ui.next, !lot && !closing ? 'This lane is finished.' : upcoming.length ? `Up next in this lane: ${upcoming.length} more ${upcoming.length === 1 ? 'car' : 'cars'}` : lot ? 'Last car in this lane.' : '');
    tick(ui, l);
    endedEl.hidden = !(event && board.list().length && board.list().every((x) => !x.lot && !x.closing));
  }

  function stateLabel(s) {
    return { open: 'Open', paused: 'Paused', scheduled: 'Up next', draft: 'Draft', closed: 'Closed', cancelled: 'Withdrawn' }[s] ?? s;
  }

  function tick(ui, l) {
    const lot = l.closing ? null : l.lot;
    const face = clockFace(lot, clock);
    setText(ui.clock, face.text);
    ui.clock.className = `countdown ${face.cls}`;
    const total = ((lot?.bid_count ?? 0) > 0 ? event?.reset_seconds : event?.lot_seconds) ?? 30;
    const frac = face.ms != null ? Math.max(0, Math.min(1, face.ms / (total * 1000))) : 0;
    ui.barFill.style.width = `${(frac * 100).toFixed(1)}%`;
    ui.bar.className = `bar ${face.cls}`;
  }

  function arm(ui, amount) {
    const lot = board.lane(ui.n).lot;
    if (!lot || lot.state !== 'open' || board.lane(ui.n).closing) return;
    const a = Math.max(amount ?? 0, lot.min_next);
    ui.armed = { lot_id: lot.lot_id, amount: a, seen_high: lot.high ?? null, title: carTitle(lot.vehicle) };
    setText(ui.confirm, `Confirm ${money(a)}`);
    ui.confirm.setAttribute('aria-label', `Confirm bid of ${money(a)} on ${ui.armed.title}`);
    ui.bidButton.hidden = true;
    ui.confirmRow.hidden = false;
    ui.confirm.focus();
    clearTimeout(ui.armTimer);
    ui.armTimer = setTimeout(() => disarm(ui), 8000);
  }

  function disarm(ui) {
    clearTimeout(ui.armTimer);
    ui.armed = null;
    ui.confirmRow.hidden = true;
    ui.bidButton.hidden = false;
  }

  function confirm(ui) {
    const a = ui.armed;
    if (!a) return;
    disarm(ui);
    ui.bidButton.focus();
    place(ui, a);
  }

  async function place(ui, a) {
    ctx.clearOutbid(a.lot_id);
    ui.busy = true;
    ui.bidButton.disabled = true;
    feedback(ui, 'pending', `Placing your bid of ${money(a.amount)}…`);
    const r = await socket.bid(a.lot_id, a.amount, a.seen_high);
    ui.busy = false;
    if (!alive) return;
    render(ui.n);
    if (r.status === 'accepted') {
      acceptedAt.set(a.lot_id, a.amount);
      const seen = lastBid.get(a.lot_id);
      if (seen && seen.amount === a.amount) setAlias(seen.bidder);
      feedback(ui, 'ok', `Bid accepted: you're the high bidder at ${money(a.amount)}.`);
    } else if (r.status === 'rejected') {
      const lot = board.findLot(a.lot_id);
      const retry = r.retryable ? Math.max(r.min_next ?? 0, lot?.lot_id === a.lot_id && lot.state === 'open' ? lot.min_next : 0) : 0;
      const hint = (r.reason === 'stale' || r.reason === 'too_low') && r.high != null ? ` The high bid is now ${money(r.high)}.` : '';
      const text = (REASONS[r.reason] ?? r.message ?? 'Bid refused.') + hint;
      feedback(ui, 'error', text, retry > 0 ? { amount: retry, lot_id: a.lot_id, seen_high: r.high ?? lot?.high ?? null } : null);
    } else {
      feedback(ui, 'warn', 'No answer yet. Your bid may still count: watch the high bid.');
    }
  }

  function feedback(ui, kind, text, retry) {
    clearTimeout(ui.feedbackTimer);
    ui.feedback.className = `feedback ${kind}`;
    fill(ui.feedback, h('span', null, text));
    if (retry) {
      const b = h('button', { class: 'btn primary small-btn', type: 'button', 'data-testid': 'bid-retry' }, `Bid ${money(retry.amount)}`);
      b.addEventListener('click', () => {
        const lot = board.lane(ui.n).lot;
        if (!lot || lot.lot_id !== retry.lot_id || lot.state !== 'open') {
          feedback(ui, 'error', REASONS.closed);
          return;
        }
        // The price may have moved again while this was on screen: never offer less than now.
        place(ui, { lot_id: retry.lot_id, amount: Math.max(retry.amount, lot.min_next), seen_high: lot.high ?? null });
      });
      ui.feedback.append(' ', b);
    }
    if (kind === 'ok') ui.feedbackTimer = setTimeout(() => fill(ui.feedback), 6000);
  }

  function onFrame(f) {
    if (f.type === 'snapshot') {
      if (f.event_id !== eventId) return;
      board.apply(f);
      return;
    }
    if (f.type === 'error' && f.code === 'not_found') {
      sub.textContent = 'This auction does not exist or is not open to buyers.';
      return;
    }
    if (f.type === 'car_rotate' && f.event_id !== eventId) return;
    if (board.apply(f)) refreshStatus();
  }

  // A lot of this event is moving while the header still says "Scheduled" (the admin started
  // it early, or it went live while the page was open): fetch the event again, at most every 2 s,
  // instead of waiting for the 30-second refresh.
  let statusCheckedAt = 0;
  function refreshStatus() {
    if (!event || event.status === 'live' || event.status === 'closed') return;
    if (now() - statusCheckedAt < 2000) return;
    statusCheckedAt = now();
    loadEvent();
  }

  // The outbid banner's button lands here when this page shows the lot.
  function offer(lotId, amount) {
    for (const ui of cards.values()) {
      const lot = board.lane(ui.n).lot;
      if (lot?.lot_id === lotId) {
        ui.root.scrollIntoView({ block: 'center', behavior: 'smooth' });
        arm(ui, amount);
        return true;
      }
    }
    return false;
  }

  async function loadEvent() {
    try {
      event = await get(`/api/events/${eventId}`);
      if (!alive) return;
      setText(title, event.name);
      const when = event.status === 'scheduled' ? ` · starts ${dateTime(event.starts_at)} (${relative(event.starts_at)})` : '';
      setText(sub, `${event.status === 'live' ? 'Live' : event.status[0].toUpperCase() + event.status.slice(1)} · ${event.lanes} ${event.lanes === 1 ? 'lane' : 'lanes'}${when}`);
      lotsByLane = new Map();
      for (const lot of event.lots ?? []) {
        if (!lotsByLane.has(lot.lane)) lotsByLane.set(lot.lane, []);
        lotsByLane.get(lot.lane).push(lot);
      }
      renderAll();
    } catch (e) {
      if (alive) sub.textContent = e instanceof ApiError && e.status === 404 ? 'No such auction.' : `Could not load the auction: ${e.message}`;
    }
  }

  const off = ctx.onFrame(onFrame);
  ctx.setOffer(offer, (lotId) => board.findLot(lotId));
  socket.subscribe(eventId);
  loadEvent();
  const eventTimer = setInterval(loadEvent, 30000);
  const ticker = setInterval(() => {
    for (const ui of cards.values()) tick(ui, board.lane(ui.n));
  }, 100);

  return () => {
    alive = false;
    off();
    ctx.setOffer(null, null);
    socket.unsubscribe(eventId);
    clearInterval(ticker);
    clearInterval(eventTimer);
    for (const ui of cards.values()) {
      clearTimeout(ui.armTimer);
      clearTimeout(ui.feedbackTimer);
    }
    for (const l of board.lanes.values()) clearTimeout(l.closingTimer);
    for (const t of checking.values()) clearTimeout(t);
  };
}

// ----- the Won list -----

export function wonView(main) {
  const list = h('ul', { class: 'won-list', 'data-testid': 'won-list', 'aria-busy': 'true' });
  fill(main,
    h('div', { class: 'page-head' },
      h('h1', null, 'Cars you won'),
      h('p', { class: 'muted' }, 'Bring your ID and the lot number to pickup.')),
    list);
  let alive = true;
  get('/api/me/won').then((won) => {
    if (!alive) return;
    list.removeAttribute('aria-busy');
    if (!won.length) {
      fill(list, h('li', { class: 'empty' }, 'No wins yet. When you win a car it shows up here with pickup instructions.'));
      return;
    }
    fill(list, won.map((w) => h('li', { class: 'won-item card', 'data-testid': 'won-item', 'data-lot-id': w.lot_id },
      h('img', { src: carPhoto(w.vehicle), alt: carTitle(w.vehicle), width: 200, height: 100 }),
      h('div', { class: 'won-body' },
        h('h2', null, carTitle(w.vehicle)),
        h('p', { class: 'won-amount' }, h('span', { 'data-testid': 'won-amount' }, money(w.amount)), h('span', { class: 'muted small' }, ` · won ${dateTime(w.decided_at)}`)),
        h('p', { class: 'muted small' }, `VIN ${w.vehicle?.vin ?? '—'} · ${mileage(w.vehicle?.mileage)}`),
        h('div', { class: 'pickup' }, h('h3', null, 'Pickup'), h('p', { 'data-testid': 'won-pickup' }, w.pickup || 'The seller will contact you.'))))));
  }).catch((e) => {
    if (alive) fill(list, h('li', { class: 'empty' }, `Could not load your wins: ${e.message}`));
  });
  return () => {
    alive = false;
  };
}
