"""The rexjax demo: `python -m rexjax` (or the `rexjax` command).

Subcommands:

- `solvers`: the solver-accuracy table on the built-in analytic Gaussian mixture (NFE, error
  against a high-accuracy reference, exact-inversion round trip, wall time per solver).
"""

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="rexjax", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="solvers", choices=["solvers"])
    opts, rest = parser.parse_known_args(argv)
    if opts.command == "solvers":
        from ._demo_mixture import main as run
    run(rest)


if __name__ == "__main__":
    main()
