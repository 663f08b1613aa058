"""Throughput and latency of `sendit serve` under 1 and 8 concurrent clients (docs/use-the-winner.md, section 5).

python scripts/serve_load.py MODEL_DIR [SECONDS_PER_LEVEL] [TEXTS_PER_REQUEST] [extra sendit serve flags...]

Starts `sendit serve MODEL_DIR --port 0` (fp32 unless the flags say otherwise), then for 1 and for 8 clients sends
requests of embedded tweets back to back for SECONDS_PER_LEVEL (default 20) and prints tweets/s, request latency
p50/p95 and how many model calls the requests took (the micro-batcher's merging). Stops the service with SIGTERM.
"""
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx

from sendit.config.schema import DataConfig
from sendit.data.reading import read_source

folder = sys.argv[1]
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
per_request = int(sys.argv[3]) if len(sys.argv) > 3 else 1
flags = sys.argv[4:] or ["--precision", "fp32"]
texts = read_source("embedded", DataConfig(normalize=False)).texts[:2000]

log = tempfile.NamedTemporaryFile("w+", suffix=".log")
server = subprocess.Popen([sys.executable, "-m", "sendit.cli", "serve", folder, "--port", "0", *flags], stderr=log)
while "http://" not in open(log.name).read():
    if server.poll() is not None:
        sys.exit(open(log.name).read())
    time.sleep(0.2)
url = "http://" + open(log.name).read().split("http://")[1].split()[0]
while True:
    try:
        httpx.get(url + "/health")
        break
    except httpx.TransportError:
        time.sleep(0.2)
print(open(log.name).read().strip())
for i in range(0, 200, per_request):  # warm-up
    httpx.post(url + "/predict", json={"texts": texts[i : i + per_request]}, timeout=60)


def level(clients: int) -> None:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start, stop_at = threading.Barrier(clients + 1), [0.0]

    def client(k: int) -> None:
        with httpx.Client(timeout=60) as http:
            start.wait()
            i = k * 97
            while time.perf_counter() < stop_at[0]:
                batch = [texts[(i + j) % len(texts)] for j in range(per_request)]
                t = time.perf_counter()
                http.post(url + "/predict", json={"texts": batch}).raise_for_status()
                latencies[k].append(time.perf_counter() - t)
                i += per_request

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    before = httpx.get(url + "/health").json()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    after = httpx.get(url + "/health").json()
    flat = sorted(x for xs in latencies for x in xs)
    requests, calls = after["requests"] - before["requests"], after["model_calls"] - before["model_calls"]
    print(f"{clients} client(s), {per_request} tweet(s)/request: {len(flat) * per_request / elapsed:7.1f} tweets/s, "
          f"latency p50 {1000 * statistics.median(flat):6.1f} ms, p95 {1000 * flat[int(0.95 * (len(flat) - 1))]:6.1f} ms"
          f"; {requests} requests in {calls} model calls ({requests / max(calls, 1):.1f} requests/call)")


for clients in (1, 8):
    level(clients)
server.send_signal(signal.SIGTERM)
print(f"service exit code {server.wait(timeout=60)}")
