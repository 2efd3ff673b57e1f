"""hangguard's benchmarks: its cost against what users would write without it.

Each benchmark measures a hangguard variant and its raw baseline pair by pair in the
same process (alternating, round after round) and prints one table per benchmark: the
median over rounds, min/max, the median of the per-round ratios, and pass/fail against
the target of the benchmark issue. Variants that need a particular global tracer
provider (none installed, or the SDK with a BatchSpanProcessor) run in a subprocess of
their own, because a process can set its global provider only once::

    python -m bench smoke      # every benchmark, small N, one round (CI runs this)
    python -m bench all        # the full run whose table is in docs/performance.md
    python -m bench fanout --sizes 1000,10000 --rounds 5

A benchmark is not a test: it reports figures and never fails on a missed target.
"""
