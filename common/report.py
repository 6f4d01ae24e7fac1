"""A run's report page: index.html in its output folder, readable offline with no server.

`write_index(folder)` is called once, at the end of common.cli.staged_output, so every
study's folder gets one: the command and run details from its results JSON, every stat
block found in it as a table row (mean, 95% interval, n, method) and each list of
records (a sweep's points) as a table, every figure, the
videos playing inline, and links to the JSON, state and other files. Everything taken
from the files (names, values, the command) is escaped with html.escape; links are
relative and percent-encoded, so the folder can be moved or copied as a whole.
"""
from __future__ import annotations

import html
import json
import math
import urllib.parse
from pathlib import Path

INDEX = "index.html"
FIGURES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
VIDEOS = (".mp4", ".webm")
MAX_FILES = 500          # a sweep folder may hold thousands of chunk files
MAX_ROWS = 400           # stat-block rows per JSON file, rows of a table of records
MAX_COLUMNS = 24
MAX_JSON_BYTES = 20 << 20
RUN_KEYS = ("study", "date_utc", "seeds", "git_commit", "device", "wall_time_s", "smoke_run")

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
pre{background:#f4f4f4;padding:.6em;overflow-x:auto;white-space:pre-wrap}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
td,th{padding:.15em .7em;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right}.muted{color:#777}
.figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;max-width:520px}
figure img,figure video{max-width:100%;border:1px solid #ddd}figcaption{color:#555}
.warn{background:#fff3cd;padding:.4em .8em}.wide{overflow-x:auto}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _href(path: Path, folder: Path) -> str:
    return _e(urllib.parse.quote(path.relative_to(folder).as_posix()))


def _number(x) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "-" if x is None else str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _is_stat(block) -> bool:
    return isinstance(block, dict) and "mean" in block and \
        any(k in block for k in ("ci95_low", "low", "n"))


def stat_rows(data, prefix: str = "") -> list[tuple[str, dict]]:
    """(dotted key, stat block) for every stat block in a results JSON, in file order."""
    rows = []
    if _is_stat(data):
        return [(prefix, data)]
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("config", "versions", "hardware", "per_seed", "curves"):
                continue
            rows += stat_rows(value, f"{prefix}.{key}" if prefix else str(key))
            if len(rows) >= MAX_ROWS:
                break
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for i, value in enumerate(data):
            rows += stat_rows(value, f"{prefix}[{i}]")
            if len(rows) >= MAX_ROWS:
                break
    return rows[:MAX_ROWS]


def _cell(value) -> str:
    """A table cell: a number, text, or a [mean, low, high] triple."""
    if isinstance(value, list) and len(value) == 3:
        mean, low, high = value
        return _number(mean) + (f" [{_number(low)}, {_number(high)}]" if low is not None else "")
    return _number(value)


def _flat(row) -> bool:
    return isinstance(row, dict) and all(
        v is None or isinstance(v, (str, int, float, bool)) or
        (isinstance(v, list) and len(v) == 3 and all(x is None or isinstance(x, (int, float))
                                                    for x in v))
        for v in row.values())


def row_tables(data) -> list[tuple[str, list[dict]]]:
    """(key, rows) for each top-level list of flat records in a results JSON (a sweep's
    points: numbers, text and [mean, low, high] triples)."""
    if not isinstance(data, dict):
        return []
    return [(key, value) for key, value in data.items()
            if isinstance(value, list) and value and all(_flat(r) for r in value)]


def _records(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))[:MAX_COLUMNS]
    out = ["<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>"]
    out += ["<tr>" + "".join(f"<td class=n>{_e(_cell(r.get(c)))}</td>" for c in columns)
            + "</tr>" for r in rows[:MAX_ROWS]]
    out.append("</table>")
    if len(rows) > MAX_ROWS:
        out.append(f"<p class=muted>The first {MAX_ROWS} of {len(rows)} rows.</p>")
    return "\n".join(out)


def _table(rows) -> str:
    out = ["<table><tr><th>figure</th><th>mean</th><th>95% interval</th><th>n</th>"
           "<th>method</th><th>published</th></tr>"]
    for key, s in rows:
        low, high = s.get("ci95_low", s.get("low")), s.get("ci95_high", s.get("high"))
        interval = f"[{_number(low)}, {_number(high)}]" if low is not None else "-"
        out.append(f"<tr><td>{_e(key)}</td><td class=n>{_e(_number(s.get('mean')))}</td>"
                   f"<td class=n>{_e(interval)}</td><td class=n>{_e(_number(s.get('n')))}</td>"
                   f"<td>{_e(s.get('method', '-'))}</td>"
                   f"<td>{_e(_number(s.get('published')) if 'published' in s else '-')}</td>"
                   f"</tr>")
    out.append("</table>")
    return "\n".join(out)


def _read_json(path: Path):
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _files(folder: Path) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts) \
                and path.name != INDEX:
            found.append(path)
        if len(found) >= MAX_FILES:
            break
    return found


def render(folder) -> str:
    """The report page of an output folder, as HTML text."""
    folder = Path(folder)
    files = _files(folder)
    jsons = [p for p in files if p.suffix == ".json"]
    jsons.sort(key=lambda p: (p.name != "results.json", len(p.parts), p.name))
    parsed = [(p, _read_json(p)) for p in jsons]
    envelope = next((d for _, d in parsed if isinstance(d, dict) and "command" in d), {})
    title = envelope.get("study") or folder.name
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<meta name=viewport content='width=device-width, initial-scale=1'>"
             f"<title>{_e(title)}: run report</title><style>{STYLE}</style></head><body>",
             f"<h1>{_e(title)} <span class=muted>run report</span></h1>"]
    if envelope.get("command"):
        parts.append(f"<h2>Command</h2><pre>{_e(envelope['command'])}</pre>")
    details = [(k, envelope[k]) for k in RUN_KEYS if k in envelope]
    if details:
        parts.append("<table>" + "".join(
            f"<tr><td>{_e(k)}</td><td>{_e(json.dumps(v) if not isinstance(v, str) else v)}"
            f"</td></tr>" for k, v in details) + "</table>")
    if envelope.get("smoke_run"):
        parts.append("<p class=warn>A smoke run (--quick): its numbers are not comparable "
                     "with the published or documented ones.</p>")
    for path, data in parsed:
        rows = stat_rows(data) if data is not None else []
        name = _e(path.relative_to(folder).as_posix())
        if rows:
            parts.append(f"<h2>Results: {name}</h2>")
            parts.append(_table(rows))
        for key, records in row_tables(data):
            parts.append(f"<h2>Results: {name}, {_e(key)} <span class=muted>(mean [95% "
                         f"interval])</span></h2>")
            parts.append(f"<div class=wide>{_records(records)}</div>")
    figures = [p for p in files if p.suffix.lower() in FIGURES]
    if figures:
        parts.append("<h2>Figures</h2><div class=figs>")
        parts += [f"<figure><a href='{_href(p, folder)}'><img src='{_href(p, folder)}' "
                  f"alt='{_e(p.name)}' loading=lazy></a><figcaption>"
                  f"{_e(p.relative_to(folder).as_posix())}</figcaption></figure>"
                  for p in figures]
        parts.append("</div>")
    videos = [p for p in files if p.suffix.lower() in VIDEOS]
    if videos:
        parts.append("<h2>Videos</h2><div class=figs>")
        parts += [f"<figure><video src='{_href(p, folder)}' controls muted loop "
                  f"preload=metadata></video><figcaption>{_e(p.relative_to(folder).as_posix())}"
                  f"</figcaption></figure>" for p in videos]
        parts.append("</div>")
    others = [p for p in files if p.suffix.lower() not in FIGURES + VIDEOS]
    if others:
        parts.append("<h2>Files</h2><ul>")
        parts += [f"<li><a href='{_href(p, folder)}'>{_e(p.relative_to(folder).as_posix())}"
                  f"</a> <span class=muted>{_e(_size(p))}</span></li>" for p in others]
        parts.append("</ul>")
    if len(files) >= MAX_FILES:
        parts.append(f"<p class=muted>Only the first {MAX_FILES} files are listed.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _size(path: Path) -> str:
    n = path.stat().st_size
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def write_index(folder) -> Path:
    """Write folder/index.html (the run's report page); returns its path."""
    path = Path(folder) / INDEX
    path.write_text(render(folder), encoding="utf-8")
    return path
