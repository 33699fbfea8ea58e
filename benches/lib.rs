//! Nothing here: the benches are `micro.rs` and `compare.rs` (`cargo bench -p suspendware-benches`).
