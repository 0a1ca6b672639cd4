#!/usr/bin/env python3
"""Assemble the escrow program's IDL from Anchor's idl-build test output, without the Anchor CLI.

    cargo test -p session-escrow --features idl-build __anchor_private_print_idl \
        -- --show-output --quiet > /tmp/idl.out
    python3 programs/session-escrow/idl/assemble.py /tmp/idl.out > programs/session-escrow/idl/session_escrow.json

Does what `anchor idl build` does (anchor-lang-idl 0.1.4, build.rs): address, errors, events
(+ their types) and the program section merged, module paths shortened when unambiguous, lists
sorted by name. It also merges the `manual account` sections (the `Dispute` account, which Anchor
cannot see because the program creates it by hand).
"""
import json
import re
import sys


def sections(text):
    current, lines = None, []
    for line in text.splitlines():
        begin = re.fullmatch(r"--- IDL begin (.+) ---", line)
        end = re.fullmatch(r"--- IDL end (.+) ---", line)
        if begin:
            current, lines = begin.group(1), []
        elif end and current is not None:
            yield current, "\n".join(lines)
            current = None
        elif current is not None:
            lines.append(line)


def shorten_paths(idl_json):
    """Replace "a::b::Name" by "Name" unless another path ends with the same name."""
    out = idl_json
    for match in re.finditer(r'"(\w+::)+(\w+)"', idl_json):
        path, name = match.group(0), match.group(2)
        replaced = out.replace(path, f'"{name}"')
        if not re.search(rf'"(\w+::)+{name}"', replaced):
            out = replaced
    return out


def main(path):
    text = open(path, encoding="utf-8").read()
    address, errors, program = "", [], None
    events, types, accounts = [], {}, []
    for kind, body in sections(text):
        if kind == "address":
            address = json.loads(body)
        elif kind == "errors":
            errors = json.loads(body)
        elif kind == "event":
            printed = json.loads(body)
            events.append(printed["event"])
            types.update({t["name"]: t for t in printed["types"]})
        elif kind == "program":
            program = json.loads(body)
        elif kind == "manual account":
            printed = json.loads(body)
            accounts.append(printed["account"])
            types[printed["type"]["name"]] = printed["type"]
    if program is None:
        sys.exit("no program section in the input")
    types.update({t["name"]: t for t in program.get("types", [])})
    idl = {
        "address": address,
        "metadata": program["metadata"],
        "docs": program.get("docs", []),
        "instructions": program["instructions"],
        "accounts": program.get("accounts", []) + accounts,
        "events": events,
        "errors": errors,
        "types": list(types.values()),
    }
    if not idl["docs"]:
        del idl["docs"]
    idl = json.loads(shorten_paths(json.dumps(idl)))
    for key in ("accounts", "events", "instructions", "types"):
        idl[key].sort(key=lambda item: item["name"])
    print(json.dumps(idl, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/dev/stdin")
