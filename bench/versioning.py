"""Issue 18's figures, under the name the issue gives: diff and merge dry-run
(:mod:`bench.diff`), then bytes sent by a push of a 1 % change (:mod:`bench.push`), each
with its defaults and each beside a baseline measured in the same run.

    python -m bench.versioning

Run either module alone for its options.
"""

from __future__ import annotations

import sys

from bench import diff, push


def main() -> None:
    for module in (diff, push):
        print(f"== {module.__name__}", flush=True)
        sys.argv = [module.__name__]  # each parses its own (default) options
        module.main()


if __name__ == "__main__":
    main()
