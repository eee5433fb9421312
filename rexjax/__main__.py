"""The rexjax demo: `python -m rexjax` (or the `rexjax` command).

Subcommands:

- `digits` (the default): edit real handwritten digits with the built-in trained model: invert
  held-out digits, reconstruct them (round-trip error), edit them into other classes, write a
  PNG grid and print a metrics table per solver.
- `solvers`: the solver-accuracy table on the built-in analytic Gaussian mixture (NFE, error
  against a high-accuracy reference, exact-inversion round trip, wall time per solver).

`python -m rexjax digits --help` and `python -m rexjax solvers --help` list their options.
"""

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("digits", "solvers")
    # No subcommand (or only options): the digits demo.
    if not argv or argv[0] not in commands and argv[0] not in ("-h", "--help"):
        argv = ["digits", *argv]
    parser = argparse.ArgumentParser(prog="rexjax", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=commands)
    opts, rest = parser.parse_known_args(argv[:1])
    rest += argv[1:]
    if opts.command == "solvers":
        from ._demo_mixture import main as run
    else:
        from ._demo_digits import main as run
    run(rest)


if __name__ == "__main__":
    main()
