"""What each ``classsize`` command does once its arguments are parsed
(:mod:`classsize.inference.commands.cli` builds the parser and runs these).

Each ``cmd_*`` checks what it was given before any work, refusing bad input with a
:class:`~classsize.inference.outputs.UsageError` (one line, exit 2), and imports the
rest of the package (the model and JAX among it) only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from classsize.inference.outputs import Progress, UsageError, announce, load_config, run_plan
from classsize.inference.publish import OutputFolder

#: Seeds run from 0 to this (a study adds 2**32 to its simulation seeds for its fits).
SEED_MAX = 2**62


def cmd_simulate(args: argparse.Namespace) -> int:
    from classsize.model.format import CLASSES_FILE, CLASSES_PARQUET, STUDENTS_FILE, STUDENTS_PARQUET, TRUTH_FILE

    config = load_config(args.config)
    if args.replicates < 1:
        raise UsageError(f"--replicates must be >= 1, got {args.replicates}")
    if args.seed + args.replicates - 1 > SEED_MAX:
        raise UsageError(f"--seed + --replicates - 1 must be at most 2**62, got {args.seed + args.replicates - 1}")
    if args.format == "parquet" and args.engine == "notebook":
        raise UsageError("--format parquet is written by the model engine only (use --format csv with --engine notebook)")
    if args.engine == "notebook" and config.class_effect_sd > 0:
        raise UsageError("--engine notebook has no class effects: the configuration's class_effect_sd must be 0 "
                         "(the model engine draws them)")
    if args.engine == "notebook" and config.ability_shape != "uniform":
        raise UsageError("--engine notebook draws a uniform ability: the configuration's ability_shape must be "
                         "\"uniform\" (the model engine draws a normal one)")
    shown = Path(args.out)
    last = args.seed + args.replicates - 1
    with OutputFolder(args.out, "simulate", force=args.force) as folder:
        out = folder.path
        if args.replicates > 1:
            announce(f"simulating {args.replicates} datasets of {config.n_students} students "
                     f"(seeds {args.seed}..{last}, {args.engine} engine) into {shown}", args.quiet)
        if args.format == "parquet":
            from classsize.model.simulate import write_replicates

            write_replicates(out, config, args.seed, args.replicates, "parquet")
            folder.commit()
            print(f"wrote {args.replicates} datasets (seeds {args.seed}..{last}) to "
                  f"{shown / STUDENTS_PARQUET}, {shown / CLASSES_PARQUET}, {shown / TRUTH_FILE}")
            return 0
        if args.engine == "notebook":
            from classsize.model.files import atomic_folder
            from classsize.model.notebook import simulate_notebook
            from classsize.model.writers import replicate_name, write_replicate_list

            for k in range(args.replicates):
                ds = simulate_notebook(config, args.seed + k)
                if args.replicates == 1:
                    ds.write(out)
                else:
                    atomic_folder(out / replicate_name(k), ds.write)
            if args.replicates > 1:
                write_replicate_list(out, config, [args.seed + k for k in range(args.replicates)], "notebook")
        elif args.replicates == 1:
            from classsize.model import simulate

            ds = simulate(config, args.seed)
            ds.write(out)
        else:
            from classsize.model.simulate import write_replicates

            write_replicates(out, config, args.seed, args.replicates, "csv")
        folder.commit()
    if args.replicates > 1:
        print(f"wrote {args.replicates} datasets (seeds {args.seed}..{last}) under {shown}")
    else:
        print(ds.summary())
        print(f"wrote {shown / STUDENTS_FILE}, {shown / CLASSES_FILE}, {shown / TRUTH_FILE}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: simulate the notebook's data, then fit it."""
    import dataclasses

    from classsize.model import Config, simulate

    from classsize.inference.commands.compare import compare_models
    from classsize.inference.data.read import load_dataset

    shown = Path(args.out)
    with OutputFolder(args.out, "demo", force=args.force) as folder:
        announce(f"demo: simulating the notebook's experiment (seed {args.seed}), then fitting the three analyses",
                 args.quiet)
        ds = simulate(Config(), args.seed)
        ds.write(folder.path / "data")
        print(f"Simulated the notebook's experiment (seed {args.seed}) into {shown / 'data'}:")
        print(ds.summary())
        print()
        # the runs name the data by where they will be, not by the staging folder
        loaded = dataclasses.replace(load_dataset(folder.path / "data"), source=shown / "data")
        status = compare_models(loaded, folder.path / "compare", quick=args.quick, quiet=args.quiet,
                                shown=shown / "compare", commit=folder.commit)
    return status


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
    analysis = get_analysis(args.analysis).declared(loaded)  # a bad dataset.json key: refused here
    analysis.check(loaded)  # a cohort the data lack: refused before anything runs
    shown = Path(args.out)
    with OutputFolder(args.out, "fit", force=args.force) as folder:
        runner = ChainRunner(args.chains, args.warmup, args.samples,
                             progress=Progress(f"fit {args.analysis}", quiet=args.quiet))
        students = loaded.students if analysis.cohort is None else loaded.students[
            loaded.students["cohort"] == analysis.cohort]
        announce(f"fitting the {args.analysis} analysis to {len(students)} students: "
                 f"{run_plan(args.chains, args.warmup, args.samples, runner.devices)}", args.quiet)
        result = fit(loaded, args.analysis, chains=args.chains, warmup=args.warmup, samples=args.samples,
                     seed=args.seed, ability=args.ability, score_noise=args.score_noise,
                     class_effects=args.class_effects, runner=runner)
        print(result.table(), flush=True)  # shown whether or not the files can be written
        for w in result.warnings:
            print(f"warning: {w}", file=sys.stderr)
        result.write_files(folder.path)
        folder.commit()
    print(f"wrote {shown / 'posterior.nc'} and {shown / 'summary.json'}")
    return 1 if (args.strict and result.warnings) else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from classsize.inference.analyses.registry import ANALYSES, get_analysis
    from classsize.inference.commands.compare import compare_models
    from classsize.inference.data.read import load_dataset

    _check_sampler_args(args)
    _check_noise_args(args, ANALYSES)
    loaded = load_dataset(args.data_dir)  # bad input fails before anything is written
    for name in ANALYSES:
        get_analysis(name).declared(loaded)
    with OutputFolder(args.out, "compare", force=args.force) as folder:
        return compare_models(loaded, folder.path, chains=args.chains, warmup=args.warmup, samples=args.samples,
                              seed=args.seed, ability=args.ability, score_noise=args.score_noise,
                              class_effects=args.class_effects, strict=args.strict, quiet=args.quiet,
                              shown=Path(args.out), commit=folder.commit)


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
    if args.class_effects is not None:
        analysis = analysis.with_class_effects(args.class_effects)
    analysis = analysis.knowing(config)
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
    from classsize.inference.studies.run import StudyIncomplete, run_study

    with OutputFolder(args.out, "recover", force=args.force, mode="in_place", keep=args.resume) as folder:
        out = folder.path
        try:
            with open_runner(args.scheduler, args.workers) as runner:
                announce(f"recover {args.analysis}: {args.datasets} datasets, each {args.chains} chain(s) x "
                         f"({args.warmup} warm-up + {args.samples} draws), "
                         f"{getattr(runner, 'description', 'in this process')}", args.quiet)
                result = run_study(analysis, args.datasets, config=config, from_prior=args.from_prior,
                                   seed=args.seed, chains=args.chains, warmup=args.warmup, samples=args.samples,
                                   batch_size=args.batch_size, rank_draws=args.rank_draws, out=out,
                                   resume=args.resume, runner=runner,
                                   progress=Progress(f"recover {args.analysis}", "datasets", quiet=args.quiet))
        except StudyIncomplete as e:
            print(f"classsize recover: {e}; the finished batches are in {out / 'batches'} (rerun with --resume)",
                  file=sys.stderr)
            return 3
        print(result.verdict, flush=True)
        paths = folder.publish(result.writers())
    print(f"wrote {', '.join(p.name for p in paths)} in {out}")
    return 0 if result.passed else 1


def cmd_design(args: argparse.Namespace) -> int:
    """Exit status 0 when the design is written, 2 on bad input, 3 when batches failed
    (the finished ones are kept for --resume)."""
    _check_sampler_args(args)
    for name in ("datasets", "batch_size", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.resume and args.force:
        raise UsageError("--resume and --force exclude each other")
    from classsize.inference.analyses.registry import ANALYSES
    from classsize.inference.studies.design import DesignGrid
    from classsize.inference.studies.distributed import check_runner_args, open_runner

    analyses = [a.strip() for a in args.analyses.split(",") if a.strip()]
    unknown = [a for a in analyses if a not in ANALYSES]
    if not analyses or unknown or len(set(analyses)) < len(analyses):
        raise UsageError(f"--analyses {args.analyses!r}: name each of {', '.join(ANALYSES)} at most once")
    config = load_config(args.config)
    if args.estimand not in config.estimands():
        raise UsageError(f"--estimand {args.estimand!r}: one of {', '.join(config.estimands())}")
    grid = DesignGrid.parse(config, args.vary)
    if args.worth and config.n_regular == 0:
        raise UsageError("--worth: the base design has no REGULAR students (n_regular = 0) to be worth anything")
    check_runner_args(args.scheduler, args.workers)
    if args.seed + args.datasets > SEED_MAX:
        raise UsageError(f"--seed + --datasets must be at most 2**62, got {args.seed + args.datasets}")
    from classsize.inference.studies.diagnose import diagnose
    from classsize.inference.studies.run import StudyIncomplete

    with OutputFolder(args.out, "design", force=args.force, mode="in_place", keep=args.resume) as folder:
        try:
            with open_runner(args.scheduler, args.workers) as runner:
                announce(f"design: {len(grid.cells())} cell(s) x {', '.join(analyses)}, {args.datasets} datasets "
                         f"each, {args.chains} chain(s) x ({args.warmup} warm-up + {args.samples} draws), "
                         f"{getattr(runner, 'description', 'in this process')}", args.quiet)
                result = diagnose(grid, analyses, args.datasets, seed=args.seed, chains=args.chains,
                                  warmup=args.warmup, samples=args.samples, batch_size=args.batch_size,
                                  out=folder.path, resume=args.resume, runner=runner, estimand=args.estimand,
                                  worth=args.worth, misspecified=args.misspecified,
                                  progress=Progress("design", "datasets", quiet=args.quiet))
        except StudyIncomplete as e:
            print(f"classsize design: {e}; the finished batches are in {folder.path / 'cells'} "
                  "(rerun with --resume)", file=sys.stderr)
            return 3
        print(result.summary(), flush=True)
        paths = folder.publish(result.writers(), state=("cells",))
    print(f"wrote {', '.join(p.name for p in paths)} in {folder.target}")
    return 0


def cmd_star(args: argparse.Namespace) -> int:
    from classsize.inference.data.star import check_krueger_column, write_star
    from classsize.inference.data.star_metadata import summary_text
    from classsize.model.format import CLASSES_FILE, METADATA_FILE, STUDENTS_FILE

    check_krueger_column(args.krueger_column)
    out = Path(args.out)
    with OutputFolder(args.out, "star", force=args.force) as folder:
        metadata = write_star(folder.path, krueger_column=args.krueger_column)
        folder.commit()
    print(summary_text(metadata))
    print(f"wrote {out / STUDENTS_FILE}, {out / CLASSES_FILE}, {out / METADATA_FILE}")
    return 0


def _check_noise_args(args: argparse.Namespace, models) -> None:
    """Refuse, before anything runs, a noise the analyses or the ability cannot take:
    none of ``models`` has a noise parameter, or the ability is not uniform."""
    from classsize.inference.analyses.base import NoNoiseParameter
    from classsize.inference.analyses.registry import get_analysis
    from classsize.model.noise import check_noise_ability

    if args.score_noise is None:
        return
    for noise in args.score_noise if isinstance(args.score_noise, list) else [args.score_noise]:
        try:
            check_noise_ability(noise != 0, args.ability or "uniform")
        except ValueError as e:
            raise UsageError(f"--score-noise: {e}") from None
        refusals = []
        for name in models:
            try:
                get_analysis(name).with_score_noise(noise)
            except NoNoiseParameter as e:
                refusals.append(str(e))
        if len(refusals) == len(models):
            raise UsageError(f"--score-noise: {'; '.join(refusals)}")
