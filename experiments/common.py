"""Helpers shared by the experiments: the run header, logging, progress bars, seeds and the
result files (CSV, markdown table, PNG). Experiments import this module; `rexjax` never does.

Every study writes to `experiments/results/` (or `--out`): a CSV of the raw rows, a markdown
table of the headline numbers and a PNG, each named after the study.
"""

import csv
import datetime
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path


RESULTS = Path(__file__).parent / "results"


def header(title: str) -> str:
    """One line that dates a run and names the machine it ran on."""
    import jax

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    return (
        f"{title}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{device.platform.upper()} ({kind}) x{jax.device_count()}, {os.cpu_count()} cores, "
        f"{platform.machine()}, jax {jax.__version__}"
    )


class Log:
    """Print messages (flushed) and keep them for the saved log."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, msg: str = "") -> None:
        print(msg, flush=True)
        self.lines.append(msg)

    def save(self, path: str | Path, append: bool = False) -> None:
        """Write the log; `append` (a `--resume` run) keeps what an earlier run wrote there."""
        path, text = Path(path), "\n".join(self.lines) + "\n"
        if append and path.exists():
            text = path.read_text() + "\n--- resumed ---\n" + text
        path.write_text(text)


def progress(items: Iterable, desc: str = "", total: int | None = None):
    """A progress bar on stderr (tqdm when installed, a plain counter otherwise)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the experiments extra
        return _plain_progress(items, desc, total)
    return tqdm(items, desc=desc, total=total, file=sys.stderr, dynamic_ncols=True)


def _plain_progress(items, desc, total):
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    for i, item in enumerate(items):
        sys.stderr.write(f"\r{desc} {i + 1}/{total or '?'}")
        sys.stderr.flush()
        yield item
    sys.stderr.write("\n")


def key(seed: int):
    """The PRNG key of a named seed; every study draws its randomness from these."""
    import jax

    return jax.random.key(seed)


def out_dir(path: str | Path | None) -> Path:
    """The results folder (created)."""
    out = Path(path) if path is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_csv(rows: Sequence[dict], path: str | Path) -> None:
    """Rows of dicts (same keys) as a CSV file."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str | Path) -> list[dict]:
    """A CSV file as rows of dicts, numbers converted (int, then float, else str)."""

    def convert(value):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return value

    with open(path, newline="") as f:
        return [{k: convert(v) for k, v in row.items()} for row in csv.DictReader(f)]


def fmt(value, spec: str = ".2e") -> str:
    """A table cell: numbers formatted with `spec`, everything else as text."""
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def markdown_table(rows: Sequence[Sequence], headers: Sequence[str], spec: str = ".2e") -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v, spec) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_markdown(path: str | Path, title: str, sections: Sequence[tuple[str, str]]) -> None:
    """A markdown result file: a title (with the run header) and (heading, body) sections."""
    parts = [f"# {title}\n"]
    parts += [f"## {heading}\n\n{body}\n" for heading, body in sections]
    Path(path).write_text("\n".join(parts))


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed (the
    studies then skip their plots and say so)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
