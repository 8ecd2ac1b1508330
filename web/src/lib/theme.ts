// Dark by default; the choice is kept in localStorage.
import { ref } from "vue";

const KEY = "slotgate.theme";

function stored(): "dark" | "light" {
  try {
    return localStorage.getItem(KEY) === "light" ? "light" : "dark";
  } catch {
    return "dark";
  }
}

export const theme = ref<"dark" | "light">(stored());

export function applyTheme() {
  document.documentElement.classList.toggle("app-dark", theme.value === "dark");
  document.documentElement.style.colorScheme = theme.value;
}

export function toggleTheme() {
  theme.value = theme.value === "dark" ? "light" : "dark";
  try {
    localStorage.setItem(KEY, theme.value);
  } catch {
    /* private mode: the choice lasts for this page only */
  }
  applyTheme();
}

/** Colours for canvases (charts, sparklines, terminals) that CSS cannot reach. */
export function palette() {
  const dark = theme.value === "dark";
  return {
    text: dark ? "#cbd5e1" : "#334155",
    grid: dark ? "rgba(148,163,184,0.15)" : "rgba(51,65,85,0.12)",
    series: ["#10b981", "#60a5fa", "#f59e0b", "#f472b6", "#a78bfa", "#f87171", "#34d399", "#fbbf24"],
  };
}
