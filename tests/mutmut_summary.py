"""Per-module table of a mutmut run (``make mutants``; docs/p3b.md "Mutation testing").

Reads ``mutmut results --all true`` on stdin and prints, per mutated module, the number of mutants killed,
survived, timed out and without a covering test, and the score ``killed / (killed + survived + timeout)``
(mutants no selected test reaches are listed, not scored). ``--survivors`` also lists the surviving mutants.
"""

from __future__ import annotations

import collections
import re
import sys

STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious", "skipped", "segfault", "not checked")


def main() -> None:
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    survivors = []
    for line in sys.stdin:
        if ": " not in line:
            continue
        name, status = line.strip().rsplit(": ", 1)
        table[re.sub(r"\.x[_ǁ].*", "", name)][status] += 1
        if status == "survived":
            survivors.append(name)
    cols = [s for s in STATUSES if any(c[s] for c in table.values())]
    print(f"| module | {' | '.join(cols)} | score |")
    print("|---|" + "---|" * (len(cols) + 1))
    total: collections.Counter = collections.Counter()
    for module in sorted(table):
        c = table[module]
        total.update(c)
        print(f"| {module} | {' | '.join(str(c[s]) for s in cols)} | {_score(c)} |")
    print(f"| **all** | {' | '.join(str(total[s]) for s in cols)} | {_score(total)} |")
    if "--survivors" in sys.argv:
        print("\n".join(["", "survivors:"] + survivors))


def _score(c: collections.Counter) -> str:
    scored = c["killed"] + c["survived"] + c["timeout"]
    return f"{100 * c['killed'] / scored:.1f} %" if scored else "-"


if __name__ == "__main__":
    main()
