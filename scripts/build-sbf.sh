#!/usr/bin/env bash
# Builds the escrow program to an SBF `.so` without Solana's platform-tools, with the SBF tool in
# ../shared/sbf (or $X402PP_SBF_TOOL), and prints the path of the `.so` on stdout.
#
#   so=$(scripts/build-sbf.sh [cargo args])       # target dir: $X402PP_SBF_TARGET_DIR or ~/.cache/x402pp-sbf-target
#   X402PP_ESCROW_SO=$so cargo test -p session-escrow     # every escrow test on the real BPF loader
#
# The first run installs the tool's patched linker and std (minutes; cached in ~/.cache/x402pp-sbf).
# The build is a behavioural stand-in for `anchor build` (docs/program.md): deploy what `anchor build`
# makes on a machine with platform-tools.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tool=${X402PP_SBF_TOOL:-$root/../shared/sbf}
target=${X402PP_SBF_TARGET_DIR:-$HOME/.cache/x402pp-sbf-target}
if [[ ! -x $tool/build.sh ]]; then
    echo "no SBF tool at $tool (set X402PP_SBF_TOOL)" >&2
    exit 2
fi
"$tool/install.sh" >&2
"$tool/build.sh" "$root/programs/session-escrow" "$target" -p session-escrow "$@" >/dev/null
# build.sh leaves a copy named as solana-program-test and deploy tools expect it.
so=$target/deploy/session_escrow.so
[[ -f $so ]] || { echo "the build left no $so" >&2; exit 1; }
echo "$so"
