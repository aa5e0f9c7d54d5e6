// IndexedDB storage: one record, the sealed vault. Only sealed bytes and the public
// {user_id, homeserver} shown on the unlock screen are ever written.

const DB = 'parley';
const STORE = 'kv';
const KEY = 'vault';

function req2promise(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error || new Error('IndexedDB request failed'));
  });
}

function open(idb) {
  return new Promise((resolve, reject) => {
    let req;
    try {
      req = idb.open(DB, 1);
    } catch (err) {
      reject(err);
      return;
    }
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains(STORE)) db.createObjectStore(STORE);
    };
    req.onsuccess = () => {
      const db = req.result;
      // Another tab wipes or upgrades the database: let go at once instead of blocking it.
      db.onversionchange = () => db.close();
      resolve(db);
    };
    req.onerror = () => reject(req.error || new Error('IndexedDB is unavailable'));
    req.onblocked = () => reject(new Error('IndexedDB is blocked by another tab'));
  });
}

export class VaultStore {
  constructor(idb = globalThis.indexedDB) {
    this.idb = idb;
  }

  /** `{user_id, homeserver, blob: Uint8Array}` or null. */
  async load() {
    if (!this.idb) throw new Error('This browser has no IndexedDB (private mode?)');
    // Do not create the database just to look: a wiped browser must stay empty.
    if (this.idb.databases) {
      const dbs = await this.idb.databases();
      if (!dbs.some((d) => d.name === DB)) return null;
    }
    const db = await open(this.idb);
    try {
      const tx = db.transaction(STORE, 'readonly');
      const rec = await req2promise(tx.objectStore(STORE).get(KEY));
      return rec || null;
    } finally {
      db.close();
    }
  }

  /** Overwrites the one vault record; rejects if the write fails (quota, private mode). */
  async save(record) {
    if (!this.idb) throw new Error('This browser has no IndexedDB (private mode?)');
    const db = await open(this.idb);
    try {
      await new Promise((resolve, reject) => {
        const tx = db.transaction(STORE, 'readwrite');
        tx.objectStore(STORE).put(record, KEY);
        tx.oncomplete = () => resolve();
        tx.onerror = () => reject(tx.error || new Error('Saving the vault failed'));
        tx.onabort = () => reject(tx.error || new Error('Saving the vault was aborted (storage full?)'));
      });
    } finally {
      db.close();
    }
  }

  /**
   * Deletes the whole database; resolves once it is gone. While another tab keeps it open the
   * deletion waits (the browser's `blocked` event): `onBlocked()` is called so the user can be
   * told, and the promise resolves only when that tab lets go.
   */
  async wipe({ onBlocked = () => {} } = {}) {
    if (!this.idb) return;
    await new Promise((resolve, reject) => {
      const req = this.idb.deleteDatabase(DB);
      req.onsuccess = () => resolve();
      req.onerror = () => reject(req.error || new Error('Deleting the database failed'));
      req.onblocked = () => onBlocked();
    });
  }
}
