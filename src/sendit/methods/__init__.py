"""The method registry. A method differs from another only in which parameters train and how they are saved;
all of them plug into the one training loop in `sendit.train.engine`. sendit's own methods register themselves
below; other packages' methods arrive through the `sendit.methods` entry point (plugins.py, docs/methods.md).

Method files import torch, transformers and peft inside their functions, so that the registry and the methods'
settings (which the config reads to know its flags) load without them: the command line and `sendit report`
start fast (tests/test_report.py)."""

from sendit.methods.registry import (  # noqa: F401  (the public API)
    METHODS, TARGET_MODULES_HELP, Method, Registry, get_method, learning_rate, method_info, register,
    target_modules_problem,
)

from sendit.methods import bitfit, full, head, ia3, lora  # noqa: F401  (each file registers itself)
