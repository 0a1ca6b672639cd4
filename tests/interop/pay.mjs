// The official x402 v2 client (@x402/fetch + @x402/svm `exact`) pays one request, and prints
// what it saw as one JSON line.
//
// usage: node pay.mjs <url> <rpc-url> <secret-key-file> <asset> <max-amount> [json-body]
//   <secret-key-file>: a Solana CLI keypair file (JSON array of the 64-byte secret key);
//   <asset>, <max-amount>: the mint the client agrees to pay in (it is not one of @x402/svm's
//   default assets, so its spend controls must list it) and the most it pays per request.
//
// Before paying it fetches the URL unpaid and decodes the 402 challenge with @x402/core's own
// decoders (header decoder, zod schema, the HTTP client's parser), so the caller can check that
// our challenge is a valid x402 v2 PaymentRequired.
import { readFileSync } from 'node:fs';
import { createKeyPairSignerFromBytes } from '@solana/kit';
import { x402Client, x402HTTPClient } from '@x402/core/client';
import {
  decodePaymentRequiredHeader,
  decodePaymentResponseHeader,
  decodePaymentSignatureHeader,
} from '@x402/core/http';
import { parsePaymentRequired } from '@x402/core/schemas';
import { wrapFetchWithPayment } from '@x402/fetch';
import { ExactSvmScheme } from '@x402/svm/exact/client';

const [url, rpcUrl, keyFile, asset, maxAmount, body] = process.argv.slice(2);
if (!url || !rpcUrl || !keyFile || !asset || !maxAmount) {
  console.error('usage: node pay.mjs <url> <rpc-url> <secret-key-file> <asset> <max-amount> [json-body]');
  process.exit(2);
}
const init = {
  method: body === undefined ? 'GET' : 'POST',
  headers: body === undefined ? {} : { 'content-type': 'application/json' },
  body,
};

const signer = await createKeyPairSignerFromBytes(
  Uint8Array.from(JSON.parse(readFileSync(keyFile, 'utf8'))),
);
// An x402 client that knows only `exact` on Solana; `rpcUrl` points its chain reads at our RPC.
const client = new x402Client().register('solana:*', new ExactSvmScheme(signer, { rpcUrl }));
const allowed = (network) => ({ network, asset, maxAmountPerPayment: maxAmount });
const httpClient = new x402HTTPClient(client);

// 1. The challenge, decoded by @x402/core.
const unpaid = await fetch(url, init);
const header = unpaid.headers.get('payment-required');
const unpaidText = await unpaid.text();
let unpaidBody;
try {
  unpaidBody = JSON.parse(unpaidText);
} catch {
  unpaidBody = unpaidText;
}
const challenge = { status: unpaid.status, header: header !== null };
if (header !== null) {
  const decoded = decodePaymentRequiredHeader(header);
  const parsed = parsePaymentRequired(decoded);
  challenge.schemaValid = parsed.success;
  challenge.schemaError = parsed.success ? null : String(parsed.error);
  const viaClient = httpClient.getPaymentRequiredResponse((name) => unpaid.headers.get(name), unpaidBody);
  challenge.x402Version = viaClient.x402Version;
  challenge.schemes = viaClient.accepts.map((a) => a.scheme);
  challenge.networks = viaClient.accepts.map((a) => a.network);
  challenge.resource = viaClient.resource ?? null;
  client.setSpendControls({ allowedAssets: [...new Set(challenge.networks)].map(allowed) });
}

// 2. The paid request through the official fetch wrapper; the PAYMENT-SIGNATURE it sends is
// captured to see which requirement the client chose.
let sent = null;
const recordingFetch = async (request) => {
  const signature = request.headers.get('payment-signature');
  if (signature !== null) {
    sent = decodePaymentSignatureHeader(signature);
  }
  return fetch(request);
};
const paidFetch = wrapFetchWithPayment(recordingFetch, client);
let result;
try {
  const paid = await paidFetch(url, init);
  const text = await paid.text();
  const responseHeader = paid.headers.get('payment-response');
  result = {
    status: paid.status,
    body: text,
    paymentResponse: responseHeader === null ? null : decodePaymentResponseHeader(responseHeader),
  };
} catch (error) {
  result = { error: String(error?.stack ?? error) };
}

console.log(
  JSON.stringify({
    challenge,
    payer: signer.address,
    chosen: sent === null ? null : { x402Version: sent.x402Version, accepted: sent.accepted },
    ...result,
  }),
);
