// The official `@x402/extensions/bazaar` reads our discovery data, and prints what it found as
// one JSON line.
//
// usage: node bazaar.mjs challenge <url> [json-body]
//   fetches <url> unpaid (POST with <json-body> when given, else GET), decodes PAYMENT-REQUIRED
//   with @x402/core, and runs the bazaar extension through `validateDiscoveryExtensionSpec`,
//   `validateDiscoveryExtension` (the Ajv JSON Schema 2020-12 check of `info` against `schema`)
//   and `extractDiscoveryInfo` (the facilitator side, on the payload an official client would
//   send: the challenge's resource and extensions echoed, its first option accepted).
// usage: node bazaar.mjs list <facilitator-url> [type]
//   lists the facilitator's catalog with `withBazaar(new HTTPFacilitatorClient(...))`'s
//   `listResources`, then validates every item's bazaar extension.
import { decodePaymentRequiredHeader } from '@x402/core/http';
import { HTTPFacilitatorClient } from '@x402/core/server';
import {
  extractDiscoveryInfo,
  validateDiscoveryExtension,
  validateDiscoveryExtensionSpec,
  withBazaar,
} from '@x402/extensions/bazaar';

const [mode, url, arg] = process.argv.slice(2);

async function challenge() {
  const init = arg === undefined
    ? { method: 'GET' }
    : { method: 'POST', headers: { 'content-type': 'application/json' }, body: arg };
  const unpaid = await fetch(url, init);
  const header = unpaid.headers.get('payment-required');
  const report = { status: unpaid.status, header: header !== null };
  if (header === null) return report;
  const required = decodePaymentRequiredHeader(header);
  const bazaar = required.extensions?.bazaar;
  report.extensionKeys = Object.keys(required.extensions ?? {});
  report.bazaar = bazaar ?? null;
  if (bazaar === undefined) return report;
  report.spec = validateDiscoveryExtensionSpec(bazaar);
  report.schema = validateDiscoveryExtension(bazaar);
  const payload = {
    x402Version: 2,
    resource: required.resource,
    accepted: required.accepts[0],
    payload: {},
    extensions: required.extensions,
  };
  report.discovered = extractDiscoveryInfo(payload, required.accepts[0]);
  return report;
}

async function list() {
  const client = withBazaar(new HTTPFacilitatorClient({ url }));
  const listed = await client.extensions.bazaar.listResources(arg === undefined ? {} : { type: arg });
  const checks = listed.items.map((item) =>
    item.extensions?.bazaar === undefined ? null : validateDiscoveryExtension(item.extensions.bazaar),
  );
  return { listed, checks };
}

try {
  if (mode === 'challenge' && url) {
    console.log(JSON.stringify(await challenge()));
  } else if (mode === 'list' && url) {
    console.log(JSON.stringify(await list()));
  } else {
    console.error('usage: node bazaar.mjs challenge <url> [json-body] | list <facilitator-url> [type]');
    process.exit(2);
  }
} catch (error) {
  console.log(JSON.stringify({ error: String(error?.stack ?? error) }));
  process.exit(1);
}
