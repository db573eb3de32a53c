// Opens a page in headless Debian Chromium (driven by playwright-core, no downloaded browser) and
// waits until every event the page's analytics-next sent was accepted by the collector.
//
//   node browser.mjs <pageUrl>
//
// The page (tests/clients/page/index.html) publishes `window.__cdpTest = {done, sent, error,
// failedDelivery}`; `sent` holds the events exactly as the library built them.
//
// Every request that leaves 127.0.0.1 / localhost is aborted and reported (the settings document
// and the events must come from and go to the collector only, never Segment's CDN or API).
//
// stdout: one JSON object {pageOrigin, result, requests, foreign, pageErrors, console, problems}.
// Exit code 0 only when `problems` is empty.
import { chromium } from 'playwright-core'

const pageUrl = process.argv[2]
if (!pageUrl) {
  console.error('usage: node browser.mjs <pageUrl>')
  process.exit(2)
}
const timeoutMs = Number(process.env.CDP_BROWSER_TIMEOUT_MS ?? 30_000)
const executablePath = process.env.CDP_CHROMIUM ?? '/usr/bin/chromium'
const pageOrigin = new URL(pageUrl).origin

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]'])
const requests = [] // every request the page made, with its outcome
const foreign = [] // requests aimed away from this machine (aborted)
const pageErrors = []
const consoleLines = []
const problems = []

function parseBody(text) {
  if (text == null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

const browser = await chromium.launch({
  executablePath,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
})
let result = null
try {
  const context = await browser.newContext()
  // Anything not on loopback — in particular *.segment.com (CDN, bundles) and *.segment.io (API) —
  // is aborted and counted as a failure.
  await context.route(
    (url) => !LOOPBACK.has(url.hostname),
    async (route) => {
      foreign.push({ method: route.request().method(), url: route.request().url() })
      await route.abort('blockedbyclient')
    }
  )
  const page = await context.newPage()
  page.on('pageerror', (err) => pageErrors.push(String(err)))
  page.on('console', (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`))
  const byRequest = new Map()
  page.on('request', (req) => {
    const entry = {
      method: req.method(),
      url: req.url(),
      body: req.method() === 'POST' ? parseBody(req.postData()) : null,
      status: null,
      allowOrigin: null,
      failure: null,
    }
    byRequest.set(req, entry)
    requests.push(entry)
  })
  page.on('response', async (res) => {
    const entry = byRequest.get(res.request())
    if (!entry) return
    entry.status = res.status()
    entry.allowOrigin = (await res.allHeaders())['access-control-allow-origin'] ?? null
  })
  page.on('requestfailed', (req) => {
    const entry = byRequest.get(req)
    if (entry) entry.failure = req.failure()?.errorText ?? 'failed'
  })

  // A request that failed, or that the collector refused, ends the wait at once (analytics-next
  // keeps retrying, or never resolves `load()` when its settings cannot be had).
  const refused = () => requests.filter((r) => r.failure || (r.status !== null && r.status >= 400))
  const deadline = Date.now() + timeoutMs
  await page.goto(pageUrl, { waitUntil: 'load', timeout: timeoutMs })
  for (;;) {
    result = await page.evaluate(() => window.__cdpTest ?? null)
    if (result?.done) break
    if (refused().length || foreign.length || pageErrors.length) {
      result = result ?? { done: false }
      break
    }
    if (Date.now() > deadline) throw new Error(`the page did not finish within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  if (!result.done) problems.push('the page did not finish')

  if (result.error) problems.push(`page script failed: ${result.error}`)
  if (result.failedDelivery?.length) problems.push(`analytics-next reported failed delivery: ${JSON.stringify(result.failedDelivery)}`)

  // Wait until the collector answered 2xx, with a CORS header for this page, to a POST carrying
  // each sent messageId.
  const accepted = (messageId) =>
    requests.some(
      (r) =>
        r.method === 'POST' &&
        new URL(r.url).origin !== pageOrigin &&
        r.status >= 200 &&
        r.status < 300 &&
        r.allowOrigin === pageOrigin &&
        (r.body?.messageId === messageId || // single event (/v1/p, /v1/t, ...)
          (Array.isArray(r.body?.batch) && r.body.batch.some((e) => e?.messageId === messageId))) // batching (/v1/b)
    )
  const ids = (result.sent ?? []).map((e) => e.messageId)
  while (!ids.every(accepted) && !refused().length && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  const missing = ids.filter((id) => !accepted(id))
  if (missing.length) problems.push(`no accepted cross-origin POST for messageIds ${missing.join(', ')}`)
  if (!ids.length && result.done && !result.error) problems.push('the page sent no events')
  for (const r of refused()) {
    problems.push(`${r.method} ${r.url} ${r.failure ? `failed: ${r.failure}` : `answered ${r.status}`}`)
  }
} catch (e) {
  problems.push(`browser run failed: ${e?.stack ?? e}`)
} finally {
  await browser.close()
}

if (foreign.length) problems.push(`requests left this machine: ${foreign.map((f) => f.url).join(', ')}`)
if (pageErrors.length) problems.push(`uncaught page errors: ${pageErrors.join(' | ')}`)

process.stdout.write(
  JSON.stringify({ pageOrigin, result, requests, foreign, pageErrors, console: consoleLines, problems }) + '\n'
)
if (problems.length) {
  for (const p of problems) console.error(p)
  process.exit(1)
}
