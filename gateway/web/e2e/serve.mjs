// `node e2e/serve.mjs`: the e2e backend on its own, for trying the built app by hand. Ctrl-C stops it.
import { startBackend } from "./harness.mjs";

const backend = await startBackend();
console.log(`Contoso Shop: ${backend.url}`);
console.log(`Identity provider: ${backend.idp.issuer} (any account id signs in)`);
await new Promise(() => undefined);
