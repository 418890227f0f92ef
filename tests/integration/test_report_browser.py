"""``driftloop report`` renders in a real browser (Debian's headless Chromium): the page
loads with no console or resource errors, every inlined image decodes, nothing is fetched
from elsewhere, and a screenshot is kept as a test artifact."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from driftloop.blob import open_store
from driftloop.drift import build_profile, detect
from driftloop.monitoring.quality import QualityStat, aggregate
from driftloop.monitoring.report import load_loop_state, write_report
from driftloop.promotion import routing
from driftloop.registry import Registry
from driftloop.settings import PROJECT_ROOT, Settings

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000")
ARTIFACTS = PROJECT_ROOT / ".driftloop" / "test-artifacts"
PROBE = """<script>
window.__errors = [];
addEventListener('error', e => __errors.push(String(e.message || (e.target && e.target.src)
  || e.type).slice(0, 200)), true);
for (const level of ['error', 'warn']) {
  const orig = console[level];
  console[level] = (...a) => { __errors.push(level + ': ' + a.join(' ')); orig(...a); };
}
addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({alt: i.alt, w: i.naturalWidth,
                                               ok: i.complete && i.naturalWidth > 0}));
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify({images: imgs, errors: __errors});
  document.body.appendChild(pre);
});
</script>"""


def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    return subprocess.run(["chromium", *FLAGS, f"--user-data-dir={profile}", *args,
                           page.as_uri()], capture_output=True, text=True, timeout=180)


def probe(report: Path, tmp: Path) -> tuple[dict, str]:
    """The page as the browser loaded it: each image's decoded width, every error seen."""
    probed = tmp / f"probed-{report.name}"
    probed.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    run = chromium(probed, tmp, "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the page did not finish loading: {run.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), run.stderr


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line and ("error" in line.lower() or "Uncaught" in line)]


@pytest.fixture
def report(tmp_path: Path) -> Path:
    store = open_store((tmp_path / "blobs").as_uri(), Settings())
    reg = Registry(store)
    v1 = reg.register("digits", {"model.bin": b"1"}).version
    v2 = reg.register("digits", {"model.bin": b"2"}).version
    reg.set_alias("digits", "champion", v1)
    reg.set_alias("digits", "challenger", v2)
    routing.save(store, routing.Routing("digits", v1, {v1: 0.8, v2: 0.2}, "bandit", 1.7e9))
    for i, phase in enumerate(("gate", "canary", "promoted")):
        store.put(f"promotions/digits/history/2026010{i + 1}T000000000000Z-{i:08x}.json",
                  json.dumps({"at": f"2026-01-0{i + 1}T00:00:00Z", "model": "digits",
                              "version": v2, "phase": phase, "champion": v1,
                              "reason": f"{phase} <ok> & done"}).encode())
    store.put(f"promotions/digits/bake/{v2}.json", json.dumps(
        [{"at": "2026-01-02T00:05:00Z", "verdict": "ok", "reason": "quality within bounds"}]
    ).encode())
    rng = np.random.default_rng(3)
    profile = build_profile({"x": rng.normal(size=2000), "y": rng.normal(size=2000),
                             "z": rng.uniform(size=2000)})
    current = {"x": rng.normal(1.5, 1, 800), "y": rng.normal(size=800),
               "z": rng.uniform(0.3, 1.3, 800)}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    labeled = [(t0 + timedelta(minutes=i), {"model": "digits", "version": v1 if i < 90 else v2,
                                            "metric": "accuracy", "quality": float(i % 4 != 0)})
               for i in range(180)]
    files = write_report(
        tmp_path / "out" / "digits.html", model="digits", version=v1, profile=profile,
        result=detect(profile, current), current=current, labeled=labeled,
        quality=aggregate([r for _, r in labeled]),
        estimated=[QualityStat("digits", v2, "accuracy", 0.71, 400)],
        loop=load_loop_state(store, "digits"))
    assert files.images == ("drift_features", "dist_x", "dist_z", "quality_over_time")
    return files.html


def test_report_is_self_contained(report: Path):
    page = report.read_text()
    links = re.findall(r"""(?:src|href|url)\s*[=(]\s*["']?([^"')\s>]*)""", page)
    assert links and all(u.startswith("data:image/png;base64,") for u in links), "a link out"
    assert "http://" not in page and "https://" not in page
    assert [report] == list(report.parent.iterdir()), "one file, no side files"
    for text in ("DRIFT", "champion", "challenger", "bandit", "80.0%", "promoted",
                 "quality within bounds", "estimated", "0.71", "&lt;ok&gt; &amp; done"):
        assert text in page, text


def test_report_renders_in_chromium(report: Path, tmp_path: Path):
    result, stderr = probe(report, tmp_path)
    assert result["errors"] == [] and console_errors(stderr) == []
    assert len(result["images"]) == 4 and all(i["ok"] for i in result["images"]), result
    shot = tmp_path / "report.png"
    run = chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1280,3000")
    assert run.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", run.stderr
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report.png")


def test_the_probe_sees_a_broken_image_and_a_console_error(report: Path, tmp_path: Path):
    """The check above can fail: a corrupt inlined PNG and a script error are both caught."""
    broken = tmp_path / "broken.html"
    page = report.read_text().replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA",
                                      1)
    broken.write_text(page.replace("</body>", "<script>console.error('boom')</script></body>"))
    result, _ = probe(broken, tmp_path)
    assert [i["ok"] for i in result["images"]].count(False) == 1
    assert any("boom" in e for e in result["errors"])
