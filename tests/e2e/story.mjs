// The web inbox's story in a real browser (Debian's Chromium, driven by playwright-core):
// a citizen logs in, enrols TOTP and steps up, sends an authoritative message with an
// attachment to an office and sees SubmissionAcceptance; staff open it (and a member gives
// a new colleague the office's key after comparing its fingerprint); ContentHandover
// appears in the citizen's timeline; legal staff find the message, print the receipt and
// export a bundle. axe-core checks every page for WCAG 2.1 A/AA violations; every page is
// screenshotted into $ARTIFACTS. Any failure exits non-zero with the reason.
//
// Run by tests/it/web.rs (web::browser_story), which starts `bote serve` and passes:
//   BASE       https://localhost:PORT
//   CERT       the server certificate (PEM): Chromium trusts exactly its key, by the
//              SHA-256 of its SubjectPublicKeyInfo (--ignore-certificate-errors-spki-list)
//   ARTIFACTS  directory for screenshots and the receipt PDF
//   BUNDLE     where to save the exported proof bundle
//   PASSWORD   the users' password; ANNA_RECOVERY: the citizen's recovery code
import { X509Certificate, createHash, createHmac } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is not set`);
  return v;
};
const BASE = env('BASE');
const ARTIFACTS = env('ARTIFACTS');
mkdirSync(ARTIFACTS, { recursive: true });

const checked = [];
const problems = [];
let shot = 0;

function fail(message) {
  throw new Error(message);
}

// RFC 6238 TOTP (SHA-1, 6 digits, 30 s) of an otpauth:// URI.
function totp(uri) {
  const secret = new URL(uri).searchParams.get('secret');
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/=+$/, '').toUpperCase()) {
    bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30)));
  const mac = createHmac('sha1', Buffer.from(bytes)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1000000;
  return code.toString().padStart(6, '0');
}

// base64 SHA-256 of the SubjectPublicKeyInfo of the first certificate in a PEM file.
function spki(file) {
  const der = new X509Certificate(readFileSync(file)).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

// axe-core on the current page (WCAG 2.1 A and AA), and a screenshot.
async function check(page, name) {
  if (problems.length > 0) fail(problems.join('\n'));
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }),
  );
  shot += 1;
  const file = path.join(ARTIFACTS, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  checked.push({ page: name, url: page.url(), violations: result.violations.length, passes: result.passes.length });
  if (result.violations.length > 0) {
    const detail = result.violations
      .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)
      .join('\n  ');
    fail(`axe: WCAG 2.1 A/AA violations on ${name} (${page.url()}):\n  ${detail}`);
  }
}

async function newPage(browser) {
  const context = await browser.newContext({ acceptDownloads: true, locale: 'en-GB' });
  const page = await context.newPage();
  page.on('console', (m) => {
    // A page that tries anything the CSP forbids (inline script or style) fails the story.
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(`CSP violation on ${page.url()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`script error on ${page.url()}: ${e}`));
  return page;
}

async function login(page, email, name, password = env('PASSWORD')) {
  await page.goto(`${BASE}/`);
  await check(page, `${name}-login`);
  await page.getByLabel('Email address').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForLoadState('load');
}

async function expectText(page, selector, text) {
  const content = await page.locator(selector).innerText();
  if (!content.includes(text)) fail(`expected ${JSON.stringify(text)} in ${selector} on ${page.url()}, got: ${content}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--no-first-run',
    '--disable-component-update',
    '--disable-sync',
    `--ignore-certificate-errors-spki-list=${spki(env('CERT'))}`,
  ],
});
let gatewayId;
try {
  // 1. The citizen logs in (a wrong password first: the error is tied to the fields).
  const anna = await newPage(browser);
  await anna.goto(`${BASE}/`);
  await anna.getByLabel('Email address').fill('anna@lemgo.example');
  await anna.getByLabel('Password').fill('not the password');
  await anna.getByRole('button', { name: 'Log in' }).click();
  await expectText(anna, '#login-error', 'Wrong email address or password');
  await check(anna, 'anna-login-error');
  const remote = [];
  anna.on('request', (r) => {
    if (!r.url().startsWith(BASE)) remote.push(r.url());
  });
  await login(anna, 'anna@lemgo.example', 'anna');
  await expectText(anna, '#session-level', 'normal');
  await check(anna, 'anna-inbox');

  // An office's HTML notice: shown sanitised in a frame without scripts; nothing remote loads.
  await anna.getByRole('link', { name: 'Ihr Bescheid' }).click();
  if ((await anna.locator('iframe.html-body[sandbox=""]').count()) !== 1) fail('no sandboxed frame');
  const frame = anna.frameLocator('iframe.html-body');
  const shown = await frame.locator('body').innerText();
  if (!shown.includes('Bescheid 42') || !shown.includes('Gez. Bauamt')) fail(`frame shows: ${shown}`);
  const markup = await frame.locator('body').innerHTML();
  for (const bad of ['<script', 'onmouseover', 'tracker.example', 'style=']) {
    if (markup.includes(bad)) fail(`${bad} survived in the frame: ${markup}`);
  }
  if ((await anna.title()).includes('pwned')) fail('a script ran');
  await check(anna, 'anna-html-notice');
  if (remote.length > 0) fail(`remote requests: ${remote.join(', ')}`);

  // An authoritative message at level normal is refused, the reason tied to the options.
  await anna.getByRole('link', { name: 'Write' }).click();
  await anna.getByLabel('To', { exact: true }).fill('bauamt@lemgo.example');
  await anna.getByLabel('Sender confirmed (authoritative)').check();
  await anna.getByRole('button', { name: 'Send' }).click();
  await expectText(anna, '#options-error', 'high');
  await check(anna, 'anna-compose-refused');

  // 2. Enrols TOTP with the recovery code (QR code as SVG) and steps up.
  await anna.getByRole('link', { name: 'Security' }).click();
  await check(anna, 'anna-security');
  await anna.getByLabel('Recovery code').fill(env('ANNA_RECOVERY'));
  await anna.getByRole('button', { name: 'Set up a second factor' }).click();
  if ((await anna.locator('.qr svg').count()) !== 1) fail('no QR code');
  const uri = (await anna.locator('#otpauth').innerText()).trim();
  await check(anna, 'anna-totp-qr');
  await anna.getByLabel('One-time code').fill(totp(uri));
  await anna.getByRole('button', { name: 'Confirm code' }).click();
  await expectText(anna, '#session-level', 'high');
  await check(anna, 'anna-high');

  // 3. Writes an authoritative message with an attachment to the office.
  await anna.getByRole('link', { name: 'Write' }).click();
  await anna.getByLabel('To', { exact: true }).fill('bauamt@lemgo.example');
  await anna.getByRole('button', { name: 'Look up recipients' }).click();
  await expectText(anna, '#lookups', 'found in the directory');
  await check(anna, 'anna-compose-lookup');
  await anna.getByLabel('Subject').fill('Bauantrag Gartenhaus');
  await anna.getByLabel('Text', { exact: true }).fill('Sehr geehrte Damen und Herren,\nanbei mein Bauantrag.');
  await anna.getByLabel('Attachments').setInputFiles({
    name: 'Bauantrag.pdf',
    mimeType: 'application/pdf',
    buffer: Buffer.from('%PDF-1.4\n% bote browser test\n'),
  });
  await anna.getByLabel('Sender confirmed (authoritative)').check();
  await anna.getByRole('button', { name: 'Send' }).click();
  await expectText(anna, '#accepted', 'SubmissionAcceptance');
  gatewayId = (await anna.locator('#accepted .mono').innerText()).trim();
  await check(anna, 'anna-sent-accepted');

  // 4. Staff open it: ContentHandover.
  const bernd = await newPage(browser);
  await login(bernd, 'bernd@lemgo.example', 'bernd');
  await check(bernd, 'bernd-inbox');
  await bernd.getByRole('link', { name: 'Bauantrag Gartenhaus' }).click();
  await expectText(bernd, '#attestation', 'verified');
  await expectText(bernd, '#timeline', 'ContentHandover');
  await check(bernd, 'bernd-message');
  await bernd.getByRole('link', { name: 'Settings' }).click();
  await bernd.getByRole('button', { name: 'Create read token' }).click();
  await expectText(bernd, '#new-token', 'bote_token_');
  await check(bernd, 'bernd-settings-token');

  // 4b. The operator added Carl to the office; only a member can give him its key, and
  // only to a key Carl made himself. Carl chooses his own password (bote makes him a new
  // key and recovery code), reads his key's fingerprint to Bernd, who compares it and
  // gives access.
  const carl = await newPage(browser);
  await login(carl, 'carl@lemgo.example', 'carl');
  await expectText(carl, 'main', 'choose your own password under Security first');
  await check(carl, 'carl-pending');
  await carl.getByRole('link', { name: 'Settings' }).click();
  await expectText(carl, '#own-key-not-yet', 'Choose your own password');
  await carl.locator('#own-key-not-yet').getByRole('link', { name: 'Security' }).click();
  await carl.getByLabel('Current password').fill(env('PASSWORD'));
  await carl.getByLabel('New password').fill('carls own long password');
  await check(carl, 'carl-security-password');
  await carl.getByRole('button', { name: 'Change password and make my key' }).click();
  await expectText(carl, '#new-recovery-code', '-');
  await check(carl, 'carl-new-key');
  await login(carl, 'carl@lemgo.example', 'carl-again', 'carls own long password');
  await carl.getByRole('link', { name: 'Settings' }).click();
  const carlKey = (await carl.locator('#own-key').innerText()).trim();
  if (!/^([0-9A-F]{4} ){9}[0-9A-F]{4}$/.test(carlKey)) fail(`Carl's key fingerprint reads ${carlKey}`);
  await check(carl, 'carl-settings-key');
  await bernd.goto(`${BASE}/mail`);
  await expectText(bernd, '#own-password-first', 'Choose your own password');
  await expectText(bernd, '#grants-waiting', 'waits for access');
  await bernd.locator('#grants-waiting').getByRole('link', { name: 'Settings' }).click();
  await expectText(bernd, 'form.grant', carlKey);
  await check(bernd, 'bernd-settings-grant');
  await bernd.getByLabel('I compared this fingerprint with Carl').check();
  await bernd.getByRole('button', { name: /Give access/ }).click();
  await expectText(bernd, '.notice', 'Access given');
  await check(bernd, 'bernd-settings-granted');
  await carl.goto(`${BASE}/mail`);
  await expectText(carl, 'main', 'Bauantrag Gartenhaus');
  if (await carl.locator('#own-password-first').count() !== 0) fail('Carl made his key, yet his inbox asks him to');
  await check(carl, 'carl-inbox');

  // 5. The citizen sees the pickup in her timeline.
  await anna.getByRole('link', { name: 'Sent', exact: true }).first().click();
  await check(anna, 'anna-sent');
  await anna.getByRole('link', { name: 'Bauantrag Gartenhaus' }).click();
  await expectText(anna, '#timeline', 'ContentHandover');
  await expectText(anna, '#receipts', 'REM ContentHandover');
  await check(anna, 'anna-message-handover');

  // 6. Legal staff find it, print the receipt, export the bundle.
  const justiz = await newPage(browser);
  await login(justiz, 'justiz@lemgo.example', 'justiz');
  await check(justiz, 'justiz-search');
  await justiz.getByLabel('Message number or Message-ID').fill(gatewayId);
  await justiz.getByRole('button', { name: 'Search' }).click();
  await expectText(justiz, '#results', 'SubmissionAcceptance');
  await check(justiz, 'justiz-results');
  await justiz.getByRole('link', { name: gatewayId }).first().click();
  await expectText(justiz, 'main', 'ContentHandover');
  await check(justiz, 'justiz-message');
  await justiz.getByRole('link', { name: /Printable receipt/ }).click();
  await expectText(justiz, '#receipt-events', 'ContentHandover');
  await check(justiz, 'justiz-receipt');
  await justiz.emulateMedia({ media: 'print' });
  await justiz.screenshot({ path: path.join(ARTIFACTS, 'receipt-print.png'), fullPage: true });
  await justiz.pdf({ path: path.join(ARTIFACTS, 'receipt.pdf'), format: 'A4' });
  await justiz.emulateMedia({ media: 'screen' });
  const [download] = await Promise.all([
    justiz.waitForEvent('download'),
    justiz.getByRole('button', { name: 'Export proof bundle' }).click(),
  ]);
  await download.saveAs(env('BUNDLE'));

  // 7. The other pages: recovery, German.
  const other = await newPage(browser);
  await other.goto(`${BASE}/recover`);
  await check(other, 'recover');
  await other.getByRole('link', { name: 'Deutsch' }).click();
  await expectText(other, 'h1', 'Passwort zurücksetzen');
  await check(other, 'recover-de');
} finally {
  await browser.close();
}
if (problems.length > 0) fail(problems.join('\n'));
writeFileSync(path.join(ARTIFACTS, 'axe.json'), JSON.stringify(checked, null, 2));
console.log(JSON.stringify({ gateway_id: gatewayId, pages: checked.length }));
