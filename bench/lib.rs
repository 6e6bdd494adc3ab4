//! Criterion benchmarks live in `benches/`; comparison scripts beside this file.
