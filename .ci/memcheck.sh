#!/usr/bin/env bash
# Runs the fiber core's and the bridge's tests under valgrind's memcheck.
# memcheck follows corosensei's stack switches here (the fiber stacks are
# ordinary mmap'd memory to it): these suites report 0 errors, and an
# invalid read or write on a fiber stack fails the run (--error-exitcode).
# Leaks are not checked: the strict executor leaks its wakers on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
  if command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq valgrind) >/dev/null
  else
    echo "memcheck: valgrind not found and no apt-get; skipping" >&2
    exit 0
  fi
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUNNER"
export "$var"="valgrind -q --tool=memcheck --error-exitcode=9"
cargo test --lib -- coro:: future:: --test-threads=1
cargo test --test core_waker --test core_unwind --test core_drop_paths \
  --test core_context_lifetime --test context_request_local_nesting \
  --test core_bridge --test core_cancel --test bridge_blocking_borrow --test core_order \
  --test core_panic -- --test-threads=1
