// A real OpenID Provider for slotgate's identity tests: the certified
// `oidc-provider` package with its development login and consent forms,
// listening on loopback. Configured by a JSON file (argv[2]):
//   { "port": 0, "host": "127.0.0.1",
//     "clients": [{ "client_id", "client_secret", "redirect_uris": [...],
//                   "post_logout_redirect_uris": [...] }],
//     "users": { "alice": { "email": "...", "name": "...", "groups": [...] } } }
// Prints one line `{"ready": true, "issuer": "http://127.0.0.1:<port>"}` on
// stdout once listening. Any login name is accepted by the dev form; users
// not in the table get no groups.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

// stdout carries only the ready line; the provider's notices go to stderr.
console.log = console.info = (...a) => process.stderr.write(a.join(' ') + '\n');

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const host = cfg.host ?? '127.0.0.1';
const users = cfg.users ?? {};

const server = http.createServer();
server.listen(cfg.port ?? 0, host, () => {
  const { port } = server.address();
  const issuer = `http://${host}:${port}`;
  const provider = new Provider(issuer, {
    clients: (cfg.clients ?? []).map((c) => ({
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...c,
    })),
    async findAccount(ctx, id) {
      const u = users[id] ?? {};
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            preferred_username: id,
            name: u.name ?? id,
            email: u.email ?? `${id}@example.test`,
            email_verified: true,
            groups: u.groups ?? [],
          };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      userinfo: { enabled: true },
    },
    pkce: { required: () => true },
    cookies: { keys: ['slotgate-test-only-cookie-key'] },
    ttl: { IdToken: cfg.id_token_ttl ?? 3600, AccessToken: 3600, AuthorizationCode: 60 },
  });
  provider.proxy = false;
  server.on('request', provider.callback());
  process.stdout.write(JSON.stringify({ ready: true, issuer }) + '\n');
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
