/** The API as the page uses it: the login token (this tab only), JSON calls, downloads. */

export class ApiFailure extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

const KEY = 'uns-bridge.token';

export class Api {
  token: string | null = sessionStorage.getItem(KEY);
  username: string | null = sessionStorage.getItem(`${KEY}.user`);
  /** Called when the server no longer accepts the token. */
  onLoggedOut: () => void = () => undefined;

  async login(username: string, password: string): Promise<void> {
    const r = await fetch('/api/v1/auth/login', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }),
    });
    const body = (await r.json().catch(() => ({}))) as { access_token?: string; error?: { code: string; message: string } };
    if (!r.ok || body.access_token === undefined) {
      throw new ApiFailure(r.status, body.error?.code ?? 'UNS_ERR_UNKNOWN', body.error?.message ?? `login failed (${r.status})`);
    }
    this.token = body.access_token;
    this.username = username;
    sessionStorage.setItem(KEY, this.token);
    sessionStorage.setItem(`${KEY}.user`, username);
  }

  logout(): void {
    this.token = null;
    this.username = null;
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(`${KEY}.user`);
  }

  async get<T>(path: string): Promise<T> {
    return this.call<T>('GET', path);
  }

  async post<T>(path: string, body?: unknown): Promise<T> {
    return this.call<T>('POST', path, body);
  }

  /** Fetches a file with the token and hands it to the browser as a download. */
  async download(path: string, filename: string): Promise<void> {
    const r = await fetch(path, { headers: this.headers() });
    if (!r.ok) throw await failure(r);
    const url = URL.createObjectURL(await r.blob());
    const a = document.createElement('a');
    a.href = url;
    a.download = filename;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  private headers(): Record<string, string> {
    return this.token === null ? {} : { authorization: `Bearer ${this.token}` };
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await fetch(path, {
      method, headers: { ...this.headers(), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    if (r.status === 401) {
      this.logout();
      this.onLoggedOut();
    }
    if (!r.ok) throw await failure(r);
    const text = await r.text();
    return (text === '' ? {} : JSON.parse(text)) as T;
  }
}

async function failure(r: Response): Promise<ApiFailure> {
  const body = (await r.json().catch(() => ({}))) as { error?: { code: string; message: string } };
  return new ApiFailure(r.status, body.error?.code ?? `HTTP_${r.status}`, body.error?.message ?? r.statusText);
}
