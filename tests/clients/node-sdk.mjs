// Sends one call of each type through the official @segment/analytics-node SDK, pointed at a
// collector by host only, then flushes and exits.
//
//   node node-sdk.mjs <host> <writeKey> <runId>
//
// stdout: one JSON array, the calls as they were given to the SDK ({type, params}), so the test
// can look for exactly those in Kafka. Exit code 0 only when the SDK reported no error (a non-2xx
// from the collector is a `delivery_failure` error event) and every call's callback succeeded.
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, runId] = process.argv.slice(2)
if (!host || !writeKey || !runId) {
  console.error('usage: node node-sdk.mjs <host> <writeKey> <runId>')
  process.exit(2)
}

const analytics = new Analytics({
  writeKey,
  host,
  flushAt: 6, // one batch with all six calls
  flushInterval: 60_000,
  maxRetries: 2,
  httpRequestTimeout: 10_000,
})

const errors = []
const requests = []
analytics.on('error', (err) => {
  errors.push({ code: err.code, reason: String(err.reason ?? err.message ?? err) })
})
analytics.on('http_request', (req) => {
  requests.push({ url: req.url, method: req.method })
})

const user = `user-node-${runId}`
const calls = [
  {
    type: 'track',
    params: {
      messageId: `node-${runId}-track`,
      userId: user,
      event: 'Order Completed',
      properties: { order_id: `order-${runId}`, revenue: 42.5, currency: 'EUR', items: [{ sku: 'a-1', qty: 2 }] },
    },
  },
  {
    type: 'identify',
    params: {
      messageId: `node-${runId}-identify`,
      userId: user,
      traits: { email: `${runId}@example.com`, plan: 'pro', logins: 3 },
    },
  },
  {
    type: 'page',
    params: {
      messageId: `node-${runId}-page`,
      userId: user,
      category: 'Docs',
      name: 'Getting Started',
      properties: { path: '/docs/start', run: runId },
    },
  },
  {
    type: 'screen',
    params: {
      messageId: `node-${runId}-screen`,
      userId: user,
      name: 'Checkout',
      properties: { step: 2, run: runId },
    },
  },
  {
    type: 'group',
    params: {
      messageId: `node-${runId}-group`,
      userId: user,
      groupId: `group-${runId}`,
      traits: { name: 'Acme', employees: 12 },
    },
  },
  {
    type: 'alias',
    params: {
      messageId: `node-${runId}-alias`,
      userId: user,
      previousId: `anon-node-${runId}`,
    },
  },
]

const callbacks = calls.map(
  ({ type, params }) =>
    new Promise((resolve) => {
      analytics[type](params, (err) => resolve(err ? `${type}: ${err.reason ?? err}` : null))
    })
)

await analytics.closeAndFlush({ timeout: 20_000 })
let timer
const callbackErrors = (await Promise.race([
  Promise.all(callbacks),
  new Promise((resolve) => {
    timer = setTimeout(() => resolve(['callbacks did not complete']), 5_000)
  }),
])).filter(Boolean)
clearTimeout(timer)

process.stdout.write(JSON.stringify(calls) + '\n')
if (errors.length || callbackErrors.length || requests.length === 0) {
  console.error(JSON.stringify({ errors, callbackErrors, requests }))
  process.exit(1)
}
