import { createApp } from "vue";
import PrimeVue from "primevue/config";
import ConfirmationService from "primevue/confirmationservice";
import ToastService from "primevue/toastservice";
import Tooltip from "primevue/tooltip";
import Aura from "@primeuix/themes/aura";
import { definePreset } from "@primeuix/themes";
import "primeicons/primeicons.css";
import "./style.css";
import App from "./App.vue";
import { router } from "./router";
import { applyTheme } from "./lib/theme";

applyTheme();

// The end of a popup sign-in started by a terminal whose session ended
// (docs/api.md: re-authenticate): tell the opener, then close.
if (new URLSearchParams(location.search).get("signed-in") === "popup" && window.opener) {
  try {
    (window.opener as Window).postMessage({ type: "slotgate:signed-in" }, location.origin);
  } catch {
    /* the opener navigated away */
  }
  window.close();
}

const Slotgate = definePreset(Aura, {
  semantic: {
    primary: {
      50: "{emerald.50}",
      100: "{emerald.100}",
      200: "{emerald.200}",
      300: "{emerald.300}",
      400: "{emerald.400}",
      500: "{emerald.500}",
      600: "{emerald.600}",
      700: "{emerald.700}",
      800: "{emerald.800}",
      900: "{emerald.900}",
      950: "{emerald.950}",
    },
  },
});

createApp(App)
  .use(router)
  .use(PrimeVue, { theme: { preset: Slotgate, options: { darkModeSelector: ".app-dark", cssLayer: false } } })
  .use(ConfirmationService)
  .use(ToastService)
  .directive("tooltip", Tooltip)
  .mount("#app");
