// ttyd's WebSocket protocol (checked against ttyd 1.7.7's html/src):
// subprotocol `tty`; the first frame is JSON {"AuthToken","columns","rows"};
// then one command byte plus payload. Client→server: '0' INPUT, '1' RESIZE
// (JSON {"columns","rows"}), '2' PAUSE, '3' RESUME. Server→client: '0'
// OUTPUT, '1' SET_WINDOW_TITLE, '2' SET_PREFERENCES (JSON).
//
// Flow control follows ttyd's own client: after every `FLOW_LIMIT` bytes,
// count the writes xterm.js has not finished; above `HIGH_WATER` ask ttyd
// to PAUSE, back under `LOW_WATER` RESUME.

/** Close codes the gateway uses when a session is revoked or expired
 * (docs/security.md says 4001; docs/api.md 4401 — both mean "sign in again"). */
export const CLOSE_REVOKED = [4001, 4401];
/** The slot was unshared, or the caller narrowed to a viewer. */
export const CLOSE_ACCESS_REMOVED = 4003;

const FLOW_LIMIT = 100_000;
const HIGH_WATER = 10;
const LOW_WATER = 4;

export interface TtydEvents {
  output(data: Uint8Array, written: () => void): void;
  title(t: string): void;
  preferences(p: Record<string, unknown>): void;
  open(): void;
  close(ev: CloseEvent): void;
}

/** Why `fetchToken` failed, in terms the page can act on. */
export class TokenError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    /** When a refusal lifts (over quota, rate limited), if the gateway says. */
    public untilMs?: number,
  ) {
    super(message);
  }
}

export function slotBase(id: string): string {
  return `/slot/${encodeURIComponent(id)}`;
}

export async function fetchToken(id: string, signal?: AbortSignal): Promise<string> {
  let res: Response;
  try {
    res = await fetch(`${slotBase(id)}/token`, { credentials: "same-origin", cache: "no-store", headers: { accept: "application/json" }, signal });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new TokenError(0, "network", "Cannot reach slotgate.");
  }
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = {};
  }
  if (!res.ok) {
    const until = typeof body.until_ms === "number" ? body.until_ms : undefined;
    throw new TokenError(res.status, String(body.code ?? `http_${res.status}`), String(body.message ?? res.statusText), until);
  }
  return typeof body.token === "string" ? body.token : "";
}

export class TtydConnection {
  private ws: WebSocket | null = null;
  private enc = new TextEncoder();
  private bytes = 0;
  private pending = 0;

  constructor(
    private id: string,
    private events: TtydEvents,
  ) {}

  get open(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  connect(token: string, columns: number, rows: number) {
    this.close();
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}${slotBase(this.id)}/ws`, ["tty"]);
    ws.binaryType = "arraybuffer";
    this.bytes = 0;
    this.pending = 0;
    ws.onopen = () => {
      ws.send(this.enc.encode(JSON.stringify({ AuthToken: token, columns, rows })));
      this.events.open();
    };
    ws.onmessage = (ev: MessageEvent) => {
      const buf = typeof ev.data === "string" ? this.enc.encode(ev.data) : new Uint8Array(ev.data as ArrayBuffer);
      if (buf.length === 0) return;
      const cmd = String.fromCharCode(buf[0]);
      const payload = buf.subarray(1);
      switch (cmd) {
        case "0":
          this.onOutput(payload);
          break;
        case "1":
          this.events.title(new TextDecoder().decode(payload));
          break;
        case "2":
          try {
            this.events.preferences(JSON.parse(new TextDecoder().decode(payload)));
          } catch {
            /* ttyd sends valid JSON; ignore anything else */
          }
          break;
      }
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.ws = null;
      this.events.close(ev);
    };
    this.ws = ws;
  }

  private onOutput(payload: Uint8Array) {
    this.bytes += payload.length;
    if (this.bytes > FLOW_LIMIT) {
      this.bytes = 0;
      this.pending++;
      this.events.output(payload, () => {
        this.pending = Math.max(this.pending - 1, 0);
        if (this.pending < LOW_WATER) this.command("3");
      });
      if (this.pending > HIGH_WATER) this.command("2");
    } else {
      this.events.output(payload, () => {});
    }
  }

  private command(cmd: string, payload: Uint8Array = new Uint8Array()) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const frame = new Uint8Array(payload.length + 1);
    frame[0] = cmd.charCodeAt(0);
    frame.set(payload, 1);
    this.ws.send(frame);
  }

  input(data: string | Uint8Array) {
    this.command("0", typeof data === "string" ? this.enc.encode(data) : data);
  }

  resize(columns: number, rows: number) {
    this.command("1", this.enc.encode(JSON.stringify({ columns, rows })));
  }

  close(code = 1000) {
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) {
      ws.onclose = null;
      ws.close(code);
    }
  }
}

/** xterm.js options ttyd may hand us through SET_PREFERENCES (`ttyd -t`). */
export const XTERM_PREFERENCES = ["fontSize", "fontFamily", "lineHeight", "cursorStyle", "cursorBlink", "scrollback", "theme", "letterSpacing"];
