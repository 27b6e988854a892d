"""Print `make mutation`'s figures: killed/survived per module and every survivor by name.

mutmut 3 keeps each mutant's exit code in mutants/<path>.meta (JSON); this reads those files
rather than mutmut's own summary, which counts all modules together. A survivor named in
docs/mutation.md is "equivalent" (with its reason there) or, under the "Accepted survivors"
heading, "accepted" (a real but harmless difference, with why); any other survivor is "NEW"
and needs a test or an explanation. The score is the usual mutation
score, killed / (total - equivalent): an equivalent mutant cannot be killed by any test, so it
leaves the denominator, and only by being named with its reason in docs/mutation.md.
`--diff` prints each survivor's diff (via `mutmut show`). Exit status 1 when any module has a
new survivor or scores under the target, so a regression shows without reading the table.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("payments", "chronopay", "money", "signing", "store/sqlite", "delivery", "billing")
TARGET = 0.90
# mutmut's exit codes (mutmut/stats.py): 1 and 3 are a failing test run, 36/24/152/255 a
# timeout (the mutant looped: also a kill), 37 the type checker; 0 survived; 5/33 no test ran.
KILLED = {1, 3, 24, -24, 36, 37, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


def load(module):
    """The module's mutant name -> exit code, or None when mutmut has not run on it."""
    path = os.path.join(ROOT, "mutants", "gateway", module + ".py.meta")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as meta:
        return json.load(meta)["exit_code_by_key"]


ACCEPTED = "## Accepted survivors"


def explained():
    """docs/mutation.md as (equivalent part, accepted part): a mutant named in backquotes
    before the ACCEPTED heading is equivalent (its reason beside it), after it accepted (a
    real difference judged not worth a test: log wording, a random id's length)."""
    path = os.path.join(ROOT, "docs", "mutation.md")
    if not os.path.exists(path):
        return "", ""
    with open(path, encoding="utf-8") as doc:
        text = doc.read()
    equivalent, _, accepted = text.partition(ACCEPTED)
    return equivalent, accepted


def main(argv):
    doc, accepted = explained()
    failed = False
    rows, survivors = [], []
    for module in MODULES:
        codes = load(module)
        if codes is None:
            print(f"{module}: no results (run `make mutation`)")
            failed = True
            continue
        killed = sum(code in KILLED for code in codes.values())
        lost = sorted((name for name, code in codes.items() if code not in KILLED),
                      key=_natural)
        marks = {name: "equivalent" if f"`{name}`" in doc else
                 "accepted" if f"`{name}`" in accepted else "NEW" for name in lost}
        new = [name for name in lost if marks[name] == "NEW"]
        equivalent = sum(mark == "equivalent" for mark in marks.values())
        scored = len(codes) - equivalent
        share = killed / scored if scored else 1.0
        rows.append((module, killed, len(lost), len(codes), share, equivalent))
        for name in lost:
            kind = "no test ran" if codes[name] in NO_TESTS else (
                "survived" if codes[name] in SURVIVED else f"exit {codes[name]}")
            survivors.append((name, kind, marks[name]))
        if new or share < TARGET:
            failed = True
    print(f"{'module':<12}{'killed':>8}{'survived':>10}{'equivalent':>11}{'total':>8}"
          f"{'raw %':>8}{'score':>8}")
    for module, killed, lost, total, share, known in rows:
        print(f"{module:<12}{killed:>8}{lost:>10}{known:>11}{total:>8}{killed / total:>8.1%}"
              f"{share:>8.1%}")
    if rows:
        killed, total = sum(r[1] for r in rows), sum(r[3] for r in rows)
        known = sum(r[5] for r in rows)
        print(f"{'all':<12}{killed:>8}{total - killed:>10}{known:>11}{total:>8}"
              f"{killed / total:>8.1%}{killed / (total - known):>8.1%}")
    print(f"\nSurvivors ({len(survivors)}; equivalent and accepted ones are named in "
          "docs/mutation.md):")
    for name, kind, mark in survivors:
        print(f"  {name}  [{kind}, {mark}]")
        if "--diff" in argv:
            shown = subprocess.run([os.path.join(os.path.dirname(sys.executable), "mutmut"),
                                    "show", name], cwd=ROOT, capture_output=True, text=True)
            print("    " + shown.stdout.strip().replace("\n", "\n    "))
    if failed:
        print(f"\nA module scores under {TARGET:.0%} or has a NEW survivor.")
    return 1 if failed else 0


def _natural(name):
    """Sort mutant names by function, then by mutant number."""
    stem, _, number = name.rpartition("__mutmut_")
    return (stem, int(number) if number.isdigit() else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
