// Unit tests of the IndexedDB vault store (node --test, fake indexedDB).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VaultStore } from '../app/store.js';

test('a wipe blocked by another tab warns and finishes only when that tab lets go', async () => {
  let request = null;
  const idb = { deleteDatabase: (name) => { request = { name }; return request; } };
  const store = new VaultStore(idb);
  const warnings = [];
  let done = false;
  const wiping = store.wipe({ onBlocked: () => warnings.push('blocked') }).then(() => { done = true; });
  assert.equal(request.name, 'parley');
  request.onblocked();
  await new Promise((r) => { setTimeout(r, 10); });
  assert.deepEqual(warnings, ['blocked']);
  assert.equal(done, false, 'not reported wiped while the database still exists');
  request.onsuccess();
  await wiping;
  assert.equal(done, true);
  // A failed deletion is an error.
  const failing = new VaultStore({ deleteDatabase: () => { request = {}; return request; } });
  const p = failing.wipe();
  request.error = new Error('nope');
  request.onerror();
  await assert.rejects(p, /nope/);
});
