// Browser test of delivery across a homeserver restart: alice on one homeserver, bob on
// another whose access tokens live 3 s, so bob's token has expired when his server is back.
//
// Env: as e2e.test.mjs (PARLEY_BIN, CHROMIUM, PARLEY_E2E=0 skips, PARLEY_E2E_LOG=1).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { startWebHomeservers } from './harness.mjs';
import {
  SKIP, assertNoSecretsInConsole, bubble, button, byLabel, closeBrowsers, consoleLines, openUser, send,
  shootAll, shot, signUp, startShots, waitMessage, waitStatus, waitText,
} from './browser.mjs';

const TOKEN_TTL_MS = 3000;
const cleanups = [];
after(async () => {
  await closeBrowsers();
  for (const c of cleanups.splice(0)) await c().catch(() => {});
});

test('the WebSocket reconnects after the homeserver restarts, refreshing the expired access token, and messages sent meanwhile arrive with no reload', { skip: SKIP, timeout: 150000 }, async () => {
  startShots('reconnect');
  consoleLines.length = 0;
  const { servers, origins, stop } = await startWebHomeservers(2, {
    configs: ['', `[auth]\naccess_token_ttl_ms = ${TOKEN_TTL_MS}`],
  });
  cleanups.push(stop);
  const bobServer = servers[1];
  const bobId = `@bob:${bobServer.name}`;
  const alice = await openUser('alice', origins[0]);
  const bob = await openUser('bob', origins[1]);
  try {
    await signUp(alice, 'alice', origins[0], 'alice', 'alice password 1', 'alice vault passphrase');
    await signUp(bob, 'bob', origins[1], 'bob', 'bob password 1', 'bob vault passphrase');
    // Alice's homeserver orders the DM (she creates it), so it accepts her messages while
    // bob's is down and delivers them once it is back.
    await byLabel(alice, 'Direct message to').fill(bobId);
    await button(alice, 'New direct message').click();
    await waitStatus(alice, `Direct message with ${bobId} started`);
    await bob.getByRole('button', { name: /^alice, direct message/ }).click();
    await send(alice, 'before the restart');
    await waitMessage(bob, 'before the restart');
    const whoami = bob.getByText(`${bobId} · `, { exact: false });
    await waitText(whoami, (t) => t.endsWith('online'), 'bob was never online');

    // Watch bob's page: token refreshes, WebSockets that receive frames, and no reload.
    const refreshes = [];
    bob.on('response', (r) => { if (r.url().endsWith('/refresh')) refreshes.push({ status: r.status(), at: Date.now() }); });
    const liveSockets = [];
    bob.on('websocket', (ws) => {
      const opened = Date.now();
      ws.on('framereceived', (f) => {
        if (!String(f.payload).includes('"type":"error"')) liveSockets.push(opened);
      });
    });
    await bob.evaluate(() => { window.sameDocument = true; });

    await bobServer.kill();
    const stoppedAt = Date.now();
    await waitText(whoami, (t) => !t.endsWith('online'), 'bob never noticed his homeserver left');
    await send(alice, 'sent while the homeserver was down');
    // Accepted by alice's homeserver ("sent", or "delivered" once its echo is back).
    await waitText(bubble(alice, 'sent while the homeserver was down'), (t) => /· (sent|delivered)/.test(t), 'alice\'s homeserver never accepted her message');
    // Down longer than the token's lifetime: bob's access token has expired when it is back.
    await new Promise((r) => { setTimeout(r, Math.max(0, TOKEN_TTL_MS + 500 - (Date.now() - stoppedAt))); });
    await shot(bob, 'bob', 'homeserver-down');
    await bobServer.restart();
    const restartedAt = Date.now();

    await waitMessage(bob, 'sent while the homeserver was down', 45000);
    await waitText(whoami, (t) => t.endsWith('online'), 'bob never came back online', 30000);
    assert.ok(refreshes.some((r) => r.at >= restartedAt && r.status === 200), `the expired access token was refreshed after the restart: ${JSON.stringify(refreshes)}`);
    assert.ok(liveSockets.some((at) => at >= restartedAt), 'a WebSocket opened after the restart receives events');
    assert.equal(await bob.evaluate(() => window.sameDocument), true, 'no reload');
    // Live again, both ways.
    await send(alice, 'after the restart');
    await waitMessage(bob, 'after the restart');
    await send(bob, 'bob is back');
    await waitMessage(alice, 'bob is back');
    await shot(bob, 'bob', 'reconnected');
    assertNoSecretsInConsole(['before the restart', 'sent while the homeserver was down', 'bob is back', 'vault passphrase']);
  } catch (err) {
    await shootAll();
    throw err;
  }
});
