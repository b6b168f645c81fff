// The live layer: the server clock (Clock), the WebSocket with reconnect, resubscribe and bids
// (LiveSocket), and the lanes' state with the protocol's version rules (Board). No DOM here,
// so `node` can import it for a quick check.

import { request, session } from './api.js';
import { uid } from './format.js';

/** Milliseconds since the epoch from a monotonic source (Date.now() can jump). */
export const now = () => performance.timeOrigin + performance.now();

const PING_EVERY_MS = 4000;
const WARMUP_PINGS = 3;
const SAMPLES_KEPT = 12;
const STALE_AFTER_MS = 15000;
const BID_TIMEOUT_MS = 10000;
const RESEND_WITHIN_MS = 15000;

/**
 * The offset between the server's clock and ours, from ping/pong: offset = server_time −
 * (t + rtt/2). Of the recent samples, the one with the lowest round trip is the least skewed by
 * queueing, so it wins. Until the first pong, a frame's server_time gives a rough offset.
 */
export class Clock {
  constructor() {
    this.samples = [];
    this.rough = null;
  }

  pong(t, serverTime, at = now()) {
    const rtt = at - t;
    if (!Number.isFinite(rtt) || rtt < 0 || rtt > 10000 || !Number.isFinite(serverTime)) return;
    this.samples.push({ offset: serverTime - (t + rtt / 2), rtt, at });
    if (this.samples.length > SAMPLES_KEPT) this.samples.shift();
  }

  /** A frame's server_time, used only while there is no pong yet. */
  frame(serverTime, at = now()) {
    if (Number.isFinite(serverTime) && this.samples.length === 0) this.rough = serverTime - at;
  }

  best() {
    let best = null;
    for (const s of this.samples) if (!best || s.rtt < best.rtt) best = s;
    return best;
  }

  get offset() {
    return this.best()?.offset ?? this.rough ?? 0;
  }

  get rtt() {
    return this.best()?.rtt ?? null;
  }

  /** The server's time now, as well as we know it. */
  serverNow() {
    return now() + this.offset;
  }
}

/**
 * One WebSocket for the logged-in user, kept for the whole session (outbid and won notices come
 * on any page). Subscriptions are remembered and sent again after every reconnect, which brings a
 * fresh snapshot. Bids carry an idempotency key and are re-sent with the same key after a
 * reconnect, so a bid is counted once whatever the network did; with no socket, they go by REST.
 */
export class LiveSocket {
  constructor({ onFrame = () => {}, onStatus = () => {}, onAuthLost = () => {} } = {}) {
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.onAuthLost = onAuthLost;
    this.clock = new Clock();
    this.events = new Set();
    this.pending = new Map();
    this.ws = null;
    this.attempt = 0;
    this.failedOpens = 0;
    this.stopped = true;
    this.status = 'offline';
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
    this.onOnline = () => this.reconnectNow();
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    if (typeof window !== 'undefined') window.addEventListener('online', this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    if (typeof window !== 'undefined') window.removeEventListener('online', this.onOnline);
    clearTimeout(this.retryTimer);
    this.drop();
    for (const p of this.pending.values()) this.settle(p, { status: 'unknown', reason: 'logged_out' });
    this.events.clear();
    this.setStatus('offline');
  }

  get open() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  setStatus(s) {
    if (s === this.status) return;
    this.status = s;
    this.onStatus(s);
  }

  connect() {
    if (this.stopped || !session.token) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/ws?token=${encodeURIComponent(session.token)}`);
    this.ws = ws;
    this.setStatus(this.attempt === 0 ? 'connecting' : 'reconnecting');
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.attempt = 0;
      this.failedOpens = 0;
      this.lastHeard = now();
      this.setStatus('live');
      for (const id of this.events) this.send({ type: 'subscribe', event_id: id });
      for (const p of this.pending.values()) {
        if (now() - p.at < RESEND_WITHIN_MS) this.send(p.frame);
      }
      this.startPings();
    };
    ws.onmessage = (m) => this.receive(m.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      if (!opened) this.failedOpens += 1;
      this.drop();
      this.scheduleReconnect();
    };
    ws.onerror = () => {
      // A close always follows; reconnecting is decided there.
    };
  }

  /** Forgets the socket without waiting for a close handshake a dead network never finishes. */
  drop() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close();
      } catch {
        // Already closed.
      }
    }
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.setStatus('reconnecting');
    clearTimeout(this.retryTimer);
    // Full jitter on an exponential backoff, 0.5 s up to 15 s, so a restarted edge is not
    // stormed by every client at once.
    const cap = Math.min(15000, 500 * 2 ** this.attempt);
    const delay = cap / 2 + Math.random() * (cap / 2);
    this.attempt = Math.min(this.attempt + 1, 10);
    this.retryTimer = setTimeout(() => this.connect(), delay);
    // Never opened three times running: perhaps the token was refused. Ask REST, which says so.
    if (this.failedOpens >= 3 && this.failedOpens % 3 === 0) {
      request('GET', '/api/me').then((r) => {
        if (r.status === 401) this.onAuthLost();
      });
    }
  }

  reconnectNow() {
    if (this.stopped || this.open) return;
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.drop();
    this.connect();
  }

  startPings() {
    let warm = 0;
    const ping = () => {
      if (!this.open) return;
      if (this.lastHeard && now() - this.lastHeard > STALE_AFTER_MS) {
        // Pings go unanswered: the connection is dead even if the browser has not noticed.
        this.drop();
        this.scheduleReconnect();
        return;
      }
      this.send({ type: 'ping', t: now() });
    };
    ping();
    const warmup = setInterval(() => {
      warm += 1;
      if (warm > WARMUP_PINGS || !this.open) clearInterval(warmup);
      else ping();
    }, 400);
    this.pingTimer = setInterval(ping, PING_EVERY_MS);
  }

  send(frame) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  receive(data) {
    this.lastHeard = now();
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      return;
    }
    if (!f || typeof f.type !== 'string') return;
    if (f.type === 'pong') {
      this.clock.pong(Number(f.t), Number(f.server_time));
      return;
    }
    if (f.server_time != null) this.clock.frame(Number(f.server_time));
    if (f.type === 'bid_result') {
      const p = this.pending.get(f.idem);
      if (p) this.settle(p, f);
    }
    this.onFrame(f);
  }

  subscribe(eventId) {
    this.events.add(eventId);
    this.send({ type: 'subscribe', event_id: eventId });
  }

  unsubscribe(eventId) {
    if (this.events.delete(eventId)) this.send({ type: 'unsubscribe', event_id: eventId });
  }

  /**
   * Places a bid. Resolves with the bid_result (`status` accepted or rejected), or with status
   * `unknown` when no answer came in time (the bid may still have counted).
   */
  bid(lotId, amount, seenHigh) {
    const idem = uid();
    const frame = { type: 'bid', lot_id: lotId, amount, seen_high: seenHigh ?? null, idem };
    return new Promise((resolve) => {
      const p = { idem, frame, resolve, at: now(), timer: null };
      p.timer = setTimeout(() => this.settle(p, { status: 'unknown', idem, lot_id: lotId }), BID_TIMEOUT_MS);
      this.pending.set(idem, p);
      if (!this.send(frame)) this.bidOverRest(p);
    });
  }

  async bidOverRest(p) {
    const { lot_id: lotId, amount, seen_high: seenHigh, idem } = p.frame;
    const r = await request('POST', `/api/lots/${encodeURIComponent(lotId)}/bids`, { amount, seen_high: seenHigh, idem });
    if (!this.pending.has(idem)) return;
    if (r.data && (r.data.status === 'accepted' || r.data.status === 'rejected')) {
      this.settle(p, { ...r.data, idem });
    } else if (r.status === 429) {
      this.settle(p, { status: 'rejected', reason: 'rate_limited', retryable: true, idem, lot_id: lotId });
    } else if (r.status === 0) {
      // No network either: the socket's reconnect re-sends it with the same key.
    } else {
      const e = r.data?.error ?? {};
      this.settle(p, { status: 'rejected', reason: e.code ?? 'invalid', message: e.message, idem, lot_id: lotId });
    }
  }

  settle(p, result) {
    if (!this.pending.has(p.idem)) return;
    this.pending.delete(p.idem);
    clearTimeout(p.timer);
    p.resolve(result);
  }
}

/**
 * What each lane shows, fed by snapshots, frames and REST lot views, with the rules that keep
 * every screen converged:
 * - a lot's `version` (from views and `new_bid`) only rises; a `new_bid` at or below it is old;
 * - `timer_update` repeats its version every tick, so one below the newest seen is old; it is
 *   tracked apart (`timerVersion`) because ticks and bids travel separately and a reset's tick
 *   may arrive before its `new_bid`, which must still apply;
 * - a frame for a lot the lane does not show asks for a resync (the `onUnknown` callback).
 */
export class Board {
  constructor({ onChange = () => {}, onUnknown = () => {}, onRotate = () => {} } = {}) {
    this.lanes = new Map();
    this.onChange = onChange;
    this.onUnknown = onUnknown;
    this.onRotate = onRotate;
    this.closingMs = 3000;
  }

  lane(n) {
    let l = this.lanes.get(n);
    if (!l) {
      l = { lane: n, lot: null, closing: null, done: false };
      this.lanes.set(n, l);
    }
    return l;
  }

  findLot(lotId) {
    for (const l of this.lanes.values()) {
      if (l.lot?.lot_id === lotId) return l.lot;
      if (l.closing?.lot?.lot_id === lotId) return l.closing.lot;
    }
    return null;
  }

  /** Applies one frame; returns true when something changed. */
  apply(f) {
    switch (f.type) {
      case 'snapshot':
        for (const { lane, lot } of f.lanes ?? []) this.view(lane, lot, true);
        this.onChange(null);
        return true;
      case 'timer_update':
        return this.timer(f);
      case 'new_bid':
        return this.newBid(f);
      case 'car_rotate':
        return this.rotate(f);
      default:
        return false;
    }
  }

  /** A lot view from a snapshot or REST. `authoritative` (a snapshot) may also empty a lane. */
  view(laneNo, lot, authoritative = false) {
    const l = this.lane(laneNo);
    if (!lot) {
      if (authoritative && !l.closing) {
        l.lot = null;
        l.done = true;
      }
      return;
    }
    const cur = l.lot;
    if (cur && cur.lot_id === lot.lot_id) {
      if (lot.version < cur.version) return;
      const timerVersion = Math.max(cur.timerVersion ?? 0, lot.version);
      const keepTimer = (cur.timerVersion ?? 0) > lot.version;
      l.lot = {
        ...cur,
        ...lot,
        timerVersion,
        // A tick newer than this view knows the clock better.
        ends_at: keepTimer ? cur.ends_at : lot.ends_at,
        state: keepTimer ? cur.state : lot.state,
        remaining_ms: keepTimer ? cur.remaining_ms : undefined,
      };
    } else if (l.closing?.lot?.lot_id === lot.lot_id) {
      // The view of a lot we just watched close: stale, the lane moved on.
      return;
    } else {
      l.lot = { ...lot, timerVersion: lot.version };
    }
    l.done = false;
    this.onChange(laneNo);
  }

  viewFromRest(lot) {
    if (lot && lot.lane != null) this.view(lot.lane, lot);
  }

  timer(f) {
    const l = this.lanes.get(f.lane);
    const lot = l?.lot;
    if (!lot || lot.lot_id !== f.lot_id) {
      if (!l?.closing || l.closing.lot?.lot_id !== f.lot_id) this.onUnknown(f);
      return false;
    }
    if (f.version < Math.max(lot.version, lot.timerVersion ?? 0)) return false;
    lot.state = f.state;
    lot.ends_at = f.ends_at;
    lot.remaining_ms = f.remaining_ms;
    lot.timerVersion = f.version;
    if (f.version > lot.version) this.onUnknown(f, 'behind');
    this.onChange(f.lane);
    return true;
  }

  newBid(f) {
    const l = this.lanes.get(f.lane);
    const lot = l?.lot;
    if (!lot || lot.lot_id !== f.lot_id) {
      if (!l?.closing || l.closing.lot?.lot_id !== f.lot_id) this.onUnknown(f);
      return false;
    }
    if (f.version <= lot.version) return false;
    lot.high = f.amount;
    lot.bidder = f.bidder;
    lot.bid_count = f.bid_count;
    lot.min_next = f.min_next;
    lot.version = f.version;
    // A tick of the same version or newer knows the clock at least as well.
    if (f.version > (lot.timerVersion ?? 0)) {
      lot.ends_at = f.ends_at;
      lot.timerVersion = f.version;
    }
    this.onChange(f.lane, f);
    return true;
  }

  rotate(f) {
    const l = this.lane(f.lane);
    const closedId = f.closed?.lot_id;
    // Already rotated (a duplicate, or the snapshot was newer than this frame).
    if (l.lot && l.lot.lot_id !== closedId) {
      if (f.next && l.lot.lot_id === f.next.lot_id) return false;
      if (!f.next) return false;
    }
    if (!l.lot && l.done && !f.next) return false;
    const old = l.lot && l.lot.lot_id === closedId ? l.lot : this.findLot(closedId);
    l.closing = {
      lot: old,
      lot_id: closedId,
      outcome: f.closed?.outcome,
      amount: f.closed?.amount ?? null,
      until: now() + this.closingMs,
    };
    l.lot = f.next ? { ...f.next, timerVersion: f.next.version } : null;
    l.done = !f.next;
    clearTimeout(l.closingTimer);
    l.closingTimer = setTimeout(() => {
      l.closing = null;
      this.onChange(f.lane);
    }, this.closingMs);
    this.onRotate(f.lane, l.closing);
    this.onChange(f.lane);
    return true;
  }

  /** Lanes in order. */
  list() {
    return [...this.lanes.values()].sort((a, b) => a.lane - b.lane);
  }
}
