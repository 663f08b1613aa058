"""`sendit serve`: a real uvicorn process on a tiny trained model (torch and ONNX), a real HTTP client. Answers equal
`sendit predict`'s, concurrent requests share model calls, every bad request gets its 4xx and the service goes on,
SIGTERM lets the request in flight finish and exits 0, and setup mistakes end with exit 2 and one paragraph."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_export import ONE_THREAD, sample_texts

import sendit.serve.server as serve_module
from sendit.cli import main
from sendit.serve.model_folder import load

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = str(Path(serve_module.__file__).parents[1])


@pytest.fixture(scope="module")
def folders(tmp_path_factory, one_thread, bert_run, bert_head_onnx) -> dict:
    """The shared tiny BERT run's head (conftest.py: root/"tiny-bert", root/"run"; read-only), its shared ONNX
    export (read-only too), and this module's own folder for the logs."""
    own = tmp_path_factory.mktemp("serve")
    return {"torch": bert_run / "run" / "head", "onnx": bert_head_onnx, "root": bert_run, "own": own}


class Service:
    """`python -m sendit.cli serve FOLDER --port 0 ...` in a subprocess, ready once /health answers."""

    def __init__(self, folder: Path, log: Path, *flags: str):
        env = {**ONE_THREAD, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.log = log
        with open(log, "w") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "sendit.cli", "serve", str(folder), "--port", "0",
                                             "--precision", "fp32", *flags], stderr=err, env=env)
        deadline = time.monotonic() + 60
        while "http://" not in log.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        self.url = log.read_text().split("http://")[1].split()[0]
        self.url = "http://" + self.url
        while True:
            try:
                httpx.get(self.url + "/health").raise_for_status()
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)

    def predict(self, texts, **kw) -> httpx.Response:
        return httpx.post(self.url + "/predict", json={"texts": texts}, timeout=30, **kw)

    def health(self) -> dict:
        return httpx.get(self.url + "/health").json()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def service(folders):
    s = Service(folders["torch"], folders["own"] / "serve.log", "--max-wait-ms", "50", "--max-batch", "64",
                "--max-texts", "16", "--max-body-bytes", "4000", "--max-text-chars", "500")
    yield s
    assert s.stop() == 0, s.log.read_text()


def test_answers_equal_sendit_predict(service, folders, tmp_path):
    texts = sample_texts()[:16]
    answer = service.predict(texts)
    assert answer.status_code == 200
    assert main(["predict", str(folders["torch"]), *texts, "--precision", "fp32", "--output",
                 str(tmp_path / "p.csv")]) == 0
    expected = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    got = pd.DataFrame(answer.json()["predictions"])
    assert list(got.columns) == [c for c in expected.columns if c != "text"] == ["prediction", "prob_positive"]
    assert (got["prediction"] == expected["prediction"]).all()
    np.testing.assert_allclose(got["prob_positive"], expected["prob_positive"], atol=1e-6)  # the CSV's 6 decimals
    info = httpx.get(service.url + "/model").json()
    assert info | {"sendit_version": None, "limits": None} == {
        "method": "head", "base_model": str(folders["root"] / "tiny-bert"), "classes": ["negative", "positive"],
        "precision": "fp32", "max_length": 128, "format": "torch", "sendit_version": None, "limits": None}
    assert info["limits"]["max_texts"] == 16


def test_concurrent_clients_share_model_calls(service, folders):
    texts = sample_texts()
    expected = load(folders["torch"], precision="fp32").predict_proba(texts, progress=False).probs[:, 1]
    before = service.health()
    start, failures = threading.Barrier(8), []

    def client(k: int) -> None:
        start.wait()
        for r in range(4):  # each request a different slice, so a mixed-up answer shows
            lo = (3 * k + 5 * r) % (len(texts) - 4)
            got = [p["prob_positive"] for p in service.predict(texts[lo : lo + 4]).json()["predictions"]]
            if not np.allclose(got, expected[lo : lo + 4], atol=1e-6):
                failures.append((k, r, got, expected[lo : lo + 4].tolist()))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    after = service.health()
    requests, calls = after["requests"] - before["requests"], after["model_calls"] - before["model_calls"]
    assert requests == 32 and after["texts"] - before["texts"] == 128
    assert calls <= requests / 2, f"{requests} requests took {calls} model calls: the micro-batcher did not merge"


def test_bad_requests_get_4xx_and_the_service_goes_on(service):
    chunked = (piece for piece in [b'{"texts": ["', b"x" * 3000, b'", "', b"y" * 3000, b'"]}'])  # no Content-Length
    bad = {
        "empty list": (422, {"json": {"texts": []}}),
        "non-string item": (422, {"json": {"texts": ["ok", 3]}}),
        "texts not a list": (422, {"json": {"texts": "so happy"}}),
        "missing field": (422, {"json": {"text": ["so happy"]}}),
        "not an object": (422, {"json": ["so happy"]}),
        "malformed JSON": (400, {"content": b'{"texts": ["so happy"'}),
        "not UTF-8": (400, {"content": b'{"texts": ["\xff"]}'}),
        "too many texts": (413, {"json": {"texts": ["a"] * 17}}),
        "text too long": (413, {"json": {"texts": ["a" * 501]}}),
        "body too large": (413, {"json": {"texts": ["a" * 400] * 12}}),
        "body too large, chunked": (413, {"content": chunked}),
    }
    for name, (status, request) in bad.items():
        answer = httpx.post(service.url + "/predict", timeout=30, **request)
        assert answer.status_code == status, (name, answer.text)
        error = answer.json()["error"]
        assert isinstance(error, str) and "\n" not in error and len(error) > 20, (name, error)
        assert service.predict(["still here"]).status_code == 200, name
    assert httpx.get(service.url + "/predict").status_code == 405
    assert httpx.get(service.url + "/nope").json()["error"].startswith("GET /nope: Not Found")
    assert service.health()["status"] == "ok" and service.process.poll() is None


def test_onnx_folder_is_served(folders, tmp_path):
    texts = sample_texts()[:12]
    s = Service(folders["onnx"], tmp_path / "onnx.log")
    try:
        got = [p["prob_positive"] for p in s.predict(texts).json()["predictions"]]
        assert httpx.get(s.url + "/model").json()["format"] == "onnx"
    finally:
        assert s.stop() == 0
    expected = load(folders["onnx"]).predict_proba(texts).probs[:, 1]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_sigterm_finishes_the_request_in_flight(folders, tmp_path):
    # A 2 s batching window keeps the request waiting inside the service when SIGTERM comes.
    s = Service(folders["torch"], tmp_path / "stop.log", "--max-wait-ms", "2000")
    texts = sample_texts()[:3]
    answer = {}
    client = threading.Thread(target=lambda: answer.update(r=s.predict(texts)))
    client.start()
    while s.health()["requests"] == 0:
        time.sleep(0.02)
    s.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(httpx.TransportError):  # no longer accepting
        httpx.get(s.url + "/health", timeout=2)
    assert s.process.poll() is None  # still finishing the request
    client.join(30)
    assert s.process.wait(timeout=30) == 0, (tmp_path / "stop.log").read_text()
    assert answer["r"].status_code == 200
    expected = load(folders["torch"], precision="fp32").predict_proba(texts, progress=False).probs[:, 1]
    np.testing.assert_allclose([p["prob_positive"] for p in answer["r"].json()["predictions"]], expected, atol=1e-6)
    assert "stopped after answering every request in flight" in (tmp_path / "stop.log").read_text()


def test_setup_mistakes_exit_2_with_a_paragraph(folders, tmp_path, monkeypatch, capsys):
    def one_paragraph() -> str:
        err = capsys.readouterr().err.strip()
        assert err.startswith("sendit serve: error: ") and "\n" not in err and "Traceback" not in err
        return err

    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    assert "is not a sendit model folder" in one_paragraph()
    assert main(["serve", str(folders["root"] / "run"), "--port", "0"]) == 2
    assert "looks like a run folder" in one_paragraph()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", str(folders["torch"]), "--port", str(taken.getsockname()[1])]) == 2
        assert "is taken" in one_paragraph()
    assert main(["serve", str(folders["torch"]), "--max-batch", "0"]) == 2
    assert "--max-batch must be positive" in one_paragraph()
    real = serve_module.importlib.util.find_spec
    monkeypatch.setattr(serve_module.importlib.util, "find_spec", lambda n: None if n == "fastapi" else real(n))
    assert main(["serve", str(folders["torch"])]) == 2
    assert "pip install 'sendit[serve]'" in one_paragraph()
