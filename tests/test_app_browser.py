"""The moderators' app in a real browser (Playwright, headless Chromium) over a demo cycle: sign in, open
the queue, label three items and watch RKC's prediction change (the item's own score, and a near-duplicate's
through /api/score), roll a champion back in the UI and find that rollback under the moderator's name in
`mmd models`. The labels reach training data at the next cycle's ingest. Screenshots of the queue, the
cycle report and a model card go to $MMD_SCREENSHOTS (docs/screenshots/ in the repository) or tmp."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .app_helpers import USERS, copy_project, free_port, new_champion, running_app

pytestmark = pytest.mark.slow


def _browser_path() -> str | None:
    """Debian's chromium (or $MMD_CHROMIUM); None: Playwright's own download."""
    return os.environ.get("MMD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _rkc_database(settings) -> dict[str, int]:
    from mmd.models.rgcl.predictor import read_database
    from mmd.registry import Registry

    ids, labels, _ = read_database(Registry(settings.layout.registry).champion("rgcl").path / "database.parquet")
    return dict(zip(ids, labels.tolist()))


def test_a_moderator_labels_rolls_back_and_the_cli_shows_it(demo_cycle, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from mmd.models.data import read_items
    from mmd import stages

    port = free_port()
    settings = copy_project(demo_cycle, tmp_path / "p", port)
    new_champion(settings, "cmc")                       # cmc v2 serves, so there is something to roll back to
    shots = Path(os.environ.get("MMD_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    database = _rkc_database(settings)
    with running_app(settings, port) as url, sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=_browser_path(), headless=True)
        except sync_api.Error as exc:
            pytest.skip(f"no Chromium for Playwright: {exc}")
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{url}/queue")
        assert "/login" in page.url                     # not signed in: sent to sign in first
        page.fill("input[name=user]", "alice")
        page.fill("input[name=password]", USERS["alice"])
        page.click("button:has-text('Sign in')")
        page.wait_for_url(f"{url}/queue")
        items = page.locator(".item")
        assert items.count() > 3 and "signed in as" in page.inner_text("nav")
        page.screenshot(path=str(shots / "queue.png"))

        # three items, the first a meme with its picture; each gets the label that must move its RKC score:
        # the opposite of its own label where it is in the RKC database, else the opposite of the RKC vote
        chosen = []
        for n in range(items.count()):
            el = items.nth(n)
            kind, item_id = el.get_attribute("data-kind"), el.get_attribute("data-id")
            if not chosen and (kind != "meme" or not el.locator("img").count()):
                continue
            rkc = json.loads(el.get_attribute("data-scores"))["rgcl"]["score"]
            label = 1 - database[item_id] if item_id in database else int(rkc < 0.5)
            chosen.append((item_id, label, el.locator(".text").inner_text()))
            if len(chosen) == 3:
                break
        meme_id, meme_label, meme_text = chosen[0]
        picture = page.locator(f"#item-{meme_id} img").get_attribute("src")
        image = page.request.get(f"{url}{picture}").body()

        def near_duplicate() -> float:       # the same picture, the text a little changed, through the API
            r = page.request.post(f"{url}/api/score", multipart={
                "text": meme_text + " !!", "image": {"name": "dup.png", "mimeType": "image/png", "buffer": image}})
            assert r.ok, r.text()
            return r.json()["results"][0]["scores"]["rgcl"]["score"]

        dup_before = near_duplicate()
        moves = []
        for item_id, label, _ in chosen:
            page.click(f"#item-{item_id} button[value='{label}']")
            page.wait_for_load_state()
            message = page.inner_text(".flash")
            found = re.search(r"RKC \(rgcl v1\) score of this item: ([0-9.]+) → ([0-9.]+)", message)
            assert found, message
            moves.append((float(found.group(1)), float(found.group(2))))
            assert page.locator(f"#item-{item_id}").count() == 0   # labelled: out of alice's open queue
        assert all(before != after for before, after in moves), moves
        assert near_duplicate() != dup_before
        page.goto(f"{url}/queue?state=labelled")
        assert page.locator(".item").count() == 3 and "alice" in page.inner_text(".item >> nth=0")

        page.goto(f"{url}/reports/cycle")
        assert "mmd cycle report" in page.inner_text("h1")
        page.screenshot(path=str(shots / "cycle-report.png"))
        page.goto(f"{url}/models/cmc/v1/card")
        figure = page.locator('img[src^="data:image/png;base64,"]').first   # the holdout figures, inlined
        assert figure.count() == 1 and figure.evaluate("img => img.naturalWidth") > 0
        figure.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "model-card.png"))

        page.goto(f"{url}/models")
        assert "cmc: champion v2" in page.inner_text("body")
        form = page.locator("form.rollback[data-family=cmc]")
        form.locator("input[name=reason]").fill("the recalibrated v2 is overconfident")
        form.locator("button").click()
        page.wait_for_load_state()
        assert "cmc: back to v1 (rolled back by app:alice)" in page.inner_text(".flash")
        assert "cmc: champion v1" in page.inner_text("body")
        page.screenshot(path=str(shots / "models.png"), full_page=True)
        browser.close()

    shown = subprocess.run([str(Path(sys.executable).with_name("mmd")), "models", "--params", str(settings.params_file)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if "rolled_back" in x)
    assert "cmc" in line and "app:alice" in line and "the recalibrated v2" in line

    # the next cycle's ingest passes the labels on: the detectors train on them
    stages.get("ingest").run(settings)
    labels = {r["id"]: r["label"] for r in read_items(settings)[0]}
    assert [labels[i] for i, _, _ in chosen] == [label for _, label, _ in chosen]
