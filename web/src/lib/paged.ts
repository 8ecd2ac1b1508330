// A cursor-paginated list (`{"items", "next_cursor"}`) with previous/next
// pages: earlier cursors are kept on a stack.
import { ref, shallowRef } from "vue";
import { ApiError, get, type Page } from "./api";

export function usePaged<T>(path: string, filters: () => Record<string, string | number | undefined>, limit = 50) {
  const rows = shallowRef<T[]>([]);
  const loading = ref(false);
  const error = ref<ApiError | null>(null);
  const next = ref<string | null>(null);
  const page = ref(1);
  let seq = 0;

  async function fetchPage(cursor: string | null) {
    const mine = ++seq;
    loading.value = true;
    try {
      const r = await get<Page<T>>(path, { ...filters(), limit, cursor: cursor ?? undefined });
      if (mine !== seq) return false;
      rows.value = r.items ?? [];
      next.value = r.next_cursor ?? null;
      error.value = null;
      return true;
    } catch (e) {
      if (mine === seq) error.value = e as ApiError;
      return false;
    } finally {
      if (mine === seq) loading.value = false;
    }
  }

  // cursors[i] fetched page i + 1; page 1 is fetched without a cursor.
  let cursors: (string | null)[] = [null];
  async function reload() {
    cursors = [null];
    page.value = 1;
    await fetchPage(null);
  }
  async function forward() {
    const target = next.value;
    if (!target) return;
    if (await fetchPage(target)) {
      cursors.push(target);
      page.value = cursors.length;
    }
  }
  async function back() {
    if (cursors.length <= 1) return;
    if (await fetchPage(cursors[cursors.length - 2])) {
      cursors.pop();
      page.value = cursors.length;
    }
  }
  return { rows, loading, error, next, page, reload, forward, back };
}
