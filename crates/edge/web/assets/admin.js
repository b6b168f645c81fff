// Admins' pages: verify buyers, onboard vendors and vehicles, build and start events, watch the
// live monitor (REST poll every 2 s plus the WebSocket) with lot controls, and sold / unsold /
// cancelled lists with re-listing. The API has no list of vendors, vehicles or draft events, so
// the ones created in this browser are remembered locally to pick from (an id can always be
// pasted instead).

import { get, post, request } from './api.js';
import { Board } from './live.js';
import { carBlock, clockFace } from './buyer.js';
import {
  carTitle, dateTime, field, fill, h, mileage, money, parseDollars, relative, setText,
  shortId, toLocalInput,
} from './format.js';

const CARS = ['sedan', 'suv', 'pickup', 'hatchback', 'coupe', 'van', 'wagon', 'convertible'];
const STORE = 'gavel.admin';

function remembered() {
  try {
    const s = JSON.parse(localStorage.getItem(STORE) ?? '{}');
    return { vendors: s.vendors ?? [], vehicles: s.vehicles ?? [], events: s.events ?? [] };
  } catch {
    return { vendors: [], vehicles: [], events: [] };
  }
}

function remember(kind, item) {
  const s = remembered();
  s[kind] = [item, ...s[kind].filter((x) => x.id !== item.id)].slice(0, 50);
  try {
    localStorage.setItem(STORE, JSON.stringify(s));
  } catch {
    // No storage: nothing to pick from later, ids can still be pasted.
  }
}

function datalist(id, items, label) {
  return h('datalist', { id }, items.map((x) => h('option', { value: x.id }, label(x))));
}

/** A button that asks once more before it acts ("Cancel lot" → "Really cancel?"). */
function twoStep(label, confirmLabel, props, action) {
  const b = h('button', { type: 'button', class: 'btn', ...props }, label);
  let armed = false;
  let timer;
  b.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      b.textContent = confirmLabel;
      b.classList.add('danger');
      b.setAttribute('data-armed', 'true');
      timer = setTimeout(() => {
        armed = false;
        b.textContent = label;
        b.classList.remove('danger');
        b.removeAttribute('data-armed');
      }, 5000);
      return;
    }
    clearTimeout(timer);
    armed = false;
    b.textContent = label;
    b.classList.remove('danger');
    b.removeAttribute('data-armed');
    await action(b);
  });
  return b;
}

/** Runs an admin action with the button disabled; reports success or the server's message. */
async function act(ctx, button, fn, ok) {
  if (button) button.disabled = true;
  try {
    const r = await fn();
    if (ok) ctx.toast(typeof ok === 'function' ? ok(r) : ok);
    return r;
  } catch (e) {
    ctx.toast(e.message, 'error');
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

function form(id, title, fields, submitLabel, onSubmit) {
  const status = h('p', { class: 'form-status', role: 'status', 'data-testid': `${id}-form-status` });
  const submit = h('button', { id: `${id}-submit`, class: 'btn primary', type: 'submit' }, submitLabel);
  const f = h('form', { id: `${id}-form`, class: 'card form', novalidate: true, 'aria-labelledby': `${id}-heading` },
    h('h2', { id: `${id}-heading` }, title), fields, status, submit);
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.className = 'form-status';
    setText(status, '');
    submit.disabled = true;
    try {
      const msg = await onSubmit(f);
      status.classList.add('ok');
      setText(status, msg ?? 'Saved.');
    } catch (e) {
      status.classList.add('error');
      setText(status, e.message);
    } finally {
      submit.disabled = false;
    }
  });
  return f;
}

const bids = (n) => `${n ?? 0} ${n === 1 ? 'bid' : 'bids'}`;

const val = (root, id) => root.querySelector(`#${id}`).value.trim();

function needInt(text, what, min = 0) {
  if (!/^\d+$/.test(text) || Number(text) < min) throw new Error(`${what} must be a whole number${min ? ` of at least ${min}` : ''}.`);
  return Number(text);
}

function needDollars(text, what, allowZero = false) {
  const c = parseDollars(text);
  if (c == null || (!allowZero && c <= 0)) throw new Error(`${what} must be an amount in dollars, like 12500 or 12,500.00.`);
  return c;
}

// ----- the admin shell -----

const SECTIONS = [
  ['users', 'Buyers to verify'],
  ['inventory', 'Vendors & vehicles'],
  ['events', 'Events'],
  ['lots', 'Results'],
];

export function adminView(main, ctx, section = 'users', param = null) {
  const body = h('div', { class: 'admin-body' });
  const tab = section === 'monitor' ? 'events' : section;
  fill(main,
    h('div', { class: 'page-head' }, h('h1', null, 'Admin')),
    h('nav', { class: 'tabs', 'aria-label': 'Admin sections' },
      SECTIONS.map(([key, label]) => h('a', {
        href: `#/admin/${key}`, class: `tab ${key === tab ? 'active' : ''}`,
        'aria-current': key === tab ? 'page' : null, 'data-testid': `admin-tab-${key}`,
      }, label))),
    body);
  switch (section) {
    case 'inventory': return inventory(body, ctx);
    case 'events': return param ? manageEvent(body, ctx, param) : events(body, ctx);
    case 'monitor': return monitor(body, ctx, param);
    case 'lots': return outcomes(body, ctx, param ?? 'sold');
    default: return users(body, ctx);
  }
}

// ----- buyers to verify -----

function users(box, ctx) {
  const list = h('tbody', { 'data-testid': 'pending-users' });
  const empty = h('p', { class: 'empty', hidden: true }, 'No one is waiting. New buyers appear here after they register.');
  const refresh = h('button', { class: 'btn ghost', type: 'button', 'data-testid': 'users-refresh' }, 'Refresh');
  fill(box, h('section', { class: 'card' },
    h('div', { class: 'row spread' }, h('h2', null, 'Buyers waiting for verification'), refresh),
    h('div', { class: 'table-wrap' }, h('table', null,
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Email'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Action')))),
      list)),
    empty));
  async function load() {
    try {
      const us = await get('/api/admin/users?verified=false');
      empty.hidden = us.length > 0;
      fill(list, us.map((u) => {
        const b = h('button', { class: 'btn primary', type: 'button', 'data-testid': 'user-verify', 'data-user-id': u.id, 'aria-label': `Verify ${u.name}` }, 'Verify');
        const row = h('tr', { 'data-testid': 'pending-user', 'data-user-id': u.id },
          h('td', null, u.name), h('td', null, u.email), h('td', { class: 'right' }, b));
        b.addEventListener('click', async () => {
          const r = await act(ctx, b, () => post(`/api/admin/users/${u.id}/verify`), `${u.name} can bid now.`);
          if (r !== undefined) {
            row.remove();
            empty.hidden = list.children.length > 0;
          }
        });
        return row;
      }));
    } catch (e) {
      ctx.toast(e.message, 'error');
    }
  }
  refresh.addEventListener('click', load);
  load();
  return () => {};
}

// ----- vendors and vehicles -----

function inventory(box, ctx) {
  const vendorForm = form('vendor', 'New vendor', [
    field('Name', 'vendor-name', { required: true, autocomplete: 'organization' }),
    field('Contact', 'vendor-contact', { required: true }, 'Email or phone of the person who hands over the cars.'),
  ], 'Add vendor', async (f) => {
    const name = val(f, 'vendor-name');
    const contact = val(f, 'vendor-contact');
    if (!name || !contact) throw new Error('Enter the vendor name and a contact.');
    const v = await post('/api/admin/vendors', { name, contact });
    remember('vendors', { id: v.id, name: v.name });
    f.reset();
    vehicleForm.querySelector('#vehicle-vendor').value = v.id;
    refreshLists();
    return `Vendor ${v.name} added (id ${v.id}).`;
  });

  const vehicleForm = form('vehicle', 'New vehicle', [
    field('Vendor id', 'vehicle-vendor', { required: true, list: 'vendor-options', autocomplete: 'off' }, 'Pick a vendor added here, or paste its id.'),
    h('div', { class: 'grid-3' },
      field('VIN', 'vehicle-vin', { required: true, maxlength: 17, autocapitalize: 'characters', spellcheck: 'false' }),
      field('Year', 'vehicle-year', { required: true, type: 'number', inputmode: 'numeric', min: 1900, max: 2100 }),
      field('Mileage', 'vehicle-mileage', { required: true, type: 'number', inputmode: 'numeric', min: 0 })),
    h('div', { class: 'grid-3' },
      field('Make', 'vehicle-make', { required: true }),
      field('Model', 'vehicle-model', { required: true }),
      field('Trim', 'vehicle-trim', {})),
    h('div', { class: 'grid-2' },
      field('Illustration', 'vehicle-photo', { tag: 'select', options: CARS.map((c) => [`/assets/cars/${c}.svg`, c[0].toUpperCase() + c.slice(1)]) }),
      field('More photo URLs', 'vehicle-photo-url', {}, 'Optional, comma-separated. Only same-site paths (/…) display in the app.')),
    field('Pickup instructions', 'vehicle-pickup', { tag: 'textarea', rows: 3, required: true }, 'Shown to the winner.'),
  ], 'Add vehicle', async (f) => {
    const vendorId = val(f, 'vehicle-vendor');
    if (!vendorId) throw new Error('Pick or paste a vendor id.');
    const vin = val(f, 'vehicle-vin').toUpperCase();
    if (!vin) throw new Error('Enter the VIN.');
    const make = val(f, 'vehicle-make');
    const model = val(f, 'vehicle-model');
    if (!make || !model) throw new Error('Enter the make and model.');
    const extra = val(f, 'vehicle-photo-url').split(',').map((s) => s.trim()).filter(Boolean);
    const body = {
      vendor_id: vendorId, vin, make, model,
      year: needInt(val(f, 'vehicle-year'), 'Year', 1900),
      trim: val(f, 'vehicle-trim'),
      mileage: needInt(val(f, 'vehicle-mileage'), 'Mileage'),
      photos: [val(f, 'vehicle-photo'), ...extra],
      pickup: val(f, 'vehicle-pickup'),
    };
    if (!body.pickup) throw new Error('Enter the pickup instructions.');
    const v = await post('/api/admin/vehicles', body);
    remember('vehicles', { id: v.id, title: `${carTitle(v)} · ${v.vin}` });
    for (const id of ['vehicle-vin', 'vehicle-year', 'vehicle-mileage', 'vehicle-make', 'vehicle-model', 'vehicle-trim', 'vehicle-photo-url']) f.querySelector(`#${id}`).value = '';
    refreshLists();
    return `Vehicle ${carTitle(v)} added (id ${v.id}). Add it to an event's lane under Events.`;
  });

  const recent = h('ul', { class: 'plain-list', 'data-testid': 'recent-vehicles' });
  const lists = h('div');
  function refreshLists() {
    const m = remembered();
    fill(lists, datalist('vendor-options', m.vendors, (v) => v.name));
    fill(recent, m.vehicles.length
      ? m.vehicles.slice(0, 10).map((v) => h('li', null, h('span', null, v.title), ' ', h('code', null, v.id)))
      : h('li', { class: 'muted' }, 'Vehicles you add appear here.'));
  }
  fill(box, h('div', { class: 'admin-grid' }, vendorForm, vehicleForm,
    h('section', { class: 'card' }, h('h2', null, 'Recently added vehicles'), recent)), lists);
  refreshLists();
  return () => {};
}

// ----- events -----

function events(box, ctx) {
  const start = Date.now() + 10 * 60_000;
  const createForm = form('event', 'New event', [
    field('Name', 'event-name', { required: true }),
    field('Starts at', 'event-starts-at', { type: 'datetime-local', required: true, value: toLocalInput(start) }),
    h('div', { class: 'grid-3' },
      field('Lanes', 'event-lanes', { type: 'number', min: 1, max: 50, value: 2, required: true, inputmode: 'numeric' }),
      field('Seconds per lot', 'event-lot-seconds', { type: 'number', min: 1, value: 30, required: true, inputmode: 'numeric' }),
      field('Seconds after a bid', 'event-reset-seconds', { type: 'number', min: 1, value: 30, required: true, inputmode: 'numeric' })),
  ], 'Create draft event', async (f) => {
    const name = val(f, 'event-name');
    if (!name) throw new Error('Name the event.');
    const startsAt = new Date(val(f, 'event-starts-at')).getTime();
    if (!Number.isFinite(startsAt)) throw new Error('Pick a start time.');
    const e = await post('/api/admin/events', {
      name,
      starts_at: startsAt,
      lanes: needInt(val(f, 'event-lanes'), 'Lanes', 1),
      lot_seconds: needInt(val(f, 'event-lot-seconds'), 'Seconds per lot', 1),
      reset_seconds: needInt(val(f, 'event-reset-seconds'), 'Seconds after a bid', 1),
    });
    remember('events', { id: e.id, name: e.name });
    ctx.go(`#/admin/events/${e.id}`);
    return `Draft ${e.name} created.`;
  });
  const list = h('div', { class: 'event-admin-list', 'data-testid': 'admin-events' });
  fill(box, h('div', { class: 'admin-grid' }, createForm,
    h('section', { class: 'card' }, h('h2', null, 'Events'), list)));

  let alive = true;
  (async () => {
    const known = new Map();
    for (const e of remembered().events) known.set(e.id, { id: e.id, name: e.name });
    for (const status of ['live', 'scheduled']) {
      try {
        for (const e of await get(`/api/events?status=${status}`)) known.set(e.id, e);
      } catch {
        // Shown below as what we have.
      }
    }
    await Promise.all([...known.values()].filter((e) => !e.status).map(async (e) => {
      const r = await request('GET', `/api/events/${e.id}`);
      if (r.ok) known.set(e.id, r.data);
      else known.delete(e.id);
    }));
    if (!alive) return;
    const order = { live: 0, scheduled: 1, draft: 2, closed: 3 };
    const rows = [...known.values()].sort((a, b) => (order[a.status] ?? 9) - (order[b.status] ?? 9) || a.starts_at - b.starts_at);
    fill(list, rows.length ? rows.map((e) => h('div', { class: 'event-row', 'data-testid': 'admin-event', 'data-event-id': e.id },
      h('div', null, h('strong', null, e.name), ' ', h('span', { class: `chip ${e.status}` }, e.status),
        h('div', { class: 'muted small' }, `${dateTime(e.starts_at)} · ${e.lanes} lanes`)),
      h('div', { class: 'row' },
        h('a', { class: 'btn', href: `#/admin/events/${e.id}`, 'data-testid': 'event-manage' }, 'Manage'),
        e.status === 'live' ? h('a', { class: 'btn primary', href: `#/admin/monitor/${e.id}`, 'data-testid': 'event-monitor' }, 'Monitor') : null)))
      : h('p', { class: 'empty' }, 'No events yet. Create one.'));
  })();
  return () => {
    alive = false;
  };
}

function manageEvent(box, ctx, eventId) {
  const head = h('div', { class: 'card' });
  const lotsBox = h('div', { class: 'card' });
  const vehicles = remembered().vehicles;
  let event = null;
  const addForm = form('lot', 'Add a lot', [
    field('Vehicle id', 'lot-vehicle', { required: true, list: 'vehicle-options', autocomplete: 'off' }, 'Pick a vehicle added here, or paste its id.'),
    datalist('vehicle-options', vehicles, (v) => v.title),
    h('div', { class: 'grid-2' },
      field('Lane', 'lot-lane', { type: 'number', min: 1, value: 1, required: true, inputmode: 'numeric' }),
      field('Position in lane', 'lot-position', { type: 'number', min: 1, value: 1, required: true, inputmode: 'numeric' })),
    h('div', { class: 'grid-2' },
      field('Starting price ($)', 'lot-start-price', { required: true, inputmode: 'decimal', placeholder: '5,000' }),
      field('Reserve ($)', 'lot-reserve', { inputmode: 'decimal', placeholder: '0 for none' })),
  ], 'Add lot', async (f) => {
    const vehicleId = val(f, 'lot-vehicle');
    if (!vehicleId) throw new Error('Pick or paste a vehicle id.');
    const reserveText = val(f, 'lot-reserve');
    const lot = await post(`/api/admin/events/${eventId}/lots`, {
      vehicle_id: vehicleId,
      lane: needInt(val(f, 'lot-lane'), 'Lane', 1),
      position: needInt(val(f, 'lot-position'), 'Position', 1),
      starting_price: needDollars(val(f, 'lot-start-price'), 'Starting price'),
      reserve: reserveText ? needDollars(reserveText, 'Reserve', true) : 0,
    });
    f.querySelector('#lot-vehicle').value = '';
    f.querySelector('#lot-position').value = String((lot?.position ?? 0) + 1);
    await load();
    return `Lot added to lane ${lot?.lane ?? ''}, position ${lot?.position ?? ''}.`;
  });
  fill(box, h('p', null, h('a', { href: '#/admin/events', class: 'back' }, '← All events')), head,
    h('div', { class: 'admin-grid' }, addForm, lotsBox));

  async function load() {
    try {
      event = await get(`/api/events/${eventId}`);
    } catch (e) {
      fill(head, h('p', { class: 'form-error' }, e.message));
      return;
    }
    remember('events', { id: event.id, name: event.name });
    const lane = addForm.querySelector('#lot-lane');
    lane.max = String(event.lanes);
    const schedule = h('button', { id: 'event-schedule', class: 'btn', type: 'button', disabled: event.status !== 'draft' }, 'Schedule');
    const startNow = twoStep('Start now', 'Really start now?', { id: 'event-start', class: 'btn primary', disabled: !['draft', 'scheduled'].includes(event.status) },
      (b) => act(ctx, b, () => post(`/api/admin/events/${eventId}/start`), 'Event started.').then(load));
    schedule.addEventListener('click', () => act(ctx, schedule, () => post(`/api/admin/events/${eventId}/schedule`), `Scheduled: it starts ${relative(event.starts_at)}.`).then(load));
    fill(head,
      h('div', { class: 'row spread' },
        h('div', null,
          h('h2', { 'data-testid': 'manage-event-name' }, event.name, ' ', h('span', { class: `chip ${event.status}`, 'data-testid': 'manage-event-status' }, event.status)),
          h('p', { class: 'muted small' }, `Starts ${dateTime(event.starts_at)} (${relative(event.starts_at)}) · ${event.lanes} lanes · ${event.lot_seconds} s per lot · ${event.reset_seconds} s after a bid`),
          h('p', { class: 'muted small' }, 'Id ', h('code', null, event.id))),
        h('div', { class: 'row' }, schedule, startNow,
          h('a', { id: 'event-monitor', class: 'btn', href: `#/admin/monitor/${eventId}` }, 'Monitor'))));
    const byLane = new Map();
    for (const l of event.lots ?? []) {
      if (!byLane.has(l.lane)) byLane.set(l.lane, []);
      byLane.get(l.lane).push(l);
    }
    const lanes = [];
    for (let n = 1; n <= event.lanes; n += 1) {
      const lots = (byLane.get(n) ?? []).sort((a, b) => a.position - b.position);
      lanes.push(h('div', { class: 'lane-lots', 'data-testid': `event-lane-${n}` },
        h('h3', null, `Lane ${n}`),
        lots.length ? h('ol', null, lots.map((l) => h('li', { 'data-lot-id': l.lot_id },
          h('span', { class: 'pos' }, `#${l.position}`), ' ', carTitle(l.vehicle), ' ',
          h('span', { class: 'muted small' }, `from ${money(l.bid_count ? l.high : l.min_next)}`), ' ',
          h('span', { class: `chip ${l.state}` }, l.state)))) : h('p', { class: 'muted small' }, 'No lots yet.')));
    }
    fill(lotsBox, h('h2', null, 'Lanes'), lanes);
    const next = Math.max(0, ...(byLane.get(Number(lane.value)) ?? []).map((l) => l.position)) + 1;
    if (!addForm.querySelector('#lot-position').matches(':focus')) addForm.querySelector('#lot-position').value = String(next);
  }
  load();
  return () => {};
}

// ----- the live monitor -----

function monitor(box, ctx, eventId) {
  const socket = ctx.socket;
  const status = h('span', { class: 'chip', 'data-testid': 'monitor-status' }, '…');
  const clients = h('strong', { 'data-testid': 'monitor-clients' }, '—');
  const polled = h('span', { class: 'muted small', 'data-testid': 'monitor-updated' });
  const lanesEl = h('div', { class: 'lanes monitor', 'data-testid': 'monitor' });
  const log = h('ol', { class: 'log', 'data-testid': 'monitor-log', 'aria-live': 'off' });
  const cards = new Map();
  const rates = new Map();
  let alive = true;
  let inFlight = false;
  let eventName = '';

  fill(box,
    h('p', null, h('a', { href: '#/admin/events', class: 'back' }, '← All events')),
    h('div', { class: 'card row spread monitor-head' },
      h('div', null, h('h2', { 'data-testid': 'monitor-event-name' }, 'Live monitor'), polled),
      h('div', { class: 'row' }, status, h('span', null, 'Watching: ', clients))),
    lanesEl,
    h('section', { class: 'card' }, h('h2', null, 'Live feed'), log));

  const board = new Board({
    onChange: (lane) => (lane == null ? board.list().forEach((l) => render(l.lane)) : render(lane)),
    // A frame about a lot this board has not seen yet: the next poll (within 2 s) brings it.
    onUnknown: () => {},
  });

  function note(text) {
    log.prepend(h('li', null, h('time', null, new Date().toLocaleTimeString()), ' ', text));
    while (log.children.length > 60) log.lastChild.remove();
  }

  function card(n) {
    let ui = cards.get(n);
    if (ui) return ui;
    const car = carBlock('monitor-');
    ui = {
      car,
      clock: h('div', { class: 'countdown', 'data-testid': 'countdown' }),
      high: h('span', { class: 'high', 'data-testid': 'high' }),
      bidder: h('span', { class: 'bidder', 'data-testid': 'bidder' }),
      count: h('span', { class: 'muted small', 'data-testid': 'bid-count' }),
      rate: h('span', { class: 'muted small', 'data-testid': 'bids-per-minute' }),
      state: h('span', { class: 'chip', 'data-testid': 'lot-state' }),
      controls: h('div', { class: 'row controls' }),
    };
    ui.root = h('section', { class: 'lane', 'data-testid': `monitor-lane-${n}`, 'aria-label': `Lane ${n}` },
      h('header', { class: 'lane-head' }, h('span', { class: 'lane-no' }, `Lane ${n}`), ui.state),
      car.root,
      ui.clock,
      h('div', { class: 'bid-row' }, h('div', null, h('div', { class: 'label' }, 'High bid'), ui.high), h('div', { class: 'right' }, ui.bidder, ui.count, ui.rate)),
      ui.controls);
    cards.set(n, ui);
    const after = [...cards.keys()].filter((k) => k > n).sort((a, b) => a - b)[0];
    if (after != null) lanesEl.insertBefore(ui.root, cards.get(after).root);
    else lanesEl.append(ui.root);
    return ui;
  }

  function render(n) {
    const l = board.lane(n);
    const ui = card(n);
    const lot = l.closing ? null : l.lot;
    ui.car.show(l.lot, l.closing);
    setText(ui.state, l.closing ? l.closing.outcome : lot?.state ?? 'finished');
    ui.state.className = `chip ${l.closing ? l.closing.outcome : lot?.state ?? 'closed'}`;
    setText(ui.high, lot?.high != null ? money(lot.high) : lot ? `opens at ${money(lot.min_next)}` : '—');
    setText(ui.bidder, lot?.bidder ?? '');
    setText(ui.count, lot ? bids(lot.bid_count) : '');
    const r = rates.get(n);
    setText(ui.rate, r != null ? `${Number(r).toFixed(1)} bids/min` : '');
    const key = lot ? `${lot.lot_id}:${lot.state}` : '';
    if (ui.controlsKey !== key) {
      ui.controlsKey = key;
      fill(ui.controls, lot ? controls(lot) : null);
    }
    tick(ui, l);
  }

  function controls(lot) {
    const id = lot.lot_id;
    const pause = h('button', { class: 'btn', type: 'button', 'data-testid': 'lot-pause', disabled: lot.state !== 'open' }, 'Pause');
    const resume = h('button', { class: 'btn', type: 'button', 'data-testid': 'lot-resume', disabled: lot.state !== 'paused' }, 'Resume');
    const cancel = twoStep('Cancel lot', 'Really cancel?', { 'data-testid': 'lot-cancel', disabled: !['open', 'paused', 'scheduled'].includes(lot.state) },
      (b) => act(ctx, b, () => post(`/api/admin/lots/${id}/cancel`), 'Lot cancelled.').then(poll));
    pause.addEventListener('click', () => act(ctx, pause, () => post(`/api/admin/lots/${id}/pause`), 'Lot paused.').then(poll));
    resume.addEventListener('click', () => act(ctx, resume, () => post(`/api/admin/lots/${id}/resume`), 'Lot resumed.').then(poll));
    return [pause, resume, cancel];
  }

  function tick(ui, l) {
    const face = clockFace(l.closing ? null : l.lot, socket.clock);
    setText(ui.clock, face.text);
    ui.clock.className = `countdown ${face.cls}`;
  }

  async function poll() {
    if (inFlight || !alive) return;
    inFlight = true;
    try {
      const m = await get(`/api/admin/events/${eventId}/monitor`);
      if (!alive) return;
      setText(status, m.status);
      status.className = `chip ${m.status}`;
      setText(clients, String(m.clients ?? 0));
      setText(polled, `Updated ${new Date().toLocaleTimeString()}${eventName ? ` · ${eventName}` : ''}`);
      for (const lane of m.lanes ?? []) {
        rates.set(lane.lane, lane.bids_per_minute);
        board.view(lane.lane, lane.lot, true);
        render(lane.lane);
      }
    } catch (e) {
      setText(polled, `Monitor unavailable: ${e.message}`);
    } finally {
      inFlight = false;
    }
  }

  const off = ctx.onFrame((f) => {
    if (f.type === 'snapshot' && f.event_id !== eventId) return;
    if (f.type === 'car_rotate' && f.event_id !== eventId) return;
    if (!board.apply(f)) return;
    if (f.type === 'new_bid') note(`Lane ${f.lane}: ${money(f.amount)} by ${f.bidder} (${bids(f.bid_count)})`);
    if (f.type === 'car_rotate') {
      note(`Lane ${f.lane}: ${f.closed?.outcome ?? 'closed'}${f.closed?.amount != null ? ` at ${money(f.closed.amount)}` : ''}; ${f.next ? `next up ${carTitle(f.next.vehicle)}` : 'lane finished'}`);
    }
  });
  let lastStates = new Map();
  const stateWatch = setInterval(() => {
    const now = new Map(board.list().map((l) => [l.lane, l.lot?.state]));
    for (const [lane, s] of now) {
      const before = lastStates.get(lane);
      if (before && s && before !== s) note(`Lane ${lane}: ${before} → ${s}`);
    }
    lastStates = now;
  }, 500);
  get(`/api/events/${eventId}`).then((e) => {
    eventName = e.name;
    setText(box.querySelector('[data-testid=monitor-event-name]'), `Live monitor · ${e.name}`);
  }).catch(() => {});
  socket.subscribe(eventId);
  poll();
  const poller = setInterval(poll, 2000);
  const ticker = setInterval(() => {
    for (const [n, ui] of cards) tick(ui, board.lane(n));
  }, 200);
  return () => {
    alive = false;
    off();
    socket.unsubscribe(eventId);
    clearInterval(poller);
    clearInterval(ticker);
    clearInterval(stateWatch);
    for (const l of board.lanes.values()) clearTimeout(l.closingTimer);
  };
}

// ----- sold / unsold / cancelled -----

function outcomes(box, ctx, outcome) {
  const kinds = [['sold', 'Sold'], ['unsold', 'Unsold'], ['cancelled', 'Cancelled']];
  if (!kinds.some(([k]) => k === outcome)) outcome = 'sold';
  const list = h('div', { class: 'lots-list', 'data-testid': 'lots-list', 'aria-busy': 'true' });
  const events = remembered().events;
  fill(box,
    h('nav', { class: 'tabs sub', 'aria-label': 'Outcome' }, kinds.map(([k, label]) => h('a', {
      href: `#/admin/lots/${k}`, class: `tab ${k === outcome ? 'active' : ''}`, 'aria-current': k === outcome ? 'page' : null,
      'data-testid': `outcome-${k}`,
    }, label))),
    datalist('relist-events', events, (e) => e.name),
    list);

  function row(lot) {
    const id = lot.lot_id ?? lot.id;
    const v = lot.vehicle ?? {};
    const price = lot.amount ?? lot.hammer ?? lot.high ?? null;
    const relist = outcome === 'sold' ? null : relistForm(id, lot);
    return h('article', { class: 'lot-row card', 'data-testid': 'lot-row', 'data-lot-id': id },
      h('div', { class: 'lot-main' },
        h('strong', null, carTitle(v)),
        h('div', { class: 'muted small' }, `VIN ${v.vin ?? '—'} · ${mileage(v.mileage)}`),
        h('div', { class: 'muted small' }, `Lot ${shortId(id)} · event ${shortId(lot.event_id)}${lot.lane != null ? ` · lane ${lot.lane}` : ''}${lot.position != null ? ` #${lot.position}` : ''}`)),
      h('div', { class: 'lot-price' },
        h('div', { class: 'label' }, outcome === 'sold' ? 'Hammer price' : 'High bid'),
        h('strong', null, price != null ? money(price) : '—'),
        lot.reserve ? h('div', { class: 'muted small' }, `reserve ${money(lot.reserve)}`) : null,
        lot.bidder ? h('div', { class: 'muted small' }, lot.bidder) : null),
      relist);
  }

  function relistForm(id, lot) {
    const ev = h('input', { 'data-testid': 'relist-event', list: 'relist-events', value: lot.event_id ?? '', 'aria-label': 'Event id to re-list into', autocomplete: 'off' });
    const lane = h('input', { 'data-testid': 'relist-lane', type: 'number', min: 1, value: lot.lane ?? 1, 'aria-label': 'Lane', inputmode: 'numeric' });
    const pos = h('input', { 'data-testid': 'relist-position', type: 'number', min: 1, value: (lot.position ?? 0) + 100, 'aria-label': 'Position', inputmode: 'numeric' });
    const b = h('button', { class: 'btn primary', type: 'submit', 'data-testid': 'relist-submit' }, 'Re-list');
    const f = h('form', { class: 'relist', 'aria-label': `Re-list ${carTitle(lot.vehicle)}` },
      h('label', null, h('span', { class: 'label' }, 'Event'), ev),
      h('label', null, h('span', { class: 'label' }, 'Lane'), lane),
      h('label', null, h('span', { class: 'label' }, 'Position'), pos),
      b);
    f.addEventListener('submit', async (e) => {
      e.preventDefault();
      let body;
      try {
        body = { event_id: ev.value.trim(), lane: needInt(lane.value, 'Lane', 1), position: needInt(pos.value, 'Position', 1) };
        if (!body.event_id) throw new Error('Pick the event to re-list into.');
      } catch (err) {
        ctx.toast(err.message, 'error');
        return;
      }
      const r = await act(ctx, b, () => post(`/api/admin/lots/${id}/relist`, body), 'Re-listed as a new lot.');
      if (r !== undefined) {
        b.textContent = 'Re-listed';
        b.disabled = true;
      }
    });
    return f;
  }

  let alive = true;
  get(`/api/admin/lots?outcome=${outcome}`).then((lots) => {
    if (!alive) return;
    list.removeAttribute('aria-busy');
    fill(list, lots.length ? lots.map(row) : h('p', { class: 'empty' }, `No ${outcome} lots.`));
  }).catch((e) => {
    if (alive) fill(list, h('p', { class: 'empty' }, `Could not load: ${e.message}`));
  });
  return () => {
    alive = false;
  };
}
