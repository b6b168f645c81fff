// Formatting and DOM helpers shared by every view. No network, no state.

/** Integer cents as dollars: 1234500 → "$12,345", 1234550 → "$12,345.50". */
export function money(cents) {
  if (cents == null || !Number.isFinite(Number(cents))) return '—';
  const n = Math.trunc(Number(cents));
  const abs = Math.abs(n);
  const dollars = Math.floor(abs / 100);
  const rest = abs % 100;
  const text = dollars.toLocaleString('en-US') + (rest ? '.' + String(rest).padStart(2, '0') : '');
  return (n < 0 ? '-$' : '$') + text;
}

/** "12,345.5" or "$12345" → 1234550 cents; null when it is not an amount. Never goes through floats. */
export function parseDollars(text) {
  const s = String(text ?? '').replace(/[$,\s]/g, '');
  const m = /^(\d{1,12})(?:\.(\d{1,2}))?$/.exec(s);
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] ?? '').padEnd(2, '0'));
}

/** Cents as an editable dollar string for an input: 1234550 → "12345.50". */
export function centsToInput(cents) {
  if (cents == null) return '';
  const rest = cents % 100;
  return String(Math.floor(cents / 100)) + (rest ? '.' + String(rest).padStart(2, '0') : '');
}

export function mileage(miles) {
  if (miles == null) return '—';
  return `${Number(miles).toLocaleString('en-US')} mi`;
}

/** A vehicle's title line: "2019 Honda Civic EX". */
export function carTitle(v) {
  if (!v) return 'Vehicle';
  return [v.year, v.make, v.model, v.trim].filter((x) => x != null && x !== '').join(' ');
}

/** The vehicle's first photo, if it is one we may load (same origin: the CSP is self only). */
export function carPhoto(v) {
  const p = v && Array.isArray(v.photos) ? v.photos[0] : null;
  if (typeof p === 'string' && p.startsWith('/') && !p.startsWith('//')) return p;
  return '/assets/cars/sedan.svg';
}

/** Milliseconds left as a clock: "1:05", and tenths in the last ten seconds: "0:07.3". */
export function countdown(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—:—';
  if (ms <= 0) return '0:00';
  // Rounded up to tenths first: 9.95 s is 100 tenths, which shows as "0:10", not "0:010.0".
  const tenths = Math.ceil(ms / 100);
  if (tenths < 100) return `0:0${Math.floor(tenths / 10)}.${tenths % 10}`;
  const s = Math.ceil(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** "in 5 min", "in 2 h 10 min", "3 min ago". */
export function relative(at, now = Date.now()) {
  const d = at - now;
  const abs = Math.abs(d);
  let text;
  if (abs < 60_000) text = `${Math.max(1, Math.round(abs / 1000))} s`;
  else if (abs < 3_600_000) text = `${Math.round(abs / 60_000)} min`;
  else if (abs < 86_400_000) {
    const h = Math.floor(abs / 3_600_000);
    const m = Math.round((abs % 3_600_000) / 60_000);
    text = m ? `${h} h ${m} min` : `${h} h`;
  } else text = `${Math.round(abs / 86_400_000)} days`;
  return d >= 0 ? `in ${text}` : `${text} ago`;
}

export function dateTime(at) {
  if (at == null) return '—';
  return new Date(at).toLocaleString(undefined, {
    weekday: 'short', month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit',
  });
}

/** A value for <input type=datetime-local> in local time. */
export function toLocalInput(at) {
  const d = new Date(at);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** A random key for a bid's `idem` (works outside secure contexts too, unlike randomUUID). */
export function uid() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export function shortId(id) {
  return String(id ?? '').slice(0, 8);
}

/**
 * Creates an element. Text is always set as text (never parsed as HTML), so user data cannot
 * inject markup. Props: class, text, on<event> handlers, booleans, anything else as attributes.
 * No inline style attributes: the CSP forbids them.
 */
export function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...kids) {
  el.replaceChildren();
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

/** Sets text only when it changed (keeps screen readers and layout quiet at 10 Hz). */
export function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

/** A labelled form field; `id` is the input's id (and the browser tests' handle). */
export function field(label, id, input = {}, hint) {
  const tag = input.tag ?? 'input';
  const props = { ...input, id, name: input.name ?? id };
  delete props.tag;
  const options = props.options;
  delete props.options;
  const control = h(tag, hint ? { ...props, 'aria-describedby': `${id}-hint` } : props,
    options ? options.map(([value, text]) => h('option', { value }, text)) : null);
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    control,
    hint ? h('small', { id: `${id}-hint`, class: 'hint' }, hint) : null);
}
