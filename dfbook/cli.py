"""The ``dfbook`` command line. Each subcommand is a thin wrapper over a Python function of the package."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommands with a parser of their own (``main(argv) -> exit code``): module, one-line help.
DELEGATED = {
    "predict": ("dfbook.predict", "P(fake) of images, folders and videos with any saved detector "
                "(`dfbook predict --list`; options: `dfbook predict -h`)"),
    "prepare": ("dfbook.prepare", "videos -> face crops + manifest (options: `dfbook prepare -h`)"),
    "predict-defenders": ("dfbook.methods.defenders",
                          "P(fake) per image with the DeepFakeDefenders experts (options: `dfbook predict-defenders -h`)"),
    "images": ("dfbook.imagesets", "one manifest of generated-image sets as published (options: `dfbook images -h`)"),
}
# What a user can cause and fix (a missing file, a bad value, a damaged cache): reported in one line. The
# package's errors say which file and how to fix it; anything else is a bug and keeps its traceback.
USER_ERRORS = (OSError, ValueError)


def _run(args) -> int:
    from dfbook import runner

    overrides = {name: runner.parse_override(value) for name, value in args.param}
    try:
        results = runner.run(args.chapters or None, args.profile, overrides, jobs=args.jobs,
                             dry_run=args.dry_run, cell_timeout=args.cell_timeout)
    except runner.RunnerError as exc:
        print(f"dfbook run: {exc}", file=sys.stderr)
        return 2
    return 0 if all(r.status != "failed" for r in results) else 1


def _list(args) -> int:
    from dfbook import report, runner

    for chapter in runner.list_chapters():
        title = runner.chapter_title(chapter)
        try:
            rec = report.load(chapter, args.profile)
            state = f"last run {rec['finished']} ({rec['runtime_s']:.0f} s) {report.headline_of(rec)}"
        except FileNotFoundError:
            state = "not run"
        print(f"{chapter:20s} {title[:60]:60s} [{args.profile}: {state}]")
    return 0


def _book(args) -> int:
    from dfbook import book

    return book.book(args.profile, run_first=not args.skip_run, jobs=args.jobs)


def _check(args) -> int:
    from dfbook import check

    ok, table = check.check(args.chapters or None, args.profile)
    print(check.format_table(table))
    if args.paper:
        import pandas as pd

        from dfbook.runner import list_chapters

        papers = pd.concat([check.paper_rows(ch) for ch in args.chapters or list_chapters()], ignore_index=True)
        print(f"\npublished numbers the chapters compare with ({len(papers)} rows of paper_results.csv):")
        print(papers.to_string(index=False, max_colwidth=60))
    print("dfbook check: all expected results hold" if ok else "dfbook check: FAILED (see rows marked FAIL)")
    return 0 if ok else 1


def _spread(args) -> int:
    from dfbook import check

    table = check.spread(args.chapter, args.seeds, args.profile, jobs=args.jobs, write=args.write)
    print(table.to_string(index=False))
    return 0


def _bench(args) -> int:
    from dfbook.bench import corpus

    for kind in args.kinds:
        df = corpus.load(kind)
        info = corpus.info(kind)
        print(f"{kind}: {len(df)} images, {df['method'].nunique()} methods, generated in {info['seconds']} s, "
              f"at {corpus.location(kind)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfbook", description="Run, check and publish the deepfake-detection book.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="execute chapter notebooks headless (papermill)")
    r.add_argument("chapters", nargs="*", help="chapters to run (default: all; see `dfbook list`)")
    r.add_argument("--profile", default="mini", choices=["mini", "full"])
    r.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a parameter (VALUE read as YAML)")
    r.add_argument("--jobs", type=int, default=1, help="chapters to run in parallel")
    r.add_argument("--dry-run", action="store_true",
                   help="build the models of the profile with random weights, record shapes and parameter counts, stop")
    r.add_argument("--cell-timeout", type=int, default=None,
                   help="seconds per cell (default: 1800 in mini, no limit in full; 0 = no limit)")
    r.set_defaults(func=_run)

    ls = sub.add_parser("list", help="list chapters and their last run")
    ls.add_argument("--profile", default="mini", choices=["mini", "full"])
    ls.set_defaults(func=_list)

    b = sub.add_parser("book", help="run all chapters, then build the HTML book in _build/html")
    b.add_argument("--profile", default="mini", choices=["mini", "full"])
    b.add_argument("--jobs", type=int, default=1)
    b.add_argument("--skip-run", action="store_true", help="build from the notebooks already executed")
    b.set_defaults(func=_book)

    c = sub.add_parser("check", help="compare result records with notebooks/expected/*.yaml")
    c.add_argument("chapters", nargs="*")
    c.add_argument("--profile", default="mini", choices=["mini", "full"])
    c.add_argument("--paper", action="store_true", help="also list the published numbers each chapter compares with")
    c.set_defaults(func=_check)

    s = sub.add_parser("spread", help="run a chapter with several seeds and suggest expected-result bands")
    s.add_argument("chapter")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    s.add_argument("--profile", default="mini", choices=["mini", "full"])
    s.add_argument("--jobs", type=int, default=1, help="seeds to run in parallel")
    s.add_argument("--write", action="store_true",
                   help="replace the bands (of the metrics already banded) in notebooks/expected/<chapter>.yaml")
    s.set_defaults(func=_spread)

    for name, (_, text) in DELEGATED.items():  # listed here; main() hands their arguments to their own parser
        sub.add_parser(name, help=text)

    be = sub.add_parser("bench", help="generate (or locate) the cached mini benchmark corpora")
    be.add_argument("kinds", nargs="*", default=["faces", "images"])
    be.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit code: 0 done, 1 a chapter or check failed, 2 a user error -- one line on stderr, no traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:  # their options live with their code, and importing it takes seconds
        return importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:])
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"dfbook {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
