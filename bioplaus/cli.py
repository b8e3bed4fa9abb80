"""The ``bioplaus`` command line: compare rules against BP, run configs, sweep grids, list what is registered."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from bioplaus import __version__
from bioplaus.errors import BioplausError, ConfigError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"bioplaus: error: {message} (see '{self.prog} --help')\n")


def _add_common(
    p: argparse.ArgumentParser, out_help: str = "folder for config.json, metrics.csv, summary.csv, runs.csv, figure.png"
) -> None:
    p.add_argument("--out", help=out_help)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set lr=0.01 --set model_options.hidden=[512,512]",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--huge-pages",
        dest="huge_pages",
        action="store_true",
        help="back large CPU tensors with transparent huge pages, here and in worker processes "
        "(bioplaus.enable_huge_pages; faster models with large activations)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bioplaus`` command."""
    parser = _Parser(prog="bioplaus", description="Biologically plausible learning rules, compared with backprop.")
    parser.add_argument("--version", action="version", version=f"bioplaus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    cmp = sub.add_parser("compare", help="train every rule × seed on a task and compare with BP")
    cmp.add_argument("--task", help="task name (see 'bioplaus tasks'); default digits")
    model = cmp.add_mutually_exclusive_group()
    model.add_argument("--model", help="model name (see 'bioplaus models'); default mlp")
    _add_model_file(model)
    cmp.add_argument("--rules", help="comma-separated rule names (see 'bioplaus rules'); default bp,fa,dfa")
    cmp.add_argument("--seeds", type=int, help="number of seeds (0 … N-1); default 1")
    cmp.add_argument("--epochs", type=int, help="epochs per run; default 5")
    cmp.add_argument("--batch-size", dest="batch_size", type=int, help="examples per update; default 64")
    cmp.add_argument("--optimizer", help="adam, adamw, sgd or rmsprop; default adam")
    cmp.add_argument("--lr", type=float, help="learning rate; default 1e-3")
    cmp.add_argument(
        "--alignment-every",
        dest="alignment_every",
        type=int,
        help="log per-layer cosine with the BP gradient every K updates",
    )
    cmp.add_argument("--device", help="torch device; default cpu")
    _add_common(cmp)

    run = sub.add_parser("run", help="run the comparison described by a TOML config")
    run.add_argument("config", help="TOML file whose top-level keys mirror the compare flags")
    _add_model_file(run, " (instead of the config's model)")
    _add_common(run)

    _add_sweep_commands(sub)
    listing = sub.add_parser("rules", help="list the registered rules (with --model/--task: those that fit)")
    listing.add_argument("--model", help="only rules that can train this registered model")
    listing.add_argument("--task", help="only rules that work on this registered task")
    listing = sub.add_parser("models", help="list the registered models (with --rule/--task: those that fit)")
    listing.add_argument("--rule", help="only models this registered rule can train")
    listing.add_argument("--task", help="only models this registered task can drive")
    sub.add_parser("tasks", help="list the registered tasks")
    for kind in ("rules", "models", "tasks"):
        sub.choices[kind].add_argument("name", nargs="?", help="describe this entry: its options, types and defaults")
    return parser


def _add_model_file(p: Any, more: str = "") -> None:
    """The ``--model-file`` option of ``compare`` and ``run`` (``more`` ends its help's first clause)."""
    p.add_argument(
        "--model-file",
        dest="model_file",
        metavar="PATH:FUNCTION",
        help=f"train the torch model that FUNCTION(spec) or FUNCTION() in the Python file PATH returns{more}, "
        "converted with bioplaus.convert",
    )


def _add_sweep_commands(sub: Any) -> None:
    """The ``sweep`` and ``report`` subcommands."""
    sw = sub.add_parser("sweep", help="run a grid of configs × rules × seeds into a resumable results folder")
    sw.add_argument("config", help="TOML config (as for 'run'); it may hold a [grid] table of key = [values]")
    sw.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="sweep a config key over values, e.g. --grid lr=1e-3,1e-2 --grid model_options.hidden=[64],[256]",
    )
    sw.add_argument("--seeds", type=int, help="number of seeds (0 … N-1); default: the config's")
    sw.add_argument("--workers", type=int, help="runs at a time; default: the number of CPU cores")
    sw.add_argument("--backend", choices=("local", "ray"), default="local", help="local process pool or Ray")
    sw.add_argument(
        "--address",
        help="Ray cluster to join (auto, ray://HOST:10001; it must answer within $BIOPLAUS_RAY_TIMEOUT s, default 5); "
        "default: start a local one (Ray's ports are open to the network; it warns without token authentication)",
    )
    sw.add_argument("--retry-failed", dest="retry_failed", action="store_true", help="run failed runs again")
    sw.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events into each run folder")
    _add_common(sw, out_help="results folder (default runs/sweep-CONFIG); run again with the same one to resume")
    rep = sub.add_parser("report", help="summary.md, summary.csv and figures of a sweep's results folder")
    rep.add_argument("dir", help="the results folder of a sweep")
    rep.add_argument("--metrics", help="comma-separated split/metric names; default test/accuracy,test/loss,train/loss")
    rep.add_argument("--reference", default="bp", help="the rule drawn as the dashed reference; default bp")


def _listing(args: argparse.Namespace) -> str:
    from bioplaus import nets, rules, tasks
    from bioplaus.runner.preflight import fitting

    kind = args.command
    if args.name is not None:
        from bioplaus.nets._registry import MODELS
        from bioplaus.rules._registry import RULES
        from bioplaus.runner.entry_info import entry_text
        from bioplaus.tasks._registry import TASKS

        return entry_text({"rules": RULES, "models": MODELS, "tasks": TASKS}[kind], args.name)
    table = {"rules": rules.describe, "models": nets.describe, "tasks": tasks.describe}[kind]()
    keep = fitting(kind, model=getattr(args, "model", None), rule=getattr(args, "rule", None),
                   task=getattr(args, "task", None))  # fmt: skip
    if keep is not None:
        table = {name: text for name, text in table.items() if name in keep}
        if not table:
            return f"no registered {kind} fit"
    width = max(map(len, table), default=0)
    return "\n".join(f"{name:<{width}}  {text}" for name, text in table.items())


def _raw_config(args: argparse.Namespace) -> dict[str, Any]:
    from bioplaus.runner import apply_overrides, load_toml

    if args.command == "run":
        raw = load_toml(args.config)
    else:
        keys = (
            "task",
            "model",
            "rules",
            "seeds",
            "epochs",
            "batch_size",
            "optimizer",
            "lr",
            "alignment_every",
            "device",
        )
        raw = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.model_file:
        from bioplaus.runner.model_file import register_model_file

        raw["model"] = register_model_file(args.model_file)
    return apply_overrides(raw, args.overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bioplaus`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command in ("rules", "models", "tasks"):
        try:
            print(_listing(args))
        except BioplausError as err:
            print(f"bioplaus: error: {err}", file=sys.stderr)
            return 2
        return 0
    if getattr(args, "huge_pages", False):
        from bioplaus.huge_pages import enable_huge_pages

        enable_huge_pages()  # before any tensor exists; a sweep's workers inherit the environment
    import matplotlib

    matplotlib.use("Agg")
    if args.command in ("sweep", "report"):
        try:
            return _sweep(args) if args.command == "sweep" else _report(args)
        except BioplausError as err:
            print(f"bioplaus: error: {err}", file=sys.stderr)
            return 2
    from bioplaus.runner import RunConfig, run_config

    try:
        cfg = RunConfig.from_dict(_raw_config(args))
        out = Path(args.out) if args.out else Path("runs") / f"{cfg.task}-{cfg.model}"
        result = run_config(cfg, out=out, progress=not args.quiet)
    except BioplausError as err:
        print(f"bioplaus: error: {err}", file=sys.stderr)
        return 2
    print(result.report())
    print(f"\nwrote {out}/config.json, metrics.csv, summary.csv, runs.csv, figure.png")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from bioplaus.runner import apply_overrides, load_toml, sweep
    from bioplaus.runner.sweep_grid import parse_grid_option

    grid: dict[str, list[Any]] = {}
    for text in args.grid:
        key, values = parse_grid_option(text)
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one --grid {key}=v1,v2,...")
        grid[key] = values
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{Path(args.config).stem}"
    runs = sweep(
        apply_overrides(load_toml(args.config), args.overrides),
        out=out,
        grid=grid,
        seeds=args.seeds,
        workers=args.workers,
        backend=args.backend,
        address=args.address,
        retry_failed=args.retry_failed,
        tensorboard=args.tensorboard,
        progress=not args.quiet,
    )
    counts = runs["status"].value_counts()
    print(f"{len(runs)} runs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "diverged", "failed")))
    for row in runs[runs["status"] == "failed"].itertuples():
        print(f"  failed {row.run_id} ({row.rule}, seed {row.seed}): {row.message.splitlines()[-1]}")
    print(f"wrote {out}/runs/<run_id>/ and {out}/index.sqlite; summarise with: bioplaus report {out}")
    return 1 if counts.get("failed", 0) else 0


def _report(args: argparse.Namespace) -> int:
    from bioplaus.results import report

    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    result = report(args.dir, metrics=metrics, reference=args.reference)
    print((Path(args.dir) / "summary.md").read_text(), end="")
    print(f"\nwrote {args.dir}/summary.md, summary.csv and {len(result.figures)} figures in {args.dir}/figures/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
