"""tweets/s of one model in torch fp32, ONNX fp32 and ONNX int8, interleaved and repeated (docs/use-the-winner.md).

python scripts/onnx_speed.py MODEL_DIR ONNX_FP32_DIR ONNX_INT8_DIR ROUNDS
"""
import statistics
import sys
import time

import torch

from sendit.config.schema import DataConfig
from sendit.data.reading import read_source
from sendit.serve.model_folder import load

texts = read_source("embedded", DataConfig(normalize=False)).texts[:2000]

models = {"torch fp32": load(sys.argv[1], precision="fp32"), "onnx fp32": load(sys.argv[2]), "onnx int8": load(sys.argv[3])}
for m in models.values():
    m.predict_proba(texts[:200], progress=False)  # warm-up
rates = {k: [] for k in models}
for _ in range(int(sys.argv[4])):
    for k, m in models.items():
        t = time.perf_counter()
        m.predict_proba(texts, progress=False)
        rates[k].append(len(texts) / (time.perf_counter() - t))
print(f"threads {torch.get_num_threads()}, {len(texts)} tweets, {len(rates['torch fp32'])} interleaved rounds")
for k, r in rates.items():
    print(f"{k:11s} median {statistics.median(r):7.0f} tweets/s  (min {min(r):.0f}, max {max(r):.0f})  "
          f"x{statistics.median(r) / statistics.median(rates['torch fp32']):.2f}")
