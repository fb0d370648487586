import { defineConfig } from "vite";

// The built UI is embedded into the sonde binary (crates/sonde-server/build.rs) and served at /.
export default defineConfig({
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, assetsDir: "assets", sourcemap: false, chunkSizeWarningLimit: 600 },
  server: { proxy: { "/api": "http://127.0.0.1:4318", "/1": "http://127.0.0.1:4318", "/health": "http://127.0.0.1:4318" } },
});
