// Numbers and times as people read them.

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !isFinite(ms) || ms <= 0) return "—";
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

export function time(ms: number | null | undefined): string {
  if (!ms) return "—";
  return new Date(ms).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

export function day(ms: number, period: string): string {
  const d = new Date(ms);
  if (period === "month") return d.toLocaleDateString(undefined, { year: "numeric", month: "short" });
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

export function percent(p: number | null | undefined): string {
  if (p === null || p === undefined || !isFinite(p)) return "—";
  return `${p < 10 ? p.toFixed(1) : Math.round(p)}%`;
}

export function count(n: number | null | undefined): string {
  if (n === null || n === undefined || !isFinite(n)) return "—";
  return new Intl.NumberFormat(undefined, { notation: n >= 100000 ? "compact" : "standard" }).format(n);
}

export function usd(n: number | null | undefined): string {
  if (n === null || n === undefined || !isFinite(n)) return "—";
  return new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", maximumFractionDigits: n < 10 ? 2 : 0 }).format(n);
}

/** `datetime-local` input value → milliseconds, or undefined when empty. */
export function localInputToMs(v: string): number | undefined {
  if (!v) return undefined;
  const t = new Date(v).getTime();
  return isNaN(t) ? undefined : t;
}
