// A real OpenID Provider for the browser tests: panva's oidc-provider (certified), on a free port of
// this machine, with one public client (the shop: authorization code + PKCE S256, no secret), JWT
// access tokens for the API's resource indicator signed with an RSA key made here, and a minimal
// sign-in and consent form of our own (any account id signs in; no password). The public half of
// the key is written as a JWKS file for the services' JWT_JWKS_FILE.
//
// Its pages load nothing from elsewhere (the library's stock pages would fetch web fonts).
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import Provider, { errors } from "oidc-provider";

export const CLIENT_ID = "contoso-shop";
/** The API as a resource indicator (RFC 8707 wants an absolute URI)… */
export const RESOURCE = "urn:contoso:orders";
/** …and the `aud` its access tokens carry: the services' JWT_AUDIENCE (default). */
export const AUDIENCE = "contoso-orders";
export const PROVIDER_NAME = "Contoso ID";
const KID = "e2e-rs256";

const escape = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const page = (title, body) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)} · ${PROVIDER_NAME}</title>
<style>body{font-family:system-ui,sans-serif;background:#f3f4f8;margin:0;padding:3rem 1rem}
main{max-width:22rem;margin:auto;background:#fff;border-radius:12px;padding:1.5rem 2rem;box-shadow:0 2px 8px #0002}
label,input,button{display:block;width:100%;box-sizing:border-box;font:inherit}input{padding:.5rem;margin:.25rem 0 1rem}
button{padding:.6rem;margin:.5rem 0;border:0;border-radius:8px;background:#0b6e4f;color:#fff;cursor:pointer}
button.secondary{background:#e5e7eb;color:#111}</style></head>
<body><main><h1>${escape(title)}</h1>${body}</main></body></html>`;

async function formBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

/**
 * Starts the provider on `port` for the shop at `appOrigin`; writes the JWKS to `dir`. Returns its
 * issuer, the JWKS file and `close()`.
 */
export async function startIdentityProvider({ port, appOrigin, dir }) {
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const signing = { ...privateKey.export({ format: "jwk" }), kid: KID, alg: "RS256", use: "sig" };
  const jwksFile = join(dir, "idp-jwks.json");
  writeFileSync(
    jwksFile,
    JSON.stringify({ keys: [{ ...publicKey.export({ format: "jwk" }), kid: KID, alg: "RS256", use: "sig" }] }),
  );

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_name: "Contoso Shop",
        application_type: "web",
        token_endpoint_auth_method: "none",
        grant_types: ["authorization_code"],
        response_types: ["code"],
        redirect_uris: [`${appOrigin}/auth/callback`],
        post_logout_redirect_uris: [`${appOrigin}/login`],
      },
    ],
    jwks: { keys: [signing] },
    cookies: { keys: [randomBytes(32).toString("base64url")] },
    pkce: { methods: ["S256"], required: () => true },
    ttl: { AuthorizationCode: 60, Interaction: 10 * 60, Session: 60 * 60, Grant: 60 * 60, IdToken: 10 * 60, AccessToken: 10 * 60 },
    claims: { openid: ["sub"], profile: ["name", "preferred_username"] },
    async findAccount(_ctx, id) {
      return { accountId: id, claims: async () => ({ sub: id, name: id, preferred_username: id }) };
    },
    // The shop calls the discovery document and the token endpoint from its pages.
    clientBasedCORS: (_ctx, origin) => origin === appOrigin,
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page(
            "Sign out",
            `<p>Sign out of ${PROVIDER_NAME}?</p>${form}
             <button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
             <button type="submit" form="op.logoutForm" class="secondary">No, stay signed in</button>`,
          );
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page("Signed out", "<p>You are signed out.</p>");
        },
      },
      resourceIndicators: {
        enabled: true,
        useGrantedResource: () => true,
        async getResourceServerInfo(_ctx, indicator) {
          if (indicator !== RESOURCE) throw new errors.InvalidTarget();
          return {
            scope: "orders",
            audience: AUDIENCE,
            accessTokenTTL: 10 * 60,
            accessTokenFormat: "jwt",
            jwt: { sign: { alg: "RS256" } },
          };
        },
      },
    },
    async renderError(ctx, out) {
      ctx.type = "html";
      ctx.body = page("Sign-in error", `<pre>${escape(JSON.stringify(out, null, 2))}</pre>`);
    },
  });

  // The sign-in and consent pages: /interaction/{uid}.
  provider.use(async (ctx, next) => {
    const m = /^\/interaction\/([\w-]+)(\/login|\/consent)?$/.exec(ctx.path);
    if (!m) return next();
    ctx.set("cache-control", "no-store");
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { uid, prompt, params } = details;
    if (ctx.method === "GET" && !m[2]) {
      ctx.type = "html";
      ctx.body =
        prompt.name === "login"
          ? page(
              `Sign in to ${PROVIDER_NAME}`,
              `<form method="post" action="/interaction/${uid}/login">
                 <label for="account">Account</label>
                 <input id="account" name="account" autocomplete="username" required autofocus>
                 <button type="submit">Sign in</button></form>`,
            )
          : page(
              "Allow access",
              `<p><strong>${escape(params.client_id)}</strong> asks to use your account and to call the orders API on
                 your behalf.</p>
               <form method="post" action="/interaction/${uid}/consent"><button type="submit">Allow</button></form>`,
            );
      return;
    }
    if (ctx.method === "POST" && m[2] === "/login" && prompt.name === "login") {
      const account = (await formBody(ctx.req)).get("account")?.trim();
      if (!account) ctx.throw(400, "an account id is needed");
      await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: account } }, { mergeWithLastSubmission: false });
      return;
    }
    if (ctx.method === "POST" && m[2] === "/consent" && prompt.name === "consent") {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      const missing = prompt.details;
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(" "));
      }
      const grantId = await grant.save();
      await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    ctx.throw(400, `unexpected ${ctx.method} ${ctx.path} during ${prompt.name}`);
  });

  const server = await new Promise((resolve, reject) => {
    const s = provider.listen(port, "127.0.0.1", () => resolve(s));
    s.on("error", reject);
  });
  return {
    issuer,
    jwksFile,
    close: () => new Promise((done) => server.close(() => done())),
  };
}
