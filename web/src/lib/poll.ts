// Poll while the component lives; pause while the tab is hidden.
import { onBeforeUnmount, onMounted } from "vue";

export function usePoll(fn: () => Promise<unknown> | void, everyMs: number) {
  let timer: number | undefined;
  let stopped = false;
  async function tick() {
    if (stopped) return;
    if (document.visibilityState === "visible") {
      try {
        await fn();
      } catch {
        /* the page shows the error state; keep polling */
      }
    }
    if (!stopped) timer = window.setTimeout(tick, everyMs);
  }
  onMounted(() => {
    timer = window.setTimeout(tick, everyMs);
  });
  onBeforeUnmount(() => {
    stopped = true;
    clearTimeout(timer);
  });
}
