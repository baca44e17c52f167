/**
 * The status page (GET /status) in a real browser against a real local mesh
 * (three regions, one backend each, as `npm start` runs it): Debian's
 * Chromium driven by playwright-core. It signs in with the admin token by
 * keyboard, finds the three regions and backends, some traffic and a closed
 * settlement batch, sees a killed backend turn `down` within 15 s, fits a
 * 375 px phone without sideways scrolling, and logs no console error nor
 * asks any origin but the edge. It saves a 1280x800 screenshot to
 * .mesh/status-page.png, and to STATUS_SCREENSHOT too when that names a file
 * (the README's docs/status-page.png). Without a Chromium (test/helpers/
 * chromium.ts) the file says so and skips; `.ci/run` installs one.
 */

import { copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../../scripts/local-mesh.ts';
import { decodePayload, type ReceiptClaims } from '../../shared/jwt.ts';
import { CHROMIUM_MISSING, findChromium } from '../helpers/chromium.ts';
import { useMesh } from '../helpers/mesh.ts';
import { settle } from '../helpers/settlement.ts';

// The page's globals, for the callbacks that run in the page (page.evaluate, waitForFunction): this program has no DOM lib.
declare const document: any;
declare const window: any;
declare const sessionStorage: any;
declare const localStorage: any;
declare const performance: any;

const CHROMIUM = findChromium();
if (!CHROMIUM) console.warn(`[status-page] ${CHROMIUM_MISSING}`);

/** A backend is `down` 5 s after its last heartbeat (workers/status/collect.ts); backends beat every 1 s, the page polls every 2 s. */
const DOWN_WITHIN_MS = 15_000;
const SCREENSHOT = path.join(ROOT, '.mesh', 'status-page.png');
/** PoPs the test's requests enter at, so that the map and the PoP table have traffic to show. */
const POPS = ['SIN', 'CGK', 'NRT', 'SYD', 'FRA', 'LHR', 'IAD', 'GRU'];

/** backend id -> the state its row shows. */
const backendStates = (page: Page) =>
  page.$$eval('#backends tbody tr[data-backend]', (rows) =>
    Object.fromEntries(rows.map((r) => [r.getAttribute('data-backend'), r.querySelector('[data-state]')?.textContent ?? ''])),
  );
const focused = (page: Page) => page.evaluate(() => ({ id: document.activeElement?.id ?? '', text: document.activeElement?.textContent?.trim() ?? '', inMain: !!document.activeElement?.closest('#main') }));

describe.skipIf(!CHROMIUM)('the status page in Chromium', () => {
  const local = useMesh();
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];
  const requested: string[] = [];

  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM!, headless: true, timeout: 30_000 });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.setDefaultTimeout(15_000);
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console.error: ${m.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
    // A poll in flight when the test reloads the page is aborted by the reload: not a failure of the page.
    page.on('requestfailed', (r) => {
      if (r.failure()?.errorText !== 'net::ERR_ABORTED') problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`);
    });
    page.on('request', (r) => requested.push(r.url()));
  });
  afterAll(async () => {
    await Promise.race([browser?.close(), new Promise((r) => setTimeout(r, 10_000))]);
  });

  it('asks for a token, which the keyboard reaches after the skip link, and keeps it in the tab only', async () => {
    const { edgeUrl, adminToken } = local.mesh();
    await page.goto(`${edgeUrl}/status`);
    await page.waitForSelector('#token', { state: 'visible' });
    expect(await page.getAttribute('#token', 'type')).toBe('password');
    expect(await page.textContent('label[for="token"]')).toBe('Token');
    await page.keyboard.press('Tab');
    expect((await focused(page)).text).toBe('Skip to the status');
    await page.keyboard.press('Tab');
    expect((await focused(page)).id).toBe('token');
    await page.keyboard.type(adminToken);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#backends tbody tr[data-backend]');
    expect(await page.isVisible('#signin')).toBe(false);
    const stored = await page.evaluate(() => ({ session: Object.values(sessionStorage), local: localStorage.length, cookie: document.cookie }));
    expect(stored).toEqual({ session: [adminToken], local: 0, cookie: '' });
  });

  it('shows three regions and three backends, warm, in the tables and on the map', async () => {
    await page.waitForFunction(() => document.querySelectorAll('#backends tbody tr[data-backend]').length === 3);
    const regions = await page.$$eval('#regions tbody tr[data-region]', (rows) => rows.map((r) => r.getAttribute('data-region')));
    expect(regions.sort()).toEqual(['ap-southeast', 'eu-west', 'us-east']);
    expect(await backendStates(page)).toEqual({ 'fra-1': 'warm', 'iad-1': 'warm', 'sg-1': 'warm' });
    expect(await page.$$eval('#map-markers .backend-mark', (marks) => marks.length)).toBe(3);
    expect(await page.getAttribute('#map', 'aria-label')).toContain('3 backends: 3 warm');
    expect(await page.textContent('#summary')).toMatch(/^3 regions with backends; 3 backends: 3 warm;/);
    expect(await page.textContent('#age')).toMatch(/^Updated \d+ s ago\.$/);
    expect(await page.textContent('#live')).toBe('Live, updating every 2 s.');
  });

  it('shows traffic by PoP and the closed settlement batch, without a reload', async () => {
    const { edgeUrl, consumerKey, adminToken } = local.mesh();
    let sent = 0;
    const infer = async (pop: string) => {
      const res = await fetch(`${edgeUrl}/v2/models/embed/infer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${consumerKey}`, 'content-type': 'application/json', 'x-mesh-dev-colo': pop },
        body: JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [`status page ${sent++} from ${pop}`] }] }),
      });
      expect(res.status, await res.clone().text()).toBe(200);
      await res.arrayBuffer();
      return decodePayload<ReceiptClaims>(res.headers.get('x-mesh-receipt') ?? '')!.jti;
    };
    const jtis: string[] = [];
    for (const pop of [...POPS, ...POPS.slice(0, 4)]) jtis.push(await infer(pop));
    await settle(edgeUrl, adminToken, jtis);
    // No request follows: the isolate's counts still reach the directories within 2 s (workers/directory/traffic-report.ts).
    const navigations = await page.evaluate(() => performance.getEntriesByType('navigation').length);
    await page.waitForFunction((n) => document.querySelectorAll('#pops tbody tr[data-pop]').length === n, POPS.length);
    await page.waitForSelector('#batches tbody tr[data-batch]');
    expect(await page.evaluate(() => performance.getEntriesByType('navigation').length)).toBe(navigations);
    expect(await page.$$eval('#map-markers .pop-mark', (marks) => marks.length)).toBe(POPS.length);
    // Where the traffic went: every PoP's requests were answered by one of the three regions, drawn as a line to it.
    const served = await page.$$eval('#pops tbody tr[data-pop] [data-served]', (cells) => cells.map((c) => c.textContent ?? ''));
    expect(served).toHaveLength(POPS.length);
    for (const text of served) expect(text).toMatch(/^(?:ap-southeast|eu-west|us-east) \d+(?:, (?:ap-southeast|eu-west|us-east) \d+)*$/);
    expect(await page.$$eval('#map-markers .flow', (lines) => lines.length)).toBeGreaterThanOrEqual(POPS.length);
    const receipts = await page.$$eval('#batches tbody tr[data-batch]', (rows) => rows.map((r) => Number(r.children[3]?.textContent?.replace(/,/g, ''))));
    expect(receipts.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(jtis.length);
    expect(await page.textContent('#batches tbody tr[data-batch] td:nth-child(5)')).toMatch(/^\$\d/);
  });

  it(`shows a killed backend as down within ${DOWN_WITHIN_MS / 1000} s, and saves the screenshot`, async () => {
    const victim = local.mesh().backends.find((b) => b.id === 'fra-1')!;
    const killed = Date.now();
    await victim.stop(true);
    await page.waitForFunction(
      () => document.querySelector('#backends tr[data-backend="fra-1"] [data-state]')?.textContent === 'down',
      null,
      { timeout: DOWN_WITHIN_MS },
    );
    console.log(`[status-page] fra-1 shown down ${((Date.now() - killed) / 1000).toFixed(1)} s after it was killed`);
    expect(await backendStates(page)).toEqual({ 'fra-1': 'down', 'iad-1': 'warm', 'sg-1': 'warm' });
    expect(await page.textContent('#regions tr[data-region="eu-west"] td')).toMatch(/^1 down/);
    expect(await page.$$eval('#map-markers .backend-mark.state-down', (marks) => marks.length)).toBe(1);

    await page.evaluate(() => window.scrollTo(0, 0));
    await mkdir(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT });
    if (process.env.STATUS_SCREENSHOT) await copyFile(SCREENSHOT, path.resolve(process.env.STATUS_SCREENSHOT));
  });

  it('fits a 375 px wide phone without scrolling the page sideways (the tables scroll in their boxes)', async () => {
    await page.setViewportSize({ width: 375, height: 812 });
    try {
      await page.waitForFunction(() => window.innerWidth === 375);
      const widths = await page.evaluate(() => ({
        viewport: document.documentElement.clientWidth,
        page: document.documentElement.scrollWidth,
        body: document.body.scrollWidth,
        map: document.getElementById('map')!.getBoundingClientRect().width,
      }));
      expect(widths.page, JSON.stringify(widths)).toBeLessThanOrEqual(widths.viewport);
      expect(widths.body, JSON.stringify(widths)).toBeLessThanOrEqual(widths.viewport);
      expect(widths.map).toBeGreaterThan(300);
      await page.screenshot({ path: path.join(path.dirname(SCREENSHOT), 'status-page-phone.png'), fullPage: true });
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  });

  it('takes the keyboard from the skip link into the status, and forgets the token on request', async () => {
    await page.reload();
    await page.waitForSelector('#backends tbody tr[data-backend]');
    await page.keyboard.press('Tab');
    expect((await focused(page)).text).toBe('Skip to the status');
    await page.keyboard.press('Enter');
    expect((await focused(page)).id).toBe('main');
    await page.keyboard.press('Tab');
    expect((await focused(page)).inMain).toBe(true);

    await page.click('#forget');
    await page.waitForSelector('#token', { state: 'visible' });
    expect((await focused(page)).id).toBe('token');
    expect(await page.isVisible('#dashboard')).toBe(false);
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
  });

  it('forgets a refused token and asks again with the server\'s message', async () => {
    // A page of its own: the browser logs the 401 as a console error, which the main page must not have.
    const other = await browser.newPage();
    try {
      await other.goto(`${local.mesh().edgeUrl}/status`);
      await other.fill('#token', 'not-a-token');
      await other.press('#token', 'Enter');
      await other.waitForFunction(() => (document.getElementById('token-error')?.textContent ?? '') !== '');
      expect(await other.textContent('#token-error')).toMatch(/^The token was refused: .+ \((?:invalid_token|unauthorized)\)$/);
      expect(await other.isVisible('#token')).toBe(true);
      expect(await other.evaluate(() => sessionStorage.length)).toBe(0);
    } finally {
      await other.close();
    }
  });

  it('logged no console error and asked nothing of any origin but the edge', () => {
    const edge = new URL(local.mesh().edgeUrl).origin;
    expect(problems).toEqual([]);
    expect(requested.length).toBeGreaterThan(5);
    expect([...new Set(requested.map((u) => new URL(u).origin))]).toEqual([edge]);
  });
});
