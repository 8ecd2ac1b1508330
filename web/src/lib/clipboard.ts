// Copy to the clipboard with a toast either way (the Clipboard API needs a
// secure context; on plain HTTP the user copies by hand).
import type { ToastServiceMethods } from "primevue/toastservice";

export async function copyText(toast: ToastServiceMethods, text: string, what: string) {
  try {
    await navigator.clipboard.writeText(text);
    toast.add({ severity: "success", summary: `${what} copied`, life: 2000 });
  } catch {
    toast.add({ severity: "warn", summary: "Copy failed: select the text and copy it by hand", life: 4000 });
  }
}
