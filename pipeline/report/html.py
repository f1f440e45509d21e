"""The report as one self-contained HTML page: no script, no fetched asset, opens anywhere."""

from __future__ import annotations

from html import escape
from importlib.resources import files
from urllib.parse import urlsplit

from .matrix import LABELS, STATUSES, Matrix

SYMBOLS = {"fixed": "F", "livepatched": "L", "affected": "A", "unaffected": "·", "unknown": "?"}


def _anchor(vid: str) -> str:
    return "v-" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in vid)


def _safe_url(url: str) -> str | None:
    """Only http(s) links: a record is data from outside and must not inject javascript:."""
    return url if urlsplit(url).scheme in ("http", "https") else None


def render_html(matrix: Matrix) -> str:
    css = files(__package__).joinpath("report.css").read_text(encoding="utf-8")
    e = escape
    out: list[str] = []
    add = out.append
    add("<!DOCTYPE html>")
    add('<html lang="en"><head><meta charset="utf-8">')
    add('<meta name="viewport" content="width=device-width, initial-scale=1">')
    add(f"<title>livegraft coverage — {e(matrix.name)}</title>")
    add(f"<style>{css}</style></head><body>")
    add(f"<header><h1>Livepatch coverage: {e(matrix.name)}</h1>")
    add(
        f"<p>{len(matrix.rows)} kernel builds × {len(matrix.vulns)} vulnerabilities. "
        "Each cell: is this build exposed to this vulnerability, and does livegraft cover it?</p>"
    )
    add('<ul class="legend">')
    totals = matrix.totals
    for status in STATUSES:
        add(
            f'<li><span class="cell s-{status}">{SYMBOLS[status]}</span> '
            f"{e(LABELS[status])} <b>{totals[status]}</b></li>"
        )
    add("</ul></header>")

    add('<div class="scroll"><table class="matrix"><thead><tr>')
    add('<th class="build">kernel build</th><th>level</th>')
    for status in STATUSES:
        add(f'<th class="count" title="{e(LABELS[status])}"><span>{e(LABELS[status])}</span></th>')
    for v in matrix.vulns:
        add(
            f'<th class="vuln" title="{e(v.title)}"><a href="#{_anchor(v.id)}">'
            f"<span>{e(v.id)}</span></a></th>"
        )
    add("</tr></thead><tbody>")
    for row in matrix.rows:
        b = row.build
        add(
            f'<tr><th class="build" scope="row"><code>{e(b.uname_r)}</code>'
            f"<small>{e(b.package_version)} · {e(b.dist)}</small></th>"
        )
        add(f'<td class="level">{row.level if row.level is not None else "–"}</td>')
        counts = row.counts
        for status in STATUSES:
            alarm = " alarm" if status == "affected" and counts[status] else ""
            add(f'<td class="count c-{status}{alarm}">{counts[status]}</td>')
        for v, status in zip(matrix.vulns, row.statuses, strict=True):
            add(
                f'<td class="cell s-{status}" title="{e(b.uname_r)} · {e(v.id)}: '
                f'{e(LABELS[status])}">{SYMBOLS[status]}</td>'
            )
        add("</tr>")
    add("</tbody></table></div>")

    add('<section><h2>Vulnerabilities</h2><dl class="vulns">')
    for v in matrix.vulns:
        add(f'<dt id="{_anchor(v.id)}">{e(v.id)}')
        if v.severity:
            add(f' <span class="sev">{e(v.severity)}</span>')
        if v.aliases:
            add(f" <small>also {e(', '.join(v.aliases))}</small>")
        add(f"</dt><dd><p>{e(v.title)}</p>")
        if v.fixes:
            add(f"<p>livegraft fixes: {e(', '.join(v.fixes))}</p>")
        links = [u for u in (_safe_url(r) for r in v.references) if u]
        if links:
            add("<ul>")
            for url in links:
                add(f'<li><a href="{e(url)}" rel="noreferrer">{e(url)}</a></li>')
            add("</ul>")
        add("</dd>")
    add("</dl></section></body></html>")
    return "\n".join(out) + "\n"
