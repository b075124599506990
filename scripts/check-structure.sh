#!/usr/bin/env bash
# Crate direction, checked by CI before the tests (a few seconds): a controller crate
# (every crate under crates/ but the agents, the QEMU driver, the binary that assembles
# them, and the test kit) never depends on an agent crate, on stratus-qemu or on
# netlink, directly or through another crate. They meet only through the contract
# crates (*-proto); agents may appear as dev-dependencies, for in-process tests.
# (The layer direction inside a service, item 2 of #17, is not checked yet.)
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden='^(stratus-[a-z-]+-agent|stratus-qemu|rtnetlink|netlink-[a-z-]+) '
status=0
for manifest in crates/*/Cargo.toml; do
    name=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -n1)
    case "$name" in
        *-agent | stratus-qemu | stratus | stratus-testkit) continue ;;
    esac
    # A failing `cargo tree` (e.g. a stale Cargo.lock) stops the check: never "ok" unread.
    deps=$(cargo tree --locked -q -p "$name" -e normal,build --prefix none)
    if bad=$(grep -E "$forbidden" <<<"$deps" | sort -u); then
        echo "crate direction: controller crate $name depends on agent-side crates:" >&2
        echo "$bad" | sed 's/^/    /' >&2
        echo "  (reach agents through a contract crate, e.g. stratus-compute-proto; agents only as dev-dependencies)" >&2
        status=1
    else
        echo "crate direction: $name ok"
    fi
done

exit $status
