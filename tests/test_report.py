"""The run report (experiments.report): built by the pipeline's last step from a real small run,
every section there and every figure inline; a run folder missing a stage still gives a page
that says so; the page escapes what it shows; and (slow) a real headless Chromium renders it
with no broken image."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from experiments.pipeline import run as run_pipeline
from experiments.report import REPORT, build_report
from experiments.report import run as run_report
from tests.pipeline_fakes import FAST, compose_cfg

SECTIONS = ["run", "data", "ncf", "glmix", "blend", "evaluation", "export"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """The fast pipeline with the two-tower's plots on (PCA: quick), the report step on."""
    out = tmp_path_factory.mktemp("pipeline")
    cfg = compose_cfg(
        "pipeline", *FAST, "outputs.plots=true", "outputs.embeddings=true",
        "outputs.plot_method=pca", "stages.report=true",
        f"paths.output_dir={out}", f"export.sink.path={out / 'lists'}",
    )  # fmt: skip
    run_pipeline(cfg)
    return out


class _Page(HTMLParser):
    """Sections (id -> data-status), their text, and every <img> src."""

    def __init__(self, html: str):
        super().__init__()
        self.status: dict[str, str] = {}
        self.text: dict[str, list[str]] = {}
        self.images: list[tuple[str | None, str]] = []  # (section, src)
        self._section: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._section = a["id"]
            self.status[a["id"]] = a["data-status"]
            self.text[a["id"]] = []
        elif tag == "img":
            self.images.append((self._section, a.get("src") or ""))

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._section is not None:
            self.text[self._section].append(data)

    def section_text(self, sid: str) -> str:
        return " ".join(self.text[sid])


def _page(path: Path) -> _Page:
    return _Page(path.read_text(encoding="utf-8"))


def test_the_pipeline_writes_a_report_with_every_section_and_inline_figures(run_dir):
    page = _page(run_dir / REPORT)  # written by the pipeline's report step
    assert list(page.status) == SECTIONS
    assert page.status == dict.fromkeys(SECTIONS, "ok")
    by_section: dict[str, int] = {}
    for section, src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG) and len(data) > 1_000
        by_section[section] = by_section.get(section, 0) + 1
    # training curves, 4 course maps (popularity, language, category, difficulty), the learner
    # map, the neighbours figure
    assert by_section["ncf"] == 7
    assert by_section["glmix"] == 2  # validation history, coefficients vs truth
    assert by_section["blend"] == 1  # metric vs K
    ncf, glmix = page.section_text("ncf"), page.section_text("glmix")
    blend, export = page.section_text("blend"), page.section_text("export")
    assert "nearest neighbours" in ncf
    assert "Test ndcg@10 per learner segment, on the blend's test candidates" in ncf
    assert "Test ndcg@10 per learner segment" in blend
    assert "true topic interests" in glmix and "Validation history" in glmix
    for text in (
        "bootstrap intervals",
        "Tournaments",
        "Blend weights",
        "personalized vs two_tower",
    ):
        assert text in blend
    assert "Quality gates" in export and "fallback_share" in export and "sha256" in export


def test_the_test_table_carries_intervals_around_its_means(run_dir):
    """The blend's test rows with their bootstrap bounds (from the per-learner file)."""
    import pandas as pd

    from experiments.report_blend import _add_intervals
    from experiments.summary import Intervals

    rows = json.loads((run_dir / "blend" / "metrics.json").read_text())["test"]
    per_learner = pd.read_parquet(run_dir / "blend" / "test_per_learner.parquet")
    _add_intervals(rows, per_learner, Intervals.of_run(run_dir))
    for r in rows:  # every system, the served one and the replay-tuned one included
        assert r["ndcg@10 low"] <= r["ndcg@10"] <= r["ndcg@10 high"], r["system"]
        assert r["ndcg@10 low"] < r["ndcg@10 high"]
    # drawn with the run's settings (evaluate.n_boot, evaluate.ci, seed), which the page says
    assert Intervals.of_run(run_dir) == Intervals(1000, 0.95, 0)
    narrow = [dict(r) for r in rows]
    _add_intervals(narrow, per_learner, Intervals(1000, 0.5, 0))
    assert all(n["ndcg@10 high"] - n["ndcg@10 low"] < r["ndcg@10 high"] - r["ndcg@10 low"]
               for n, r in zip(narrow, rows, strict=True))  # fmt: skip
    page = _page(build_report(run_dir))
    assert "95% bootstrap intervals over learners (1,000 resamples, seed 0)" in (
        page.section_text("blend")
    )


def test_a_run_without_glmix_or_curves_says_so_and_the_rest_is_still_there(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "glmix")
    (copy / "blend" / "test_curves.parquet").unlink()
    (copy / REPORT).unlink()
    page = _page(build_report(copy))
    assert page.status["glmix"] == "not run"
    assert "GLMix: not run (no glmix/metrics.json" in page.section_text("glmix")
    assert page.status["blend"] == "partial"
    assert "Metric-vs-K curves: not run" in page.section_text("blend")
    assert {page.status[s] for s in ("run", "data", "ncf", "export")} == {"ok"}


def test_an_ensembles_members_get_their_own_table(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    path = copy / "ncf" / "metrics.json"
    metrics = json.loads(path.read_text())
    assert "Ensemble members" not in _page(build_report(copy)).section_text("ncf")
    metrics["members"] = [
        {"seed": 7 + i, "best_epoch": 2 * i, "epochs_run": 9,
         "valid": {"val_ndcg@10": 0.111 + i}, "test": {"test_ndcg@10": 0.222 + i}}
        for i in range(2)
    ]  # fmt: skip
    path.write_text(json.dumps(metrics))
    text = _page(build_report(copy)).section_text("ncf")
    assert "Ensemble members, each fitted and its epoch chosen alone" in text
    for value in ("0.111", "1.111", "0.222", "1.222"):
        assert value in text


def test_a_folder_that_is_no_run_is_refused_and_a_bare_run_is_all_not_run(tmp_path):
    """A folder one level too high (outputs/pipeline) got a page of 'not run' sections and
    exit 0; a run folder whose stages all failed still gets its page."""
    with pytest.raises(FileNotFoundError, match="is not a pipeline run folder"):
        build_report(tmp_path)
    assert not (tmp_path / REPORT).exists()
    with pytest.raises(FileNotFoundError, match="run_dir: no such folder"):
        build_report(tmp_path / "absent")
    (tmp_path / "ncf").mkdir()
    (tmp_path / "ncf" / "stage.json").write_text('{"status": "failed"}')
    page = _page(build_report(tmp_path))
    assert page.status == dict.fromkeys(SECTIONS, "not run")
    assert page.images == []


def test_the_page_escapes_what_it_shows(tmp_path):
    (tmp_path / "data_report.json").write_text(
        json.dumps({"tables": {"events": {"rows": 3}}, "notes": ["<script>alert(1)</script>"]})
    )
    html = build_report(tmp_path).read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_part_that_cannot_be_read_shows_its_error(tmp_path):
    (tmp_path / "data_report.json").write_text("{not json")
    page = _page(build_report(tmp_path))
    assert page.status["data"] == "error"
    assert "could not be built: JSONDecodeError" in page.section_text("data")


def test_the_entry_point_rebuilds_the_report_from_a_run_folder(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / REPORT).unlink()
    out = run_report(compose_cfg("report", f"run_dir={copy}"))
    assert out == copy / REPORT and _page(out).status == dict.fromkeys(SECTIONS, "ok")


# ---- a real browser -------------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium; installed with apt-get when missing (as root), else a skip. Never
    `playwright install`: its browser downloads are not reachable here."""
    if not CHROMIUM.exists():
        try:
            for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "chromium"]):
                subprocess.run(cmd, check=True, capture_output=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as err:
            pytest.skip(f"no {CHROMIUM} and `apt-get install -y chromium` failed: {err}")
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM} after apt-get install")
    return CHROMIUM


@pytest.mark.slow
def test_a_headless_browser_renders_every_section_and_image(run_dir, chromium, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    shot = tmp_path / "report.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((run_dir / REPORT).as_uri(), wait_until="load")
            sections = page.evaluate(
                "Array.from(document.querySelectorAll('section')).map(s => "
                "[s.id, s.dataset.status, s.getBoundingClientRect().height])"
            )
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
            )
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert [s[0] for s in sections] == SECTIONS
    assert all(status == "ok" and height > 100 for _, status, height in sections), sections
    assert len(images) == 10  # test_the_pipeline_writes_a_report...: 7 ncf + 2 glmix + 1 blend
    assert all(done and w > 0 and h > 0 for done, w, h in images), images
    data = shot.read_bytes()
    assert data.startswith(PNG) and len(data) > 200_000  # a long page of tables and figures
