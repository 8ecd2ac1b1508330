// Who is signed in (`GET /api/me`), loaded once per page load.
import { ref } from "vue";
import { get, ApiError } from "./api";
import type { Me } from "./types";

export const me = ref<Me | null>(null);
export const meError = ref<ApiError | null>(null);
let pending: Promise<Me | null> | null = null;

export function loadMe(): Promise<Me | null> {
  if (!pending) {
    pending = get<Me & { name?: string }>("/api/me")
      .then((m) => {
        const user = m.user ?? m.name ?? "";
        me.value = { ...m, user };
        return me.value;
      })
      .catch((e: ApiError) => {
        meError.value = e;
        pending = null;
        return null;
      });
  }
  return pending;
}

export const isAdmin = () => me.value?.role === "admin";
