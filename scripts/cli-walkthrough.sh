#!/usr/bin/env bash
# The docs/cli.md walkthrough, run as written: a localnet, the facilitator and the provider in the
# background, a new default keypair, funds, paid requests over a session, the session listed and
# shown (text and --json), topped up, closed (request_close) and, past its dispute deadline,
# finalized.
#
# Uses a built binary: $X402PP_BIN, else $CARGO_TARGET_DIR/debug/x402pp, else target/debug/x402pp
# (`cargo build -p x402pp` makes it). Runs in a temporary HOME and XDG_DATA_HOME, so the real
# ~/.config/solana/id.json and agent store are never touched; services listen on free ports and
# are stopped on exit. Waits for each service by polling its health endpoint, with a deadline.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${X402PP_BIN:-}
if [[ -z $bin ]]; then
    for candidate in "${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/debug/x402pp}" "$repo/target/debug/x402pp"; do
        if [[ -n $candidate && -x $candidate ]]; then bin=$candidate; break; fi
    done
fi
if [[ -z $bin || ! -x $bin ]]; then
    echo "error: no x402pp binary: set X402PP_BIN or build it with \`cargo build -p x402pp\`" >&2
    exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
# Seconds each service has to answer its health check (a debug build starts slower).
deadline_secs=${X402PP_WALKTHROUGH_DEADLINE_SECS:-120}

work=$(mktemp -d "${TMPDIR:-/tmp}/x402pp-walkthrough.XXXXXX")
pids=()
logs=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $status -ne 0 ]]; then
        for log in "${logs[@]}"; do
            echo "--- last lines of $(basename "$log")" >&2
            tail -n 30 "$log" >&2 || true
        done
        echo "walkthrough FAILED (exit $status)" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

# A clean environment: a temporary home, none of the caller's X402PP_* settings (the escrow .so
# of an SBF CI run excepted), and `x402pp` on PATH so the commands read as in docs/cli.md.
export HOME=$work/home XDG_DATA_HOME=$work/data XDG_CONFIG_HOME=$work/config
mkdir -p "$HOME" "$XDG_DATA_HOME" "$XDG_CONFIG_HOME" "$work/bin"
while read -r name; do
    [[ $name == X402PP_ESCROW_SO ]] || unset "$name"
done < <(compgen -e | grep '^X402PP_' || true)
ln -s "$bin" "$work/bin/x402pp"
export PATH=$work/bin:$PATH

step() { echo; echo "== $*"; }
# `show COMMAND...`: prints the command as one would type it, then runs it.
show() {
    local line="\$" arg
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:@=,+-]+$ ]]; then line+=" $arg"; else line+=" '$arg'"; fi
    done
    echo "$line"
    "$@"
}
fail() { echo "error: $*" >&2; exit 1; }
# `json_field NAME < json`: the first string value of NAME (enough for our flat lookups).
json_field() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" | head -n 1; }
# `wait_until WHAT PID COMMAND...`: polls COMMAND until it succeeds, PID dies, or the deadline.
wait_until() {
    local what=$1 pid=$2
    shift 2
    local until=$((SECONDS + deadline_secs))
    until "$@" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || fail "$what exited before it was ready"
        ((SECONDS < until)) || fail "$what not ready after ${deadline_secs}s"
        sleep 0.2
    done
}
# A port nothing listens on, below the kernel's ephemeral range (32768-60999 on Linux): a port
# in that range can be the local end of any outbound connection (the localnet's own, a test's),
# and binding it then fails with "Address already in use" although nothing listens (CI saw it).
free_port() {
    local port low
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % (low > 20100 ? low - 20000 : 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    fail "no free port"
}
rpc_healthy() {
    curl -sf -X POST -H 'Content-Type: application/json' \
        -d '{"jsonrpc":"2.0","id":1,"method":"getHealth"}' "$1" | grep -q '"ok"'
}
started() { pids+=("$1"); }

step "localnet (background)"
echo "\$ x402pp localnet --port 0 --state-dir $work/localnet --json &"
x402pp localnet --port 0 --state-dir "$work/localnet" --json \
    >"$work/localnet.json" 2>"$work/localnet.log" &
started $!
logs+=("$work/localnet.log")
wait_until "localnet" "$!" grep -q rpcUrl "$work/localnet.json"
rpc=$(json_field rpcUrl <"$work/localnet.json")
mint=$(json_field usdcMint <"$work/localnet.json")
faucet=$work/localnet/faucet.json
wait_until "localnet RPC" "${pids[-1]}" rpc_healthy "$rpc"
echo "RPC $rpc, test USDC mint $mint, faucet $faucet"
# Every later command reads the cluster from here (-u on each command works too).
export X402PP_RPC_URL=$rpc

step "facilitator (background)"
echo "\$ x402pp facilitator --fee-payer-keypair $faucet --listen 127.0.0.1:0 &"
x402pp facilitator --fee-payer-keypair "$faucet" --listen 127.0.0.1:0 \
    >"$work/facilitator.out" 2>"$work/facilitator.log" &
started $!
logs+=("$work/facilitator.log")
wait_until "facilitator" "$!" grep -q 'on http://' "$work/facilitator.out"
facilitator=$(sed -n 's/.* on \(http:\/\/[^ ]*\).*/\1/p' "$work/facilitator.out" | head -n 1)
wait_until "facilitator /health" "${pids[-1]}" curl -sf "$facilitator/health"

step "provider (background)"
port=$(free_port)
provider=http://127.0.0.1:$port
echo "\$ x402pp provider --keypair $faucet --mint $mint --facilitator-url $facilitator --listen 127.0.0.1:$port &"
x402pp provider --keypair "$faucet" --mint "$mint" --facilitator-url "$facilitator" \
    --listen "127.0.0.1:$port" --database-url "sqlite://$work/ledger.sqlite?mode=rwc" \
    >"$work/provider.out" 2>"$work/provider.log" &
started $!
logs+=("$work/provider.log")
wait_until "provider /health" "$!" curl -sf "$provider/health"

step "a wallet at the default path (~/.config/solana/id.json), funded"
show x402pp keygen
show x402pp address
show x402pp config
[[ -f $HOME/.config/solana/id.json ]] || fail "keygen did not write the default keypair"
show x402pp fund --sol 1 --usdc 10

step "pay requests (a session opens on the first)"
show x402pp agent "$provider/v1/inference" -d '{"prompt":"hi"}'
printf '{"prompt":"from a file"}' >"$work/prompt.json"
show x402pp agent "$provider/v1/inference" -H 'X-Request-Id: walkthrough-2' -d "@$work/prompt.json" \
    --json >"$work/paid.json"
cat "$work/paid.json"
grep -q '"scheme": "session"' "$work/paid.json" || fail "the second request was not paid by session"
grep -q '"status": 200' "$work/paid.json" || fail "the second request did not succeed"

step "a metered, streamed chat completion (tokens as they come, the receipt verified at the end)"
show x402pp agent "$provider/v1/chat/completions" --stream \
    -d '{"model":"x402pp-toy-1","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":16}' \
    2>"$work/stream.err"
cat "$work/stream.err"
grep -q 'verified at stream end: 16 units out' "$work/stream.err" \
    || fail "the streamed completion's receipt was not verified at its end"

step "sessions"
show x402pp session list
show x402pp session list --json >"$work/sessions.json"
cat "$work/sessions.json"
session=$(json_field session <"$work/paid.json")
[[ -n $session ]] || fail "no session listed"
show x402pp session show "$session"
show x402pp session show "$session" --json >"$work/session.json"
grep -q '"requestNumber": 2' "$work/session.json" || fail "session show lacks the second receipt"

step "top up, request close, finalize"
show x402pp session top-up "$session" 0.5 --json >"$work/topup.json"
cat "$work/topup.json"
grep -q '"amount": "500000"' "$work/topup.json" || fail "top-up of 0.5 USDC was not 500000 atomic units"
show x402pp session request-close "$session" --json >"$work/close.json"
cat "$work/close.json"
grep -q '"claimDeadline": *[0-9]' "$work/close.json" || fail "request-close reported no claim deadline"
deadline=$(sed -n 's/.*"disputeDeadline": *\([0-9]*\).*/\1/p' "$work/close.json")
[[ -n $deadline ]] || fail "request-close reported no dispute deadline"
# The provider's settler sees the close request within a tick and records its best voucher on
# chain (docs/server.md); wait for that before moving the clock, or the claim window would be
# gone and finalize would pay the provider nothing.
settled() { tr -d ' \n' <"$work/show.json" | grep -q '"settled":{"amount":"[1-9]'; }
for _ in $(seq 1 120); do
    x402pp session show "$session" --json >"$work/show.json"
    settled && break
    sleep 0.5
done
settled || fail "the provider's settler recorded no voucher after the close request"
# Localnet only: move the chain's clock past the dispute deadline (end + 2 x grace; finalize is
# refused until then) instead of waiting for it.
curl -sf -X POST -H 'Content-Type: application/json' \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"localnet_warpClock\",\"params\":{\"unixTimestamp\":$((deadline + 1))}}" \
    "$rpc" >/dev/null
show x402pp session finalize "$session"
show x402pp session list
x402pp session list --json >"$work/list.json"
grep -q '"state": "closed"' "$work/list.json" || fail "the finalized session is not closed"

echo
echo "walkthrough OK"
