// The one place that talks to slotgate's `/api/`: JSON in and out, the
// error shape `{"code","message"}` turned into `ApiError`, and the
// cross-cutting reactions the issue asks for (401 → sign in, supervisor
// down → banner, over quota → banner with the until-time).
import { reactive } from "vue";
import type { Page } from "./types";

export type { Page };

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public body: Record<string, unknown> = {},
  ) {
    super(message);
  }
  get untilMs(): number | undefined {
    const u = this.body.until_ms;
    return typeof u === "number" ? u : undefined;
  }
  /** A sentence for the page: 403 and friends get their own wording. */
  get friendly(): string {
    if (this.status === 403) return `Not allowed: ${this.message || "your role may not do this."}`;
    if (this.status === 0) return "Cannot reach slotgate. Check your connection.";
    return this.message || `Request failed (${this.status}).`;
  }
}

/** Page-wide notices shown by the shell. */
export const notices = reactive({
  supervisorDown: false,
  supervisorMessage: "",
  quota: null as null | { message: string; untilMs?: number },
});

/** Set by the replay and embed pages: never bounce them to the sign-in page. */
export const apiOptions = { redirectOn401: true };

export function signInUrl(next: string = location.pathname + location.search): string {
  return `/auth/login?next=${encodeURIComponent(next)}`;
}

const SUPERVISOR_CODES = new Set(["control_unavailable", "supervisor_unavailable", "slotctl_unavailable", "daemon_down", "unavailable", "upstream_unavailable"]);
const QUOTA_CODES = new Set(["over_quota", "quota_exceeded"]);

type Query = Record<string, string | number | boolean | undefined | null>;

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === "") continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}${path.includes("?") ? "&" : "?"}${s}` : path;
}

export async function api<T>(
  path: string,
  opts: { method?: string; body?: unknown; query?: Query; signal?: AbortSignal } = {},
): Promise<T> {
  const init: RequestInit = {
    method: opts.method ?? "GET",
    credentials: "same-origin",
    cache: "no-store",
    headers: { accept: "application/json" },
    signal: opts.signal,
  };
  if (opts.body !== undefined) {
    init.body = JSON.stringify(opts.body);
    (init.headers as Record<string, string>)["content-type"] = "application/json";
  }
  let res: Response;
  try {
    res = await fetch(withQuery(path, opts.query), init);
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(0, "network", "Cannot reach slotgate.");
  }
  const text = await res.text();
  let body: Record<string, unknown> = {};
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = { message: text.slice(0, 200) };
    }
  }
  if (res.ok) {
    if (path.startsWith("/api/")) notices.supervisorDown = false;
    return body as T;
  }
  const code = typeof body.code === "string" ? body.code : `http_${res.status}`;
  const message = typeof body.message === "string" ? body.message : res.statusText;
  const err = new ApiError(res.status, code, message, body);
  if (res.status === 401 && apiOptions.redirectOn401) {
    location.assign(signInUrl());
  } else if ((res.status === 503 || res.status === 502) && SUPERVISOR_CODES.has(code)) {
    notices.supervisorDown = true;
    notices.supervisorMessage = message;
  } else if (QUOTA_CODES.has(code) || (res.status === 429 && err.untilMs !== undefined)) {
    notices.quota = { message, untilMs: err.untilMs };
  }
  throw err;
}

export const get = <T>(path: string, query?: Query, signal?: AbortSignal) => api<T>(path, { query, signal });
export const post = <T>(path: string, body?: unknown) => api<T>(path, { method: "POST", body: body ?? {} });
export const put = <T>(path: string, body?: unknown) => api<T>(path, { method: "PUT", body: body ?? {} });
export const del = <T>(path: string) => api<T>(path, { method: "DELETE" });

/** The items of a list answer; tolerant of a bare array. */
export function items<T>(x: Page<T> | T[] | undefined | null): T[] {
  if (!x) return [];
  return Array.isArray(x) ? x : (x.items ?? []);
}
