"""The HTML report as a person sees it: rendered by headless Chromium, every plot loads and
every table has rows; the plots are real PNGs that change with the book."""

import base64
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser

import polars as pl
import pytest

import gpurisk
from gpurisk.cli import main
from gpurisk.report import (format_headline, load_risk_tables, load_stress_tables, table_html,
                            write_report)
from gpurisk.stress import shock_grid, stress


def _find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = _find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found: install it (Debian/Ubuntu: "
                             "`apt-get install -y chromium`) or put chromium on PATH")

# Injected into a copy of the page: once the page and every image have finished loading,
# record each image's decoded width and mark the body, for --dump-dom to show.
PROBE = """<script>
(function probe() {
  var imgs = Array.prototype.slice.call(document.images);
  if (document.readyState !== "complete" || !imgs.every(function (i) { return i.complete; })) {
    setTimeout(probe, 20); return;
  }
  imgs.forEach(function (i) {
    i.setAttribute("data-natural-width", i.naturalWidth);
    i.setAttribute("data-natural-height", i.naturalHeight);
  });
  document.body.setAttribute("data-probe", "done");
})();
</script>"""


class _Dom(HTMLParser):
    """Images (their attributes) and tables (header cells, body rows) of a rendered DOM."""

    def __init__(self):
        super().__init__()
        self.images, self.tables, self.body = [], [], {}
        self._table = None
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "img":
            self.images.append(a)
        elif tag == "table":
            self._table = {"th": 0, "rows": 0}
            self.tables.append(self._table)
        elif tag == "tbody":
            self._in_body = True
        elif tag == "th" and self._table is not None:
            self._table["th"] += 1
        elif tag == "tr" and self._table is not None and self._in_body:
            self._table["rows"] += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None


def render(html_file, tmp_path):
    """Open the page in headless Chromium; return the DOM after load and a screenshot path."""
    page = tmp_path / f"probe-{html_file.stem}.html"
    page.write_text(html_file.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    shot = tmp_path / f"{html_file.stem}.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / ('profile-' + html_file.stem)}", "--hide-scrollbars",
           "--virtual-time-budget=5000", "--window-size=1300,2400", f"--screenshot={shot}", "--dump-dom",
           page.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = _Dom()
    dom.feed(out.stdout)
    return dom, shot


def pngs(html_file) -> dict[str, bytes]:
    """{data-plot name: PNG bytes} of the page's embedded images."""
    text = html_file.read_text(encoding="utf-8")
    found = re.findall(r'<img class="plot" data-plot="([^"]+)"[^>]*src="data:image/png;base64,([^"]+)"', text)
    return {name: base64.b64decode(data) for name, data in found}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ------------------------------------------------------------------ fixtures (small books)


@pytest.fixture(scope="module")
def book1():
    return gpurisk.synthetic_book(2000, seed=1)


@pytest.fixture(scope="module")
def risk1(book1):
    return gpurisk.revalue(book1, backend="cpu")


@pytest.fixture(scope="module")
def stress1(book1):
    return stress(book1, shock_grid(-0.3, 0.3, 7), backend="cpu", policy=["queue", "pro_rata"], steps=3,
                  impact="sqrt")


@pytest.fixture(scope="module")
def report1(tmp_path_factory, book1, risk1, stress1):
    path = tmp_path_factory.mktemp("report1") / "report.html"
    return write_report(path, risk=risk1, stress=stress1, title="seed 1",
                        base_marks=dict(zip(book1.symbols, book1.mark_price.tolist())))


@pytest.fixture(scope="module")
def report2(tmp_path_factory):
    book = gpurisk.synthetic_book(2000, seed=2)
    path = tmp_path_factory.mktemp("report2") / "report.html"
    return write_report(path, risk=gpurisk.revalue(book, backend="cpu"), title="seed 2")


# ------------------------------------------------------------------ tests


@needs_chromium
def test_every_image_loads_and_every_table_has_rows(report1, tmp_path):
    dom, shot = render(report1, tmp_path)
    assert dom.body.get("data-probe") == "done", "the page never finished loading"
    names = [i.get("data-plot") for i in dom.images]
    # margin ratios, one ADL figure per symbol (10), stress curve, cascade
    assert len(names) == 13 and {"margin-ratio", "stress-curve", "cascade", "adl-BTCUSDT"} <= set(names)
    for img in dom.images:
        assert int(img["data-natural-width"]) > 0 and int(img["data-natural-height"]) > 0, img["data-plot"]
        assert img.get("alt")
    # status and percentile tables, 2 queue tables per symbol, worst scenarios, rounds, policies
    assert len(dom.tables) == 2 + 2 * 10 + 3
    for t in dom.tables:
        assert t["th"] > 0 and t["rows"] > 0, t
    assert shot.exists() and shot.stat().st_size > 20_000  # a screenshot of a drawn page, not a blank one


@needs_chromium
def test_the_probe_sees_a_broken_image(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img class="plot" data-plot="x" alt="x" '
                   'src="data:image/png;base64,AAAA"><table><thead><tr><th>a</th></tr></thead>'
                   "<tbody></tbody></table></body></html>")
    dom, _ = render(bad, tmp_path)
    assert dom.body.get("data-probe") == "done"
    assert int(dom.images[0]["data-natural-width"]) == 0
    assert dom.tables[0]["rows"] == 0


def test_pngs_are_real_and_differ_between_books(report1, report2):
    a, b = pngs(report1), pngs(report2)
    for name, data in a.items():
        w, h = png_size(data)
        assert len(data) > 5_000 and w >= 500 and h >= 200, name
    assert set(b) == {n for n in a if n.startswith(("margin", "adl"))}  # no stress section without stress
    for name in b:
        assert a[name] != b[name], f"{name} is the same picture for two different books"


def test_report_from_written_files_matches_the_one_from_memory(tmp_path, book1, risk1, stress1, report1):
    risk1.write(tmp_path / "results")
    stress1.write(tmp_path / "stress")
    risk, st = load_risk_tables(tmp_path / "results"), load_stress_tables(tmp_path / "stress")
    assert st.policy_comparison().height == 2 and st.base_marks is None
    # Base marks from the revaluation: the stress curve is drawn against the shock.
    path = write_report(tmp_path / "files.html", risk=risk, stress=st, title="seed 1")
    text = path.read_text()
    assert "The x axis is the shock" in text
    assert pngs(path) == pngs(report1)
    # Stress alone, without base marks: scenarios by id.
    alone = write_report(tmp_path / "alone.html", stress=st)
    assert "The x axis is the scenario" in alone.read_text()
    assert set(pngs(alone)) == {"stress-curve", "cascade"}


def test_shocks_that_differ_by_symbol_are_plotted_by_scenario(tmp_path, book1):
    scen = pl.DataFrame({"scenario": ["btc down", "btc down", "alts up"], "symbol": ["BTCUSDT", "ETHUSDT", "*"],
                         "shock": [-0.2, -0.05, 0.15]})
    res = stress(book1, scen, backend="cpu", steps=2, impact="linear")
    path = write_report(tmp_path / "r.html", stress=res, base_marks=dict(zip(book1.symbols, book1.mark_price)))
    text = path.read_text()
    assert "The x axis is the scenario" in text and "btc down" in text


def test_headline_and_empty_tables(risk1, stress1):
    text = format_headline(risk1, stress1)
    for word in ("accounts", "equity", "bankrupt", "worst deficit", "scenarios"):
        assert word in text
    assert "<table" not in table_html(pl.DataFrame({"a": []}), "nothing here")
    with pytest.raises(ValueError):
        write_report("never.html")


def test_cli_report_demo_and_stress(tmp_path, capsys):
    assert main(["demo", "--accounts", "1000", "--backend", "cpu", "--out", str(tmp_path / "d1"),
                 "--no-report"]) == 0
    assert not (tmp_path / "d1" / "report.html").exists()
    assert main(["stress", "--accounts", "1000", "--grid", "-0.2", "0.2", "3", "--backend", "cpu",
                 "--out", str(tmp_path / "s"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "worst deficit" in out and f"report: {(tmp_path / 's' / 'report.html').resolve()}" in out
    assert (tmp_path / "s" / "base_marks.parquet").exists()
    assert main(["report", str(tmp_path / "d1" / "results"), "--stress", str(tmp_path / "s"),
                 "--out", str(tmp_path / "both.html")]) == 0
    names = set(pngs(tmp_path / "both.html"))
    assert {"margin-ratio", "stress-curve", "cascade"} <= names
    assert "The x axis is the shock" in (tmp_path / "both.html").read_text()
    assert main(["report", str(tmp_path / "s"), "--out", str(tmp_path / "s.html")]) == 0  # a stress dir alone
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.html")]) == 2
