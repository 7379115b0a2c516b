import { defineConfig } from "vitest/config";

// `npm run dev` serves the app with hot reload and forwards everything the gateway owns to a running
// gateway (GATEWAY_URL, default http://127.0.0.1:8080, e.g. from `contoso dev`).
const gateway = process.env.GATEWAY_URL ?? "http://127.0.0.1:8080";
const toGateway = { target: gateway, changeOrigin: true };

export default defineConfig({
  base: "/",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2022",
    sourcemap: false,
  },
  server: {
    proxy: {
      "^/contoso\\.": toGateway,
      "^/dev/": toGateway,
      "/images": toGateway,
      "/app-config.json": toGateway,
    },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
