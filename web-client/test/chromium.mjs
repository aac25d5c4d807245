// Debian's Chromium for the browser tests (playwright-core drives it; CHROMIUM_BIN overrides the
// path), headless with the flags this machine needs: no sandbox as root, no GPU, and none of the
// background traffic that a closed network refuses.

import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/** Launches it with `extra` flags besides (e.g. fake media devices). */
export function launchChromium(extra = []) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...FLAGS, ...extra] });
}
