"""The ``classsize`` command line.

Every command turns bad input into one line on standard error naming the file, row,
column or field, and exit status 2; nothing is written in that case.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


def _setup_jax(chains: int | None = None) -> None:
    """Expose the machine's cores as JAX devices before JAX starts (parallel chains)."""
    import numpyro

    n = os.cpu_count() or 1
    numpyro.set_host_device_count(max(n, chains or 1) if chains else n)


def _load_config(path: str | None):
    from classsize.model import Config

    return Config() if path is None else Config.from_toml(path)


def _prepare_out_dir(out: str, force: bool, names: list[str]) -> Path:
    """Refuse a non-empty output folder unless --force."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: output path exists and is not a folder")
    if path.exists() and any(path.iterdir()) and not force:
        raise UsageError(f"{path}: output folder is not empty (use --force to write into it)")
    return path


# ---------------------------------------------------------------------- commands
def cmd_simulate(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    if args.replicates < 1:
        raise UsageError(f"--replicates must be >= 1, got {args.replicates}")
    if args.format == "parquet" and args.engine == "notebook":
        raise UsageError("--format parquet is written by the model engine only (use --format csv with --engine notebook)")
    out = _prepare_out_dir(args.out, args.force, [])
    from classsize.model.jaxcache import enable_compilation_cache

    enable_compilation_cache()
    last = args.seed + args.replicates - 1
    if args.format == "parquet":
        from classsize.model.simulate import write_replicates

        write_replicates(out, config, args.seed, args.replicates, "parquet")
        print(f"wrote {args.replicates} datasets (seeds {args.seed}..{last}) to "
              f"{out / 'students.parquet'}, {out / 'classes.parquet'}, {out / 'truth.json'}")
        return 0
    if args.engine == "notebook":
        from classsize.model.notebook import simulate_notebook

        for k in range(args.replicates):
            ds = simulate_notebook(config, args.seed + k)
            ds.write(out if args.replicates == 1 else out / f"replicate_{k:04d}")
    elif args.replicates == 1:
        from classsize.model import simulate

        ds = simulate(config, args.seed)
        ds.write(out)
    else:
        from classsize.model.simulate import write_replicates

        write_replicates(out, config, args.seed, args.replicates, "csv")
    if args.replicates > 1:
        print(f"wrote {args.replicates} datasets (seeds {args.seed}..{last}) under {out}")
    else:
        print(ds.summary())
        print(f"wrote {out / 'students.csv'}, {out / 'classes.csv'}, {out / 'truth.json'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: simulate the notebook's data, then fit it."""
    from classsize.model import Config, simulate

    out = _prepare_out_dir(args.out, args.force, [])
    data_dir = out / "data"
    ds = simulate(Config(), args.seed)
    ds.write(data_dir)
    print(f"Simulated the notebook's experiment (seed {args.seed}) into {data_dir}:")
    print(ds.summary())
    from .compare import compare_models

    print()
    return compare_models(data_dir, out / "compare", quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="classsize",
        description="The class-size experiment as one NumPyro model: simulate, fit, teach.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="sample the model forward into students.csv and classes.csv")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--config", help="TOML configuration (defaults: the notebook's numbers)")
    s.add_argument("--replicates", type=int, default=1, help="datasets to write (seeds SEED..SEED+K-1)")
    s.add_argument("--engine", choices=["model", "notebook"], default="model",
                   help="the NumPyro model (default) or the notebook's exact numpy procedure")
    s.add_argument("--format", choices=["csv", "parquet"], default="csv",
                   help="csv: a folder per dataset (default); parquet: students.parquet and "
                        "classes.parquet holding every replicate, with a replicate column")
    s.add_argument("--force", action="store_true", help="write into a non-empty folder")
    s.set_defaults(func=cmd_simulate)

    d = sub.add_parser("demo", help="simulate the notebook's dataset and fit the three analyses")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--seed", type=int, default=100)
    d.add_argument("--quick", action="store_true", help="short chains")
    d.add_argument("--force", action="store_true")
    d.set_defaults(func=cmd_demo)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return p


#: Functions ``register(subparsers)`` that add further commands (fit, compare, ...).
_EXTRA_COMMANDS: list = []


def _known_errors() -> tuple[type[BaseException], ...]:
    from classsize.model.config import ConfigError

    from .data import DataError

    return (UsageError, ConfigError, DataError)


def main(argv: list[str] | None = None) -> int:
    _setup_jax()
    _register_optional_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _known_errors() as e:
        print(f"classsize {args.command}: error: {e}", file=sys.stderr)
        return 2


def _register_optional_commands() -> None:
    if _EXTRA_COMMANDS:
        return
    from . import compare, fit, recover, star

    _EXTRA_COMMANDS.extend([fit.register_cli, compare.register_cli, recover.register_cli, star.register_cli])


if __name__ == "__main__":
    sys.exit(main())
