// JSON shapes of docs/api.md, as the portal reads them.

/** A list answer: `{"items": [...], "next_cursor"}`. */
export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

export type Role = "admin" | "user" | "viewer";

export interface Me {
  /** `null` for the anonymous admin of `auth = "none"`. */
  user: string | null;
  role: Role;
  display_name?: string | null;
  email?: string | null;
  amr?: string;
  auth?: string;
  default_slot?: string | null;
  default_template?: string | null;
  /** Origins a host page may embed slots from (`frame_ancestors`). */
  embed_origins?: string[];
}

/** slotctl says `online`; the public API may say `running` for the same. */
export type SlotState = "starting" | "online" | "running" | "stopping" | "stopped" | "errored" | "backoff";

export interface Slot {
  id: string;
  template: string;
  owner: string;
  status: SlotState;
  enabled: boolean;
  pid?: number | null;
  restarts: number;
  uptime_ms: number;
  cpu_percent: number;
  memory_bytes: number;
  processes: number;
  clients: number;
  reason?: string | null;
  last_exit?: string | null;
  created_at_ms: number;
  isolation?: string;
  /** The caller's relation to the slot: `owner`, `member`, `viewer`, `admin`. */
  access?: "owner" | "member" | "viewer" | "admin";
  url?: string;
  members?: string[];
  viewers?: string[];
}

export interface Template {
  name: string;
  description?: string | null;
  default?: boolean;
}

export interface SlotAccess {
  members: string[];
  viewers: string[];
}

export interface OnlineSession {
  user: string;
  slot: string;
  session: string;
  client_ip?: string;
  since_ms: number;
}

export interface WsSession {
  session: string;
  user: string;
  slot: string;
  client_ip?: string;
  start_ms: number;
  end_ms?: number | null;
  duration_ms?: number | null;
  bytes_in?: number;
  bytes_out?: number;
  recording?: string | null;
}

export interface LogLine {
  ts_ms: number;
  start_ms?: number;
  kind?: string;
  method?: string;
  path?: string;
  route?: string;
  status?: number;
  user?: string | null;
  slot?: string | null;
  client_ip?: string;
  duration_ms?: number;
  bytes_out?: number;
  error?: string | null;
  request_id?: string;
  [k: string]: unknown;
}

export interface StatsBucket {
  start_ms: number;
  sessions: number;
  users: number;
  session_ms: number;
  requests: number;
  errors: number;
  bytes_out: number;
}

export interface Stats {
  period: string;
  buckets: StatsBucket[];
  per_user: { user: string; sessions: number; session_ms: number; requests: number }[];
}

export interface UsageRow {
  user?: string;
  day?: string;
  model?: string;
  input_tokens: number;
  output_tokens: number;
  cache_read_tokens: number;
  cache_write_tokens: number;
  cost_usd: number;
  prompts: number;
  tool_calls: number;
}

export interface Usage {
  items: UsageRow[];
  totals?: Partial<UsageRow>;
}

export interface ToolUse {
  tool: string;
  calls: number;
  users: number;
}

export interface Quota {
  user: string;
  daily_tokens?: number | null;
  monthly_tokens?: number | null;
  daily_cost_usd?: number | null;
  monthly_cost_usd?: number | null;
  used?: Record<string, number>;
  over: boolean;
  reason?: string | null;
  until_ms?: number | null;
  /** The administrator's override: a limit key absent = the default, `null` = no limit. */
  override?: QuotaOverride | null;
}

export interface QuotaOverride {
  daily_tokens?: number | null;
  monthly_tokens?: number | null;
  daily_cost_usd?: number | null;
  monthly_cost_usd?: number | null;
  exempt_until_ms?: number | null;
  note?: string | null;
}

export interface Recording {
  id: string;
  session: string;
  user: string;
  slot: string;
  start_ms: number;
  duration_ms: number;
  size_bytes: number;
  input: boolean;
  available: boolean;
}

export interface ReplayLink {
  token: string;
  url_path: string;
  expires_ms: number;
}

export interface User {
  name: string;
  role: Role;
  email?: string | null;
  display_name?: string | null;
  disabled?: boolean;
  must_change_password?: boolean;
  has_password?: boolean;
  created_ms?: number;
  sessions?: number;
}

export interface SessionRow {
  id: string;
  user: string;
  amr?: string;
  created_ms?: number;
  last_seen_ms?: number;
  expires_ms?: number;
  revoked?: boolean;
  ip?: string | null;
  user_agent?: string | null;
  current?: boolean;
}

export interface ApiToken {
  id: string;
  user: string;
  name?: string | null;
  scopes: string[];
  created_ms?: number;
  expires_ms?: number | null;
  last_used_ms?: number | null;
  revoked?: boolean;
}

export interface ReplayMeta {
  recording: string;
  expires_ms: number;
  user?: string;
  slot?: string;
  start_ms?: number;
  duration_ms?: number;
}

/** The slot has (or is getting) a running process tree. */
export function isRunning(s: Pick<Slot, "status">): boolean {
  return s.status === "online" || s.status === "running" || s.status === "starting" || s.status === "backoff";
}
