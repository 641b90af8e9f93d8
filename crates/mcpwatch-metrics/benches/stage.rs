//! Benchmark of the metrics stage.
fn main() {}
