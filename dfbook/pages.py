"""The book's generated pages: run status and findings. Both read only the result records and the
expected-results files, and execute when the book is built (``book/status.md``, ``book/findings.md``).

- :func:`status_table`, :func:`status_html`: when, where and with what each chapter ran, and which of its
  expected results held.
- :func:`findings`, :func:`findings_html`: one row per chapter and claim (``claims:`` in
  ``notebooks/expected/<chapter>.yaml``): the paper's number, the seed's, this book's, and a verdict in words
  judged by :func:`dfbook.check.claim_verdict`.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
import platform

import pandas as pd

from dfbook import check, compare, report, runner

VERDICT_CLASS = {"holds": "dfbook-verdict-holds", "does not hold": "dfbook-verdict-fails"}


def _table_html(df: pd.DataFrame, escape_columns: tuple[str, ...] = ()) -> str:
    """A wrapping HTML table (class ``dfbook-wrap``) whose cells are already HTML except ``escape_columns``."""
    shown = df.copy()
    for col in escape_columns:
        shown[col] = shown[col].map(lambda v: html.escape(str(v)))
    return shown.to_html(index=False, escape=False, border=0, classes=["dfbook-wrap"], na_rep="–")


def _short_commit(git: dict) -> str:
    return (git.get("commit") or "")[:10] + (" (dirty)" if git.get("dirty") else "")


def machine() -> dict:
    """The machine building the book: what the status page's header names."""
    import psutil

    return {"built (UTC)": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "by": "CI" if os.environ.get("CI") else "a local build",
            "platform": platform.platform(), "cpu": report.cpu_model(), "cores": os.cpu_count(),
            "memory (GiB)": round(psutil.virtual_memory().total / 2**30, 1)}


def _checks(chapter: str, record: dict, profile: str) -> pd.DataFrame | None:
    try:
        return check.check_record(chapter, record, check.load_expected(chapter), profile)
    except FileNotFoundError:
        return None


def status_table(profile: str = "mini") -> pd.DataFrame:
    """One row per chapter record: when it finished, wall time, headline, how many expected results held,
    and where and with what it ran."""
    rows = []
    for chapter, rec in report.load_all(profile).items():
        checks = _checks(chapter, rec, profile)
        env = rec.get("env", {})
        pk = env.get("packages", {})
        rows.append({
            "chapter": chapter,
            "profile": rec.get("profile"),
            "finished (UTC)": (rec.get("finished") or "").replace("T", " ").removesuffix("+00:00"),
            "wall time (s)": rec.get("runtime_s"),
            "headline": report.headline_of(rec),
            "expected results": ("no expected-results file" if checks is None
                                 else f"{int(checks['ok'].sum())}/{len(checks)} hold"),
            "device": env.get("device"),
            "cpu": env.get("cpu_model"),
            "threads": env.get("threads"),
            "python": env.get("python"),
            "torch": pk.get("torch"),
            "timm": pk.get("timm"),
            "open_clip": pk.get("open_clip_torch"),
            "commit": _short_commit(rec.get("git", {})),
        })
    return pd.DataFrame(rows).set_index("chapter") if rows else pd.DataFrame(rows)


def status_html(profile: str = "mini") -> str:
    """The run-status page's body: the build, the runs (narrow enough for the column), the environment,
    and per chapter every check with what was measured."""
    table = status_table(profile)
    head = machine()
    parts = [f"<p>Profile <code>{html.escape(profile)}</code>; built {head['built (UTC)']} UTC by {head['by']} on "
             f"{html.escape(str(head['cpu']))} ({head['cores']} cores, {head['memory (GiB)']} GiB), "
             f"{html.escape(head['platform'])}. Chapters with a result record: {len(table)}.</p>"]
    if table.empty:
        return "".join(parts)
    runs = table.reset_index()[["chapter", "finished (UTC)", "wall time (s)", "headline", "expected results"]]
    parts.append("<h2>Runs</h2>" + _table_html(runs, tuple(runs.columns)))
    env = table.reset_index()[["chapter", "device", "cpu", "threads", "python", "torch", "timm", "open_clip", "commit"]]
    parts.append("<h2>Where and with what</h2>" + _table_html(env, tuple(env.columns)))
    parts.append("<h2>Expected results, per chapter</h2>")
    for chapter, rec in report.load_all(profile).items():
        checks = _checks(chapter, rec, profile)
        if checks is None or checks.empty:
            continue
        shown = checks.drop(columns="chapter").assign(ok=checks["ok"].map({True: "holds", False: "FAILS"}))
        held = int(checks["ok"].sum())
        parts.append(f"<details><summary><b>{html.escape(chapter)}</b>: {held} of {len(checks)} checks hold"
                     f"</summary>{_table_html(shown, tuple(shown.columns))}</details>")
    return "".join(parts)


def _published(table: pd.DataFrame, sel: dict | None, where: str) -> str:
    if not sel:
        return "–"
    try:
        rows = compare.select(table, **sel)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    if len(rows) != 1:
        raise ValueError(f"{where}: {sel} matches {len(rows)} rows of paper_results.csv; add filters until one does")
    r = rows.iloc[0]
    return (f"{r['value']:.3f}<br><small>{html.escape(r['system'])}; {html.escape(r['metric'])}, "
            f"{html.escape(r['test_set'])} [{html.escape(r['evidence'])}]</small>")


def findings(profile: str = "mini") -> pd.DataFrame:
    """One row per claim of every chapter with a record: links, numbers and verdict (cells are HTML)."""
    published = compare.load()
    records = report.load_all(profile)
    rows = []
    for chapter in runner.list_chapters():
        try:
            claims = check.load_expected(chapter).get("claims") or []
        except FileNotFoundError:
            continue
        rec = records.get(chapter)
        for i, claim in enumerate(claims):
            where = f"{check.expected_path(chapter)}, claim {i + 1}"
            title = html.escape(runner.chapter_title(chapter))
            link = f'<a href="chapters/{chapter}.html#{claim.get("section", "")}">{title}</a>'
            if rec is None:
                verdict, why, ours = f"{profile} cannot tell", "the chapter has no result record", "–"
            else:
                verdict, why = check.claim_verdict(rec, claim)
                b = check._bounds(rec, claim["book"])
                ours = ("not recorded" if b is None else f"{b[0]:.3f}" + (f" [{b[1]:.3f}, {b[2]:.3f}]" if b[1] != b[2] else "")
                        + f"<br><small><code>{html.escape(claim['book'])}</code> ({html.escape(profile)})</small>")
            css = VERDICT_CLASS.get(verdict, "dfbook-verdict-cannot")
            rows.append({"chapter": link, "claim": html.escape(claim["claim"]),
                         "paper": _published(published, claim.get("paper"), where),
                         "seed": _published(published, claim.get("seed"), where),
                         f"this book ({profile})": ours,
                         "verdict": f'<span class="{css}">{html.escape(verdict)}</span>',
                         "why": html.escape(why).replace("`", "")})
    return pd.DataFrame(rows)


def findings_html(profile: str = "mini") -> str:
    """The findings table in four columns that fit the content column: the claim with its chapter, the
    published numbers (paper, seed), this book's, the verdict with its reason."""
    table = findings(profile)
    if table.empty:
        return "<p>No chapter lists claims yet.</p>"
    counts = table["verdict"].str.extract(r">([^<]+)<")[0].value_counts()
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    shown = pd.DataFrame({
        "claim": table["claim"] + "<br><small>" + table["chapter"] + "</small>",
        "published": "<b>paper</b> " + table["paper"] + "<br><b>seed</b> " + table["seed"],
        f"this book ({profile})": table[f"this book ({profile})"],
        "verdict": table["verdict"] + "<br><small>" + table["why"] + "</small>",
    })
    widths = "".join(f'<col style="width:{w}%">' for w in (38, 24, 16, 22))
    return (f"<p>{len(table)} claims: {html.escape(summary)}.</p>"
            + _table_html(shown).replace("<thead>", f"<colgroup>{widths}</colgroup><thead>", 1)
                                .replace('class="dataframe dfbook-wrap"', 'class="dataframe dfbook-wrap dfbook-fixed"', 1))
