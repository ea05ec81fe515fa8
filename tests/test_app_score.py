"""The scoring service for real: a demo cycle's champions behind `mmd app` (uvicorn, real HTTP). A meme
posted to /api/score gets each champion's score, version and nearest labelled items; a newly promoted
champion answers the next request of the same running service; batches and image URLs work."""

from __future__ import annotations

import base64
import http.server
import json
import re
import threading

import numpy as np
import pytest
import requests

from mmd.cycle import cycle_lock
from mmd.items import ITEM_SCHEMA, read_table
from mmd.models.rgcl.predictor import LABELS_SCHEMA

from .app_helpers import TOKEN, copy_project, free_port, new_champion, running_app

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _a_meme(settings) -> dict:
    return next(r for r in read_table(settings.layout.items, ITEM_SCHEMA).to_pylist()
                if r["kind"] == "meme" and r["image_path"])


def test_a_meme_is_scored_and_a_new_champion_serves_without_a_restart(demo_cycle, tmp_path):
    from mmd.models.serving import load_predictor
    from mmd.registry import Registry

    port = free_port()
    settings = copy_project(demo_cycle, tmp_path / "p", port, allow_private_urls=True)
    meme = _a_meme(settings)
    picture = (settings.data_dir / meme["image_path"]).read_bytes()
    with running_app(settings, port) as url:
        assert requests.get(f"{url}/api/health", timeout=10).json()["champions"] == {"cmc": 1, "rgcl": 1}
        first = requests.post(f"{url}/api/score", headers=AUTH, data={"text": meme["text"]},
                              files={"image": ("meme.png", picture, "image/png")}, timeout=120)
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["models"] == {"cmc": 1, "rgcl": 1}
        (result,) = body["results"]
        assert result["has_image"] and set(result["scores"]) == {"cmc", "rgcl"}
        assert all(0 <= s["score"] <= 1 and s["version"] == 1 and s["trained_at"] for s in result["scores"].values())
        near = result["neighbours"]
        assert near and near[0]["id"] == meme["id"] and near[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
        assert all(n["label"] in (0, 1) for n in near) and len(near) <= settings.params.app.neighbours

        # a recalibrated cmc is promoted behind the service's back: the next request gets it
        v2 = new_champion(settings, "cmc")
        second = requests.post(f"{url}/api/score", headers=AUTH, data={"text": meme["text"]},
                               files={"image": ("meme.png", picture, "image/png")}, timeout=120).json()
        assert second["models"] == {"cmc": 2, "rgcl": 1}
        got = second["results"][0]["scores"]["cmc"]
        assert got["version"] == v2.number == 2
        row = [{"id": "q", "text": meme["text"], "image_path": meme["image_path"]}]
        expected = load_predictor(settings, "cmc", v2.path).score(row, settings.data_dir)[0][0]
        assert got["score"] == pytest.approx(float(expected), abs=1e-5)
        assert got["score"] != pytest.approx(result["scores"]["cmc"]["score"], abs=1e-6)
        assert second["results"][0]["scores"]["rgcl"] == result["scores"]["rgcl"]
        Registry(settings.layout.registry).rollback("cmc", reason="back", by="test")
        third = requests.post(f"{url}/api/score", headers=AUTH, json={"text": meme["text"]}, timeout=60).json()
        assert third["models"]["cmc"] == 1

        # a batch: texts, an inline picture and a picture by URL (a local server: private URLs allowed here)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _serving(picture))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            items = [{"text": "a claim about a flood"}, {"text": meme["text"],
                                                         "image_base64": base64.b64encode(picture).decode()},
                     {"text": meme["text"], "image_url": f"http://127.0.0.1:{server.server_port}/meme.png"}]
            batch = requests.post(f"{url}/api/score", headers=AUTH, json={"items": items}, timeout=120)
        finally:
            server.shutdown()
        assert batch.status_code == 200, batch.text
        results = batch.json()["results"]
        assert [r["has_image"] for r in results] == [False, True, True]
        scores = np.array([[r["scores"][f]["score"] for f in ("cmc", "rgcl")] for r in results])
        np.testing.assert_allclose(scores[1], scores[2], atol=1e-6)   # the same picture, inline or by URL
        bad = requests.post(f"{url}/api/score", headers=AUTH, json={"text": "x", "image_url":
                            f"http://127.0.0.1:{server.server_port}/gone.png"}, timeout=60)
        assert bad.status_code == 400 and bad.json()["error"] == "url_failed"


def _serving(picture: bytes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path != "/meme.png":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(picture)))
            self.end_headers()
            self.wfile.write(picture)

        def log_message(self, *args):
            pass

    return Handler


def test_health_search_and_the_store_kept_free_while_a_cycle_runs(demo_cycle, tmp_path):
    port = free_port()
    settings = copy_project(demo_cycle, tmp_path / "p", port)
    meme = _a_meme(settings)
    with running_app(settings, port) as url:
        health = requests.get(f"{url}/api/health", timeout=10).json()
        assert health == {"status": "ok", "champions": {"cmc": 1, "rgcl": 1}, "cycle_running": False}
        s = requests.Session()
        page = s.get(f"{url}/login", timeout=10).text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        s.post(f"{url}/login", data={"user": "alice", "password": "alice-password", "csrf": csrf, "next": "/"},
               timeout=10)
        found = s.get(f"{url}/search", params={"q": meme["text"]}, timeout=60)
        assert found.status_code == 200 and meme["text"] in found.text
        assert json.loads(s.get(f"{url}/reports/file/review.json", timeout=10).text)["queue"] > 0

        # while a cycle holds the lock the app keeps out of the store: CMC still scores, RKC says why not, and
        # a label is recorded and joins the RKC database with the next label after the cycle
        queue = s.get(f"{url}/queue", timeout=30).text
        first, second = re.findall(r'data-id="([^"]+)"', queue)[:2]
        token = queue.split('name="csrf" value="')[1].split('"')[0]
        with cycle_lock(settings):
            assert requests.get(f"{url}/api/health", timeout=10).json()["cycle_running"] is True
            busy = requests.post(f"{url}/api/score", headers=AUTH, json={"text": meme["text"]}, timeout=60).json()
            scores = busy["results"][0]["scores"]
            assert scores["cmc"]["score"] is not None and scores["rgcl"]["score"] is None
            assert "a cycle is running" in scores["rgcl"]["error"] and busy["results"][0]["neighbours"] == []
            page = s.post(f"{url}/queue/{first}/label", data={"csrf": token, "action": "1"}, timeout=60).text
            assert "RKC not updated now: a cycle is running" in page
        page = s.post(f"{url}/queue/{second}/label", data={"csrf": token, "action": "0"}, timeout=60).text
        assert "1 earlier label(s) that waited for the store joined too" in page
        held = {r["id"]: r["label"] for r in read_table(settings.layout.labels, LABELS_SCHEMA).to_pylist()}
        assert held == {first: 1, second: 0}
