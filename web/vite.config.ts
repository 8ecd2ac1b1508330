import { defineConfig } from "vite";
import vue from "@vitejs/plugin-vue";

// `npm run dev` proxies everything that is not the portal's own code to a
// running slotgate (SLOTGATE_URL, default https://127.0.0.1:7681; its
// self-signed certificate is accepted here only).
const target = process.env.SLOTGATE_URL ?? "https://127.0.0.1:7681";
const upstream = { target, changeOrigin: false, secure: false, ws: true };

export default defineConfig({
  plugins: [vue()],
  base: "/",
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    sourcemap: false,
    // The entry chunk holds PrimeVue's DataTable (the slot list needs it): ~210 kB gzipped.
    chunkSizeWarningLimit: 1000,
    rollupOptions: {
      output: {
        manualChunks(id: string) {
          if (id.includes("node_modules/@xterm")) return "xterm";
          if (id.includes("node_modules/chart.js")) return "charts";
          if (id.includes("node_modules/asciinema-player")) return "player";
          return undefined;
        },
      },
    },
  },
  server: {
    proxy: {
      "/api": upstream,
      "/auth": upstream,
      "^/slot/[^/]+/(ws|token|_slotgate)": upstream,
      "^/replay/[^/]+/cast": upstream,
    },
  },
});
