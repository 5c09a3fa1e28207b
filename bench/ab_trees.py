"""Interleaved A/B of two code trees: ``bench/inprocess.py`` run alternately on each.

    python bench/ab_trees.py --base /tmp/idv-base --rounds 4 -n 200 -- --only totp

Each round runs ``inprocess.py`` once per tree (in a fresh process, ``PYTHONPATH`` set to that
tree, so its own ``service`` package is imported: checked before the first round), alternating
which tree goes first, and reads the median wall and CPU microseconds of one row (``--row``,
default the TOTP proof). The machine's speed drifts from minute to minute, so the figure to
read is the ratio within each round (head / base) and the median of those ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HEAD = Path(__file__).resolve().parent.parent


def run_tree(tree: Path, n: int, extra: list[str], row: str) -> tuple[float, float]:
    """One ``inprocess.py`` run of ``tree``: (median us, CPU us) of ``row``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(tree / "bench" / "inprocess.py"), "-n", str(n), *extra]
    out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=True).stdout
    match = re.search(rf"^{re.escape(row)}\s+(\d+)\s+(\d+)", out, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no {row!r} row in the output of {tree}:\n{out}")
    return float(match.group(1)), float(match.group(2))


def imported_from(tree: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = "import service, os; print(os.path.dirname(os.path.dirname(service.__file__)))"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True, check=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other tree (git worktree)")
    parser.add_argument("--head", type=Path, default=HEAD, help="default: this tree")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("-n", type=int, default=200, help="requests per run")
    parser.add_argument("--row", default="TOTP proof")
    parser.add_argument("extra", nargs="*", help="more inprocess.py arguments (after --)")
    args = parser.parse_args()
    trees = {"base": args.base.resolve(), "head": args.head.resolve()}
    for name, tree in trees.items():
        found = imported_from(tree)
        if Path(found).resolve() != tree:
            raise SystemExit(f"{name}: PYTHONPATH={tree} imports service from {found}")
    print(f"A/B of {args.row!r}: base {trees['base']}, head {trees['head']}; -n {args.n}")
    print(f"{'round':<7}{'base us':>9}{'head us':>9}{'ratio':>7}", end="")
    print(f"{'base CPU':>10}{'head CPU':>10}{'ratio':>7}")
    wall, cpu = [], []
    for i in range(args.rounds):
        order = ["base", "head"] if i % 2 == 0 else ["head", "base"]
        got = {name: run_tree(trees[name], args.n, args.extra, args.row) for name in order}
        (bw, bc), (hw, hc) = got["base"], got["head"]
        wall.append(hw / bw)
        cpu.append(hc / bc)
        print(f"{i + 1:<7}{bw:>9.0f}{hw:>9.0f}{hw / bw:>7.3f}{bc:>10.0f}{hc:>10.0f}{hc / bc:>7.3f}")
    print(f"median head/base: wall {statistics.median(wall):.3f}, CPU {statistics.median(cpu):.3f}")


if __name__ == "__main__":
    main()
