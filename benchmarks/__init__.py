"""Load harness and side-by-side benchmarks (imports clients, never server)."""
