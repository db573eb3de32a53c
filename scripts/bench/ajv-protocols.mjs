// Protocols baseline: ajv doing tracking-plan enforcement from raw event bytes, single thread.
//
//   node scripts/bench/ajv-protocols.mjs tests/fixtures/protocols/events-mixed.jsonl [plan.json]
//
// Per event, inside the timed loop (what the Rust validator's benchmark must also do):
//   bytes (one Buffer per line, as a Kafka record value) -> JSON.parse -> pick the validator by
//   type (track: by `event` name, exact match; identify/group: the plan's traits schema) ->
//   validate(properties ?? {}) / validate(traits ?? {}) -> output bytes:
//     valid     -> the input Buffer, unchanged (forwarded as is)
//     invalid   -> Buffer.from(JSON.stringify({verdict:"invalid", messageId, type, event, violations}))
//     unplanned -> Buffer.from(JSON.stringify({verdict:"unplanned", messageId, type, event}))
//   violations: [{type, field, description}] mapped from ajv errors (Segment's context.protocols style).
// Other call types (page, screen, alias) pass through as valid.
// Unplanned *properties*: the plan's schemas do not set additionalProperties, so JSON Schema accepts
// them and by default they are valid here. BENCH_UNPLANNED_PROPERTIES=1 also checks a track event's
// top-level property keys against the planned ones (as Segment does, separately from the schema):
// extra keys then make the event invalid with {type:"Unplanned Property", field:"properties.<key>"}.
//
// ajv: new Ajv({allErrors: true, strict: false}) + ajv-formats (draft-07 validates "format";
// without ajv-formats ajv would silently skip format: date-time), one compiled validator per event.
// Timing: warm-up (BENCH_WARMUP_S, default 1 s), then whole passes over the file until
// BENCH_SECONDS (default 5) have elapsed. Prints one JSON line.
// ajv and ajv-formats come from tests/clients (scripts/install-deps.sh --test-clients, or
// npm ci --prefix tests/clients). Fixtures: python3 tests/fixtures/protocols/gen.py.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const require = createRequire(path.join(repo, 'tests/clients/package.json'));
try {
  require.resolve('ajv');
} catch {
  console.error('ajv not installed: run npm ci --prefix tests/clients');
  process.exit(2);
}
const AjvMod = require('ajv');
const Ajv = AjvMod.default ?? AjvMod;
const formatsMod = require('ajv-formats');
const addFormats = formatsMod.default ?? formatsMod;
const ajvVersion = require('ajv/package.json').version;

const file = process.argv[2];
if (!file) {
  console.error('usage: node scripts/bench/ajv-protocols.mjs <events.jsonl> [plan.json]');
  process.exit(2);
}
const planFile = process.argv[3] ?? path.join(repo, 'tests/fixtures/protocols/plan-50.json');
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const warmupSeconds = Number(process.env.BENCH_WARMUP_S ?? 1);
const checkUnplanned = process.env.BENCH_UNPLANNED_PROPERTIES === '1';

// --- compile
const plan = JSON.parse(readFileSync(planFile, 'utf8'));
const ajv = new Ajv({ allErrors: true, strict: false });
addFormats(ajv);
const trackValidators = new Map();
const plannedKeys = new Map();
for (const e of plan.events) {
  trackValidators.set(e.name, ajv.compile(e.rules));
  plannedKeys.set(e.name, new Set(Object.keys(e.rules.properties ?? {})));
}
const identifyValidator = plan.identify ? ajv.compile(plan.identify) : null;
const groupValidator = plan.group ? ajv.compile(plan.group) : null;

// --- input: one Buffer per line, each its own allocation like a consumed Kafka record
const raw = readFileSync(file);
const records = [];
for (let start = 0; start < raw.length; ) {
  let end = raw.indexOf(0x0a, start);
  if (end === -1) end = raw.length;
  if (end > start) records.push(Buffer.from(raw.subarray(start, end)));
  start = end + 1;
}
if (records.length === 0) {
  console.error(`${file}: no events`);
  process.exit(1);
}

const VIOLATION_TYPE = {
  type: 'Invalid Type',
  required: 'Required',
  enum: 'Invalid Enum',
  minimum: 'Invalid Minimum',
  maximum: 'Invalid Maximum',
  pattern: 'Invalid Pattern',
  format: 'Invalid Format',
};

function violations(errors, root) {
  const out = new Array(errors.length);
  for (let i = 0; i < errors.length; i++) {
    const e = errors[i];
    let field = root + e.instancePath.replaceAll('/', '.');
    if (e.keyword === 'required') field += '.' + e.params.missingProperty;
    out[i] = { type: VIOLATION_TYPE[e.keyword] ?? e.keyword, field, description: e.message };
  }
  return out;
}

const VALID = 0, INVALID = 1, UNPLANNED = 2;
let verdict = VALID;

// bytes in -> bytes out; sets `verdict`
function unplannedKeys(data, planned) {
  let out = null;
  for (const k in data) {
    if (!planned.has(k)) (out ??= []).push({
      type: 'Unplanned Property', field: 'properties.' + k, description: k + ' is not in the tracking plan',
    });
  }
  return out;
}

function enforce(buf) {
  const ev = JSON.parse(buf);
  let validate, data, root, extra = null;
  switch (ev.type) {
    case 'track':
      validate = trackValidators.get(ev.event);
      if (validate === undefined) {
        verdict = UNPLANNED;
        return Buffer.from(JSON.stringify({
          verdict: 'unplanned', messageId: ev.messageId, type: ev.type, event: ev.event,
        }));
      }
      data = ev.properties ?? {};
      root = 'properties';
      if (checkUnplanned) extra = unplannedKeys(data, plannedKeys.get(ev.event));
      break;
    case 'identify':
      validate = identifyValidator;
      data = ev.traits ?? {};
      root = 'traits';
      break;
    case 'group':
      validate = groupValidator;
      data = ev.traits ?? {};
      root = 'traits';
      break;
    default:
      validate = null;
  }
  if (validate === null || validate(data)) {
    if (extra === null) {
      verdict = VALID;
      return buf;
    }
  }
  verdict = INVALID;
  const found = validate.errors ? violations(validate.errors, root) : [];
  return Buffer.from(JSON.stringify({
    verdict: 'invalid', messageId: ev.messageId, type: ev.type, event: ev.event ?? null,
    violations: extra === null ? found : found.concat(extra),
  }));
}

// --- one untimed pass for the verdict counts
const counts = [0, 0, 0];
let outBytes = 0;
for (const buf of records) {
  outBytes += enforce(buf).length;
  counts[verdict]++;
}

function runFor(s) {
  const deadline = process.hrtime.bigint() + BigInt(Math.round(s * 1e9));
  let n = 0, sink = 0;
  const t0 = process.hrtime.bigint();
  let now = t0;
  while (now < deadline) {
    for (let i = 0; i < records.length; i++) sink += enforce(records[i]).length;
    n += records.length;
    now = process.hrtime.bigint();
  }
  return { n, ns: Number(now - t0), sink };
}

runFor(warmupSeconds);
const { n, ns, sink } = runFor(seconds);
if (sink === 0) console.error('no output bytes?');

console.log(JSON.stringify({
  file,
  events_per_sec: Math.round(n / (ns / 1e9)),
  valid: counts[VALID],
  invalid: counts[INVALID],
  unplanned: counts[UNPLANNED],
  unplanned_properties_checked: checkUnplanned,
  events: records.length,
  in_bytes_avg: Math.round(raw.length / records.length),
  out_bytes_avg: Math.round(outBytes / records.length),
  events_timed: n,
  seconds: +(ns / 1e9).toFixed(3),
  ajv: ajvVersion,
  node: process.version,
}));
