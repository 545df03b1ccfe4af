"""Imported once by the multiprocessing fork server (see PDRun).

Importing SGLang's scheduler-side modules costs about 30 s of CPU (torch,
transformers, torch.compile decorators at import time). The fork server
pays it once; each role process forked from it starts in about a second.
It must not load the mori-go library: ``import mori.io`` does not, the
library is loaded by the first ``IOEngine`` in the child.
"""

import os
import warnings

os.environ.setdefault("SGLANG_HOST_IP", "127.0.0.1")
warnings.filterwarnings("ignore")

import numpy  # noqa: E402,F401
import requests  # noqa: E402,F401
import torch  # noqa: E402,F401
import torch.distributed  # noqa: E402,F401

import mori.io  # noqa: E402,F401  (the binding's Python side only)
import sglang.srt.arg_groups.pipeline  # noqa: E402,F401  (publish's imports)
import sglang.srt.disaggregation.mori.conn  # noqa: E402,F401
import sglang.srt.distributed.parallel_state  # noqa: E402,F401

import sglang.srt.mem_cache.memory_pool  # noqa: E402,F401
import sglang.srt.server_args  # noqa: E402,F401

import pd_harness  # noqa: E402,F401
