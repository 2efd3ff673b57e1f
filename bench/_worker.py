"""The subprocess side: ``python -m bench._worker module:function provider params-json``.

It puts the global tracer provider in the asked state before anything else can, runs
the function and prints its result as one JSON line after :data:`RESULT_PREFIX`.
"""

from __future__ import annotations

import importlib
import json
import sys

from ._harness import RESULT_PREFIX, install_sdk, quiet_hangguard_logging


def main(argv: list[str]) -> int:
    target, provider, raw = argv
    if provider in ("sdk", "sdk+metrics"):
        install_sdk(metrics=provider == "sdk+metrics")
    elif provider != "none":
        raise SystemExit(f"provider must be 'none', 'sdk' or 'sdk+metrics', got {provider!r}")
    quiet_hangguard_logging()
    module_name, _, func_name = target.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    result = func(json.loads(raw))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
