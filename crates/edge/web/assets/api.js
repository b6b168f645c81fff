// REST: the session (token and user, kept in localStorage) and one fetch wrapper that turns the
// protocol's {"error": {"code", "message"}} into an ApiError.

const KEY = 'gavel.session';

export const session = { token: null, user: null, expiresAt: 0 };

let onUnauthorized = () => {};

/** Called when a request with our token gets 401 (expired or revoked): the app logs out. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(KEY) ?? 'null');
    if (s && typeof s.token === 'string' && (!s.expiresAt || s.expiresAt > Date.now())) {
      Object.assign(session, s);
      return true;
    }
  } catch {
    // A damaged entry is the same as none.
  }
  clearSession();
  return false;
}

export function saveSession(login) {
  session.token = login.token;
  session.user = login.user;
  session.expiresAt = login.expires_at ?? 0;
  storeSession();
}

export function setUser(user) {
  session.user = user;
  storeSession();
}

function storeSession() {
  try {
    localStorage.setItem(KEY, JSON.stringify(session));
  } catch {
    // Private mode without storage: the session lasts as long as the page.
  }
}

export function clearSession() {
  session.token = null;
  session.user = null;
  session.expiresAt = 0;
  try {
    localStorage.removeItem(KEY);
  } catch {
    // Nothing stored.
  }
}

export const isAdmin = () => session.user?.role === 'admin';

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/** The raw answer: {status, ok, data}. Network failures become status 0. */
export async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch {
    return { status: 0, ok: false, data: null };
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (res.status === 401 && session.token && !path.startsWith('/api/auth/')) onUnauthorized();
  return { status: res.status, ok: res.ok, data };
}

/** The answer's object, or throws ApiError with the protocol's code and message. */
export async function api(method, path, body) {
  const r = await request(method, path, body);
  if (r.ok) return r.data;
  if (r.status === 0) throw new ApiError(0, 'network', 'Cannot reach Gavel. Check your connection and try again.');
  const e = r.data?.error ?? {};
  throw new ApiError(r.status, e.code ?? `http_${r.status}`, e.message ?? `Request failed (${r.status})`, r.data);
}

export const get = (path) => api('GET', path);
// Bodiless actions send {} so a server that reads a body always has one.
export const post = (path, body = {}) => api('POST', path, body);
