#!/usr/bin/env bash
# Live heap per in-flight (suspended) request of the working tree's
# suspendware, counted by a counting global allocator
# (scripts/heap_inflight/main.rs).
# Usage: scripts/heap_inflight.sh [N [K]]     SZ=<bytes> ... for a backtrace
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/target/heap_inflight
mkdir -p "$WORK/src"
cp scripts/heap_inflight/main.rs "$WORK/src/"
cat > "$WORK/Cargo.toml" <<TOML
[package]
name = "heap-inflight"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
suspendware = { path = "$ROOT", default-features = false }
tokio = { version = "1", features = ["full"] }
http = "1"

[profile.release]
debug = "line-tables-only"

[workspace]
TOML
cargo build --release --quiet --manifest-path "$WORK/Cargo.toml" --target-dir "$WORK/target"
exec "$WORK/target/release/heap-inflight" "$@"
