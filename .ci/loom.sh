#!/usr/bin/env bash
# Runs the loom models (`#[cfg(loom)]` unit tests beside the code they
# check: src/handoff/loom_*.rs, src/stack/loom_pool.rs, src/exec/loom_link.rs,
# src/runtime/loom_models.rs, src/coro/loom_scoped.rs, src/coro/loom_waker.rs)
# against the crate's real code.
#
# Uses its own target dir: `--cfg loom` in RUSTFLAGS changes every crate's
# fingerprint, so sharing the normal target dir would rebuild everything
# twice per CI run. Override with LOOM_TARGET_DIR.
#
#   .ci/loom.sh                 # all models
#   .ci/loom.sh pool_           # models whose name contains `pool_`
#   LOOM_MAX_PREEMPTIONS=3 .ci/loom.sh   # deeper search (slower)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-$PWD/target/loom}"
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
# A failing model prints the interleaving that broke it.
export LOOM_LOCATION=1

# Default features pull in hyper-util/tokio::net, which tokio leaves out
# under cfg(loom); the models need none of them.
exec cargo test --release --no-default-features --lib -- "$@"
