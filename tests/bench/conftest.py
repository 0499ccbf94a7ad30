# Benchmarks are scripts, run by hand (python tests/bench/bench_*.py); pytest must not collect them.
collect_ignore_glob = ["*.py"]
