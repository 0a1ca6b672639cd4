// Reads the latest blockhash, an account and a token balance from an x402pp localnet with the
// standard @solana/kit client, and prints what it saw as one JSON line.
//
// usage: node check.mjs <rpc-url> <account> <token-account>
import { address, createSolanaRpc } from '@solana/kit';

const [url, account, tokenAccount] = process.argv.slice(2);
if (!url || !account || !tokenAccount) {
  console.error('usage: node check.mjs <rpc-url> <account> <token-account>');
  process.exit(2);
}
const rpc = createSolanaRpc(url);

const { value: latest } = await rpc.getLatestBlockhash({ commitment: 'confirmed' }).send();
const { value: valid } = await rpc.isBlockhashValid(latest.blockhash, { commitment: 'processed' }).send();
const { value: info } = await rpc.getAccountInfo(address(account), { encoding: 'base64' }).send();
const { value: balance } = await rpc.getBalance(address(account)).send();
const { value: parsed } = await rpc
  .getAccountInfo(address(tokenAccount), { encoding: 'jsonParsed' })
  .send();
const { value: tokenBalance } = await rpc.getTokenAccountBalance(address(tokenAccount)).send();
const slot = await rpc.getSlot().send();

console.log(
  JSON.stringify({
    blockhash: latest.blockhash,
    lastValidBlockHeight: latest.lastValidBlockHeight.toString(),
    blockhashValid: valid,
    lamports: info.lamports.toString(),
    balance: balance.toString(),
    owner: info.owner,
    parsedProgram: parsed.data.program,
    parsedType: parsed.data.parsed.type,
    parsedMint: parsed.data.parsed.info.mint,
    amount: tokenBalance.amount,
    decimals: tokenBalance.decimals,
    uiAmountString: tokenBalance.uiAmountString,
    slot: slot.toString(),
  }),
);
