// Browser tests of encrypted attachments (docs/protocol.md#media): alice on one homeserver
// sends bob, on another, a 20 MiB file and an image; bob's client downloads them through his
// own homeserver (which fetches them over federation), checks and decrypts them. A file over
// the server's advertised limit is refused before any upload.
//
// Env: as e2e.test.mjs (PARLEY_BIN, CHROMIUM, PARLEY_E2E=0 skips, PARLEY_E2E_LOG=1).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import zlib from 'node:zlib';
import { startWebHomeservers } from './harness.mjs';
import {
  SKIP, assertNoSecretsInConsole, bubble, button, byLabel, closeBrowsers, consoleLines, openUser,
  send, shootAll, shot, signUp, startShots, unlock, waitAlert, waitMessage, waitStatus, waitText,
} from './browser.mjs';

const cleanups = [];
after(async () => {
  await closeBrowsers();
  for (const c of cleanups.splice(0)) await c().catch(() => {});
});

async function setUp(count, configs = []) {
  const { servers, origins, stop } = await startWebHomeservers(count, { configs });
  cleanups.push(stop);
  return { servers, origins };
}

async function tearDown() {
  await closeBrowsers();
  for (const c of cleanups.splice(0)) await c().catch(() => {});
}

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

/** A `width`×`height` RGB PNG (a colour gradient), built with zlib. */
function makePng(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y += 1) {
    const row = y * (width * 3 + 1);
    for (let x = 0; x < width; x += 1) {
      raw[row + 1 + x * 3] = (x * 255) / width;
      raw[row + 2 + x * 3] = (y * 255) / height;
      raw[row + 3 + x * 3] = 128;
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** Records, in the page, every <progress> that appears with its accessible label and values. */
async function watchProgress(page) {
  await page.evaluate(() => {
    window.progressSeen = {};
    const note = (p) => {
      const label = p.getAttribute('aria-label');
      const seen = window.progressSeen[label] || (window.progressSeen[label] = { max: 0, value: 0 });
      if (p.hasAttribute('max')) seen.max = Math.max(seen.max, Number(p.getAttribute('max')));
      if (p.hasAttribute('value')) seen.value = Math.max(seen.value, Number(p.getAttribute('value')));
    };
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.target instanceof HTMLProgressElement) note(r.target);
        for (const n of r.addedNodes) if (n.querySelectorAll) n.querySelectorAll('progress').forEach(note);
      }
    }).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['value', 'max'] });
  });
}

const progressSeen = (page, label) => page.evaluate((l) => window.progressSeen[l] || null, label);

/** Attaches a file with the "Attach file" button and the file chooser. */
async function attach(page, file) {
  const chooser = page.waitForEvent('filechooser');
  await button(page, 'Attach file').click();
  await (await chooser).setFiles(file);
}

/** Drops a file onto the conversation (a synthetic drag and drop of a File). */
async function drop(page, name, mimeType, buffer) {
  await page.evaluate(({ n, t, b64 }) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], n, { type: t }));
    const target = document.getElementById('message-list');
    for (const type of ['dragenter', 'dragover', 'drop']) {
      target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
    }
  }, { n: name, t: mimeType, b64: buffer.toString('base64') });
}

async function waitLoadedImage(page, name) {
  const img = page.getByRole('img', { name, exact: true });
  await img.waitFor();
  await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await img.elementHandle());
  return img.evaluate((el) => ({ w: el.naturalWidth, h: el.naturalHeight, src: el.src.slice(0, 5) }));
}

test('encrypted attachments across two homeservers: a 20 MiB file with progress both ways, an image preview, a tampered download refused', { skip: SKIP, timeout: 300000 }, async () => {
  startShots('media');
  consoleLines.length = 0;
  const { servers, origins } = await setUp(2);
  const bobId = `@bob:${servers[1].name}`;
  const bobPass = 'bob vault passphrase';
  try {
    const alice = await openUser('alice', origins[0]);
    const bob = await openUser('bob', origins[1]);
    await signUp(alice, 'alice', origins[0], 'alice', 'alice password 1', 'alice vault passphrase');
    await signUp(bob, 'bob', origins[1], 'bob', 'bob password 1', bobPass);
    await byLabel(alice, 'Direct message to').fill(bobId);
    await button(alice, 'New direct message').click();
    await waitStatus(alice, `Direct message with ${bobId} started`);
    await bob.getByRole('button', { name: /^alice, direct message/ }).click();
    await send(alice, 'a file is coming');
    await waitMessage(bob, 'a file is coming');

    // 1. A 20 MiB file: the upload progress bar shows, then the message on both sides.
    const big = crypto.randomBytes(20 * 1024 * 1024);
    await watchProgress(alice);
    await attach(alice, { name: 'big.bin', mimeType: 'application/octet-stream', buffer: big });
    await waitStatus(alice, 'Sent big.bin', 120000);
    const up = await progressSeen(alice, 'Uploading big.bin');
    assert.ok(up, 'an upload progress bar labelled "Uploading big.bin" appeared');
    const ciphertext = big.length + 16 * Math.ceil(big.length / 65536);
    assert.equal(up.max, ciphertext, 'the bar measures the ciphertext');
    assert.equal(up.value, ciphertext, 'the bar reached the end');
    await waitText(bubble(alice, 'big.bin'), (t) => t.includes('20 MB'), 'alice\'s own file message');
    await button(alice, 'Download big.bin').waitFor();
    await shot(alice, 'alice', 'sent-big-file');

    const bobBig = bubble(bob, 'big.bin');
    await bobBig.waitFor({ timeout: 60000 });
    await waitText(bobBig, (t) => t.includes('big.bin') && t.includes('20 MB'), 'bob sees name and size');
    await shot(bob, 'bob', 'received-big-file');

    // 2. Bob downloads it through his homeserver: progress, then the saved bytes are the original.
    await watchProgress(bob);
    const downloaded = bob.waitForEvent('download', { timeout: 120000 });
    await button(bob, 'Download big.bin').click();
    const download = await downloaded;
    assert.equal(download.suggestedFilename(), 'big.bin');
    const saved = fs.readFileSync(await download.path());
    assert.equal(saved.length, big.length);
    assert.equal(sha256(saved), sha256(big), 'the saved file is the one alice sent');
    const downBar = await progressSeen(bob, 'Downloading big.bin');
    assert.ok(downBar, 'a download progress bar labelled "Downloading big.bin" appeared');
    assert.ok(downBar.max >= ciphertext && downBar.value > 0, JSON.stringify(downBar));
    await waitStatus(bob, 'Saved big.bin');
    await shot(bob, 'bob', 'downloaded-big-file');

    // 3. An image, dropped onto the conversation: a thumbnail made in the browser, an inline
    // preview on both sides (decrypted from the thumbnail).
    const png = makePng(640, 400);
    await drop(alice, 'gradient.png', 'image/png', png);
    await waitStatus(alice, 'Sent gradient.png', 60000);
    const own = await waitLoadedImage(alice, 'Preview of gradient.png');
    assert.equal(own.src, 'data:');
    await bubble(bob, 'gradient.png').waitFor({ timeout: 60000 });
    const preview = await waitLoadedImage(bob, 'Preview of gradient.png');
    assert.ok(preview.w > 0 && preview.w <= 320 && preview.h <= 320, JSON.stringify(preview));
    assert.equal(preview.w, 320, 'the thumbnail\'s longest side is 320 px');
    await shot(bob, 'bob', 'image-preview');

    // 4. A download whose ciphertext was changed on the way is refused, and nothing is saved.
    await bob.route('**/_parley/client/v1/media/**', async (route) => {
      const response = await route.fetch();
      const body = await response.body();
      body[body.length >> 1] ^= 0x01;
      await route.fulfill({ response, body });
    });
    let savedTampered = false;
    const onDownload = () => { savedTampered = true; };
    bob.on('download', onDownload);
    await button(bob, 'Download gradient.png').click();
    await waitAlert(bob, 'The file was modified or corrupted; it was not saved.');
    await waitText(bubble(bob, 'gradient.png'), (t) => t.includes('modified or corrupted'), 'the note in the message');
    await shot(bob, 'bob', 'tampered-refused');
    await bob.unroute('**/_parley/client/v1/media/**');
    await bob.waitForTimeout(500);
    bob.off('download', onDownload);
    assert.equal(savedTampered, false, 'a tampered file is never saved');

    // Untampered again, the same image downloads and matches.
    const again = bob.waitForEvent('download');
    await button(bob, 'Download gradient.png').click();
    assert.equal(sha256(fs.readFileSync(await (await again).path())), sha256(png));

    // 5. After a reload, file messages (their descriptors, sealed in the vault) are still there
    // and the preview is fetched again.
    await bob.reload();
    await unlock(bob, bobPass);
    await bob.getByRole('button', { name: /^alice, direct message/ }).click();
    await waitText(bubble(bob, 'big.bin'), (t) => t.includes('20 MB'), 'the file message after a reload');
    await waitLoadedImage(bob, 'Preview of gradient.png');
    await button(bob, 'Download big.bin').waitFor();
    await shot(bob, 'bob', 'after-reload');

    assertNoSecretsInConsole(['a file is coming', bobPass]);
  } catch (err) {
    await shootAll();
    throw err;
  } finally {
    await tearDown();
  }
});

test('a file over the server\'s upload limit is refused with a clear error before any upload', { skip: SKIP, timeout: 120000 }, async () => {
  startShots('media-limit');
  consoleLines.length = 0;
  const { origins } = await setUp(1, ['[limits]\nmax_upload_bytes = 1048576']);
  try {
    const alice = await openUser('alice', origins[0]);
    await signUp(alice, 'alice', origins[0], 'alice', 'alice password 1', 'alice vault passphrase');
    await button(alice, 'New conversation').click();
    await alice.getByRole('heading', { name: 'Only you', exact: true }).waitFor();
    const uploads = [];
    alice.on('request', (r) => { if (r.method() === 'POST' && r.url().includes('/_parley/client/v1/media')) uploads.push(r.url()); });

    // 1 MiB of plaintext is 1 MiB + 256 bytes of ciphertext: over the 1 MiB limit.
    await attach(alice, { name: 'exactly-1mib.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(1024 * 1024, 7) });
    await waitAlert(alice, 'exactly-1mib.bin: This file is larger than the server\'s limit of 1 MB.');
    await shot(alice, 'alice', 'over-limit');
    await alice.waitForTimeout(500);
    assert.deepEqual(uploads, [], 'nothing was uploaded');
    assert.equal(await bubble(alice, 'exactly-1mib.bin').count(), 0);

    // A file within the limit goes through, and the error goes away.
    await attach(alice, { name: 'small.txt', mimeType: 'text/plain', buffer: Buffer.from('small enough') });
    await waitStatus(alice, 'Sent small.txt');
    await waitText(bubble(alice, 'small.txt'), (t) => t.includes('12 B'), 'the small file\'s message');
    assert.equal(uploads.length, 1);
    assert.equal(await alice.getByRole('alert').filter({ hasText: 'larger than the server' }).count(), 0);
  } catch (err) {
    await shootAll();
    throw err;
  } finally {
    await tearDown();
  }
});
