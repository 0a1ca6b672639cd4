// The official x402 v2 facilitator (@x402/core's x402Facilitator + @x402/svm `exact`), served
// over HTTP the way x402 facilitators are (POST /verify, POST /settle, GET /supported), on a
// chain we choose. Prints {"url": ..., "feePayer": ...} as one JSON line once it listens, then
// serves until killed (or until stdin closes).
//
// usage: node facilitator.mjs <rpc-url> <fee-payer-key-file> <network> <registration>
//   <fee-payer-key-file>: a Solana CLI keypair file (JSON array of the 64-byte secret key);
//   <network>: the CAIP-2 id it settles on (its chain reads and sends go to <rpc-url>);
//   <registration>: `standard` (registerExactSvmScheme: the v2 kind and, for networks x402 v1
//   knows, the v1 kind too) or `v2-only` (x402Facilitator.register with the v2 scheme alone).
import { readFileSync } from 'node:fs';
import express from 'express';
import { createKeyPairSignerFromBytes } from '@solana/kit';
import { x402Facilitator } from '@x402/core/facilitator';
import { toFacilitatorSvmSigner } from '@x402/svm';
import { ExactSvmScheme, registerExactSvmScheme } from '@x402/svm/exact/facilitator';

const [rpcUrl, keyFile, network, registration] = process.argv.slice(2);
if (!rpcUrl || !keyFile || !network || !['standard', 'v2-only'].includes(registration)) {
  console.error('usage: node facilitator.mjs <rpc-url> <fee-payer-key-file> <network> <standard|v2-only>');
  process.exit(2);
}

const keypair = await createKeyPairSignerFromBytes(
  Uint8Array.from(JSON.parse(readFileSync(keyFile, 'utf8'))),
);
const signer = toFacilitatorSvmSigner(keypair, { defaultRpcUrl: rpcUrl });
const facilitator = new x402Facilitator();
if (registration === 'standard') {
  registerExactSvmScheme(facilitator, { signer, networks: network });
} else {
  facilitator.register(network, new ExactSvmScheme(signer));
}

// Amounts may be BigInts inside the SDK: JSON them as strings.
const json = (res, status, value) =>
  res
    .status(status)
    .type('application/json')
    .send(JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v)));

const app = express();
app.use(express.json({ limit: '1mb' }));
app.get('/supported', (_req, res) => json(res, 200, facilitator.getSupported()));
for (const route of ['verify', 'settle']) {
  app.post(`/${route}`, async (req, res) => {
    const { paymentPayload, paymentRequirements } = req.body ?? {};
    if (!paymentPayload || !paymentRequirements) {
      return json(res, 400, { error: 'paymentPayload and paymentRequirements are required' });
    }
    try {
      const answer = await facilitator[route](paymentPayload, paymentRequirements);
      if (answer.isValid === false || answer.success === false) {
        console.error(`facilitator.mjs /${route}: ${JSON.stringify(answer)}`);
      }
      json(res, 200, answer);
    } catch (error) {
      json(res, 500, { error: String(error?.message ?? error) });
    }
  });
}

const server = app.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  console.log(JSON.stringify({ url: `http://127.0.0.1:${port}`, feePayer: keypair.address }));
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
