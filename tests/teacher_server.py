"""Teacher test servers, shared by every package's tests (fixtures registered in tests/conftest.py).

* ``tiny_model_dir``: a randomly initialised Qwen2 model built from the bundled Qwen2.5
  tokenizer, with a ChatML chat template; nothing is downloaded.
* ``fake_openai``: a scripted OpenAI-compatible server on 127.0.0.1 whose answers follow a
  rule the test sets (:class:`FakeOpenAI`), for exact checks of request flow and errors.
* ``transformers_server``: a real ``transformers serve`` (session-scoped) serving the tiny
  model on 127.0.0.1, for the engine path against a server nobody here wrote; it counts
  the chat requests it received from its own access log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOKENIZER_JSON = SHARED_DATA / "tokenizers" / "qwen2.5" / "tokenizer.json"
# Qwen's ChatML as a Jinja template: it renders exactly what corpus.teacher's built-in
# ChatML fallback renders, and `transformers serve` needs a template on the tokenizer.
CHATML_JINJA = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
                "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                "{% endif %}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised Qwen2-architecture model (hidden size 16, one layer) saved with
    a tokenizer built from the bundled Qwen2.5 tokenizer files and a ChatML chat template.
    Nothing is downloaded."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    if not TOKENIZER_JSON.is_file():
        pytest.fail(f"{TOKENIZER_JSON} is missing: tests read ../shared/data beside the repo")
    out = tmp_path_factory.mktemp("tiny-qwen2")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_JSON), eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    tok.chat_template = CHATML_JINJA
    torch.manual_seed(1234)
    cfg = Qwen2Config(vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    assert cfg.vocab_size >= len(tok)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------- fake server
Reply = Callable[[dict[str, Any], int], str]


@dataclass
class Plan:
    """What the server does for one request: status, delay before answering, body override."""

    status: int = 200
    delay: float = 0.0
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class FakeOpenAI:
    """An OpenAI-compatible ``/v1/chat/completions`` (and ``/pooling``) server on 127.0.0.1.

    ``reply(body, i)`` gives the text of choice ``i``; ``plans`` are consumed one per
    request before falling back to a plain 200. Every request body is recorded.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.plans: list[Plan] = []
        self.reply: Reply = lambda body, i: "The answer is \\boxed{5}."
        self.max_choices: int | None = None
        self.delay = 0.0
        self.score: Callable[[dict[str, Any]], Any] = lambda body: {"data": [{"data": [0.0]}]}
        # a status code for a request chosen by its content (None: answer normally)
        self.status: Callable[[dict[str, Any]], int | None] = lambda body: None
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        self.server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, Any, float, dict[str, str]]:
        with self.lock:
            self.requests.append(body)
            self.paths.append(path)
            plan = self.plans.pop(0) if self.plans else Plan(delay=self.delay)
            scripted = self.status(body)
            if scripted is not None:
                plan = Plan(status=scripted)
        if plan.status != 200 or plan.body is not None:
            return plan.status, plan.body if plan.body is not None else {"error": "scripted"}, plan.delay, plan.headers
        if path.endswith("/pooling"):
            return 200, self.score(body), plan.delay, {}
        n = int(body.get("n", 1))
        if self.max_choices is not None:
            n = min(n, self.max_choices)
        choices = [{"index": i, "message": {"role": "assistant", "content": self.reply(body, i)},
                    "finish_reason": "stop"} for i in range(n)]
        usage = {"prompt_tokens": 11, "completion_tokens": 7 * n, "total_tokens": 11 + 7 * n}
        return 200, {"id": "x", "object": "chat.completion", "model": body.get("model"), "choices": choices,
                     "usage": usage}, plan.delay, {}


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            with fake.lock:
                fake.inflight += 1
                fake.max_inflight = max(fake.max_inflight, fake.inflight)
            try:
                status, payload, delay, headers = fake.handle(self.path, body)
                if delay:
                    time.sleep(delay)
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left
            finally:
                with fake.lock:
                    fake.inflight -= 1

    return H


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.server = server
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- transformers serve
POST_CHAT = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" 200')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServedModel:
    """A running ``transformers serve``: its base URL, served model name and log file."""

    base_url: str
    model: str
    log: Path
    proc: subprocess.Popen[bytes]

    def chat_requests(self) -> int:
        """Chat completions the server answered with 200 so far (from its access log)."""
        return len(POST_CHAT.findall(self.log.read_text(encoding="utf-8", errors="replace")))

    def wait_logged(self, n: int, timeout: float = 10.0) -> int:
        """The answered-request count once it reaches ``n`` (access lines land just after replies)."""
        end = time.monotonic() + timeout
        while (got := self.chat_requests()) < n and time.monotonic() < end:
            time.sleep(0.05)
        return got


def serve_command() -> list[str]:
    exe = Path(sys.executable).with_name("transformers")
    return [str(exe) if exe.is_file() else (shutil.which("transformers") or "transformers"), "serve"]


@pytest.fixture(scope="session")
def transformers_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    """``transformers serve`` with the tiny model preloaded, on 127.0.0.1, CPU, offline."""
    log = tmp_path_factory.mktemp("transformers-serve") / "serve.log"
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = serve_command() + [str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                             "--log-level", "info", "--default-seed", "0"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    served = ServedModel(f"http://127.0.0.1:{port}/v1", str(tiny_model_dir), log, proc)
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not answer /health in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.25)
        yield served
    finally:
        # the server leads its own process group (start_new_session): stop it and any helper it started
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()  # it had already exited
