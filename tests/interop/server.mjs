// An official x402 v2 resource server (@x402/express + @x402/svm `exact`) that uses a remote
// facilitator through @x402/core's HTTPFacilitatorClient. Prints {"url": ...} as one JSON line
// once it listens, then serves until killed (or until stdin closes).
//
// usage: node server.mjs <facilitator-url> <network> <asset> <pay-to> <amount>
//   GET /paid answers {"content": "paid content"} after an `exact` payment of <amount> atomic
//   units of <asset> to <pay-to> on <network> (CAIP-2).
import express from 'express';
import { HTTPFacilitatorClient } from '@x402/core/server';
import { paymentMiddleware, x402ResourceServer } from '@x402/express';
import { ExactSvmScheme } from '@x402/svm/exact/server';

const [facilitatorUrl, network, asset, payTo, amount] = process.argv.slice(2);
if (!facilitatorUrl || !network || !asset || !payTo || !amount) {
  console.error('usage: node server.mjs <facilitator-url> <network> <asset> <pay-to> <amount>');
  process.exit(2);
}

const facilitator = new HTTPFacilitatorClient({ url: facilitatorUrl });
const resourceServer = new x402ResourceServer(facilitator).register(network, new ExactSvmScheme());

const app = express();
app.use(
  paymentMiddleware(
    {
      'GET /paid': {
        accepts: { scheme: 'exact', price: { amount, asset }, network, payTo },
        description: 'interop test content',
        mimeType: 'application/json',
      },
    },
    resourceServer,
  ),
);
app.get('/paid', (_req, res) => {
  res.json({ content: 'paid content' });
});

const server = app.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  console.log(JSON.stringify({ url: `http://127.0.0.1:${port}` }));
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
