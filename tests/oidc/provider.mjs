// A real OpenID provider (oidc-provider, OpenID-certified) on loopback, for tests/test_oidc.py.
//
//   node provider.mjs PORT        (or OIDC_PORT)
//
// One confidential client (OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI), the
// authorization-code flow only, PKCE (S256) required. Accounts come from the JSON file
// OIDC_ACCOUNTS, read again on every sign-in and every userinfo request, so a test can change
// someone's password or groups between two logins:
//   {"dana": {"password": "...", "email": "...", "name": "...", "groups": ["fraud-devs"]}}
// The sign-in and consent pages are our own, minimal ones (devInteractions' load web fonts).
// Every authorization request and token grant is logged as one JSON line on stdout.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.argv[2] || process.env.OIDC_PORT);
const { OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI, OIDC_ACCOUNTS } = process.env;
if (!port || !OIDC_CLIENT_ID || !OIDC_CLIENT_SECRET || !OIDC_REDIRECT_URI || !OIDC_ACCOUNTS) {
  console.error('usage: OIDC_CLIENT_ID=.. OIDC_CLIENT_SECRET=.. OIDC_REDIRECT_URI=.. '
    + 'OIDC_ACCOUNTS=accounts.json node provider.mjs PORT');
  process.exit(2);
}

const accounts = () => JSON.parse(readFileSync(OIDC_ACCOUNTS, 'utf8'));
const log = (record) => console.log(JSON.stringify({ at: new Date().toISOString(), ...record }));

const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: OIDC_CLIENT_ID,
    client_secret: OIDC_CLIENT_SECRET,
    redirect_uris: [OIDC_REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  // oidc-provider requires PKCE only of public clients by default; this one is confidential.
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ['modelgate-test-provider-cookie-key'] },
  async findAccount(ctx, id) {
    const account = accounts()[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        const current = accounts()[id] || {}; // read again: groups may have changed
        return {
          sub: id,
          email: current.email,
          email_verified: true,
          name: current.name,
          preferred_username: id,
          groups: current.groups || [],
        };
      },
    };
  },
});

provider.on('authorization.accepted', (ctx) => {
  const { params } = ctx.oidc;
  log({
    event: 'authorization',
    client_id: params.client_id,
    scope: params.scope,
    code_challenge: params.code_challenge || null,
    code_challenge_method: params.code_challenge_method || null,
  });
});
provider.on('authorization.error', (ctx, error) => {
  log({ event: 'authorization.error', error: error.error, description: error.error_description });
});
provider.on('grant.success', (ctx) => {
  log({
    event: 'grant',
    grant_type: ctx.oidc.params.grant_type,
    code_verifier: Boolean(ctx.oidc.params.code_verifier),
  });
});
provider.on('grant.error', (ctx, error) => {
  log({ event: 'grant.error', error: error.error, description: error.error_description });
});

// --- the sign-in and consent pages -------------------------------------------------------

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, title, body, status = 200) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>`
    + `</head><body><main><h1>${escape(title)}</h1>${body}</main></body></html>`);
}

function loginForm(uid, error = '') {
  return `${error ? `<p role="alert">${escape(error)}</p>` : ''}
    <form method="post" action="/interaction/${escape(uid)}/login">
      <label for="username">Username</label> <input id="username" name="username" required>
      <label for="password">Password</label> <input id="password" name="password" type="password" required>
      <button type="submit">Sign in</button>
    </form>`;
}

async function form(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session, grantId } = details;
  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') return page(res, 'Sign in to the test provider', loginForm(uid));
    return page(res, 'Allow access?', `<p>${escape(params.client_id)} asks for: ${escape(params.scope)}</p>
      <form method="post" action="/interaction/${escape(uid)}/confirm">
        <button type="submit">Allow</button>
      </form>`);
  }
  if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
    const fields = await form(req);
    const account = accounts()[fields.get('username')];
    if (!account || account.password !== fields.get('password')) {
      return page(res, 'Sign in to the test provider', loginForm(uid, 'Wrong username or password.'), 401);
    }
    return provider.interactionFinished(req, res, { login: { accountId: fields.get('username') } },
      { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm' && prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } },
      { mergeWithLastSubmission: true });
  }
  return page(res, 'Not here', '<p>Nothing to do at this step.</p>', 400);
}

const handle = provider.callback();
createServer(async (req, res) => {
  const match = new URL(req.url, issuer).pathname.match(/^\/interaction\/([\w-]+)(?:\/(login|confirm))?$/);
  if (!match) return handle(req, res);
  try {
    await interaction(req, res, match[1], match[2]);
  } catch (error) {
    log({ event: 'interaction.error', error: String(error) });
    if (!res.headersSent) page(res, 'Sign-in failed', `<p>${escape(error.message)}</p>`, 400);
  }
}).listen(port, '127.0.0.1', () => log({ event: 'listening', issuer }));
