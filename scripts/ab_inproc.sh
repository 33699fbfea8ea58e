#!/usr/bin/env bash
# In-process A/B: links the working tree's suspendware and the one at
# BASE_REV into one binary and times the probes of benches/instr.rs in
# alternating chunks (scripts/ab_inproc/main.rs says why).
# Usage: scripts/ab_inproc.sh BASE_REV [ROUNDS [CHUNK [SCENARIO ...]]]
#   e.g. scripts/ab_inproc.sh 6be5902 200 2000 wait10 yield10
# Run an A/A first (BASE_REV=HEAD with a clean tree): the two copies of the
# same code sit at different addresses and differ by a few percent on their
# own; an A/B difference means something only beyond that.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: scripts/ab_inproc.sh BASE_REV [ROUNDS [CHUNK [SCENARIO ...]]]}
shift
ROOT=$PWD
WORK=$ROOT/target/ab_inproc
rm -rf "$WORK/base" "$WORK/harness"
mkdir -p "$WORK/base" "$WORK/harness/src"
git archive "$REV" | tar -x -C "$WORK/base"
# Two packages may not share a name in one build: rename the base's.
sed -i '0,/^name = "suspendware"/s//name = "suspendware_base"/' "$WORK/base/Cargo.toml"
# The base's own workspace members are not needed.
sed -i '/^\[workspace\]/,/^\[/{/^members/d}' "$WORK/base/Cargo.toml"
cp scripts/ab_inproc/main.rs benches/probes.rs "$WORK/harness/src/"
cat > "$WORK/harness/Cargo.toml" <<TOML
[package]
name = "ab-inproc"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
suspendware = { path = "$ROOT", default-features = false }
suspendware_base = { path = "$WORK/base", default-features = false }
tokio = { version = "1", features = ["full"] }

[profile.release]
debug = false

[workspace]
TOML
cargo build --release --quiet --manifest-path "$WORK/harness/Cargo.toml" --target-dir "$WORK/target"
exec taskset -c "${AB_CPU:-1}" "$WORK/target/release/ab-inproc" "$@"
