"""The three engine backends: vLLM up to the call into vllm, OpenAI over loopback HTTP, transformers for real."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from corpus.errors import ConfigError, FatalError
from corpus.teacher import (CHATML_TEMPLATE, EngineSpec, GenRequest, OpenAIEngine, SamplingConfig, TransformersEngine,
                            VLLMEngine, build_engine, cut_at_stop, derive_seed, get_engine, make_sampling_params,
                            parse_vllm_output, render_chat, vllm_sampling_kwargs)
from tests.teacher_server import FakeOpenAI, Plan

MSGS = ({"role": "system", "content": "Reason step by step."}, {"role": "user", "content": "What is 2+3?"})


def test_derive_seed_is_stable_and_separates_labels() -> None:
    a = derive_seed(0, "solve@v1", "doc-1")
    assert a == derive_seed(0, "solve@v1", "doc-1") and 0 <= a < 2**31
    assert len({derive_seed(0, "solve@v1", f"doc-{i}") for i in range(1000)}) == 1000
    assert derive_seed(1, "solve@v1", "doc-1") != a


def test_render_chat_chatml_fallback_and_prefix() -> None:
    got = render_chat(None, MSGS, prefix="Let me")
    assert got == ("<|im_start|>system\nReason step by step.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
                   "<|im_start|>assistant\nLet me")
    assert render_chat(None, MSGS, chat_template=CHATML_TEMPLATE) == render_chat(None, MSGS)


def test_cut_at_stop_takes_earliest() -> None:
    assert cut_at_stop("abc```output\nx<|im_end|>", ["<|im_end|>", "```output"]) == ("abc", "```output")
    assert cut_at_stop("abc", ["zz"]) == ("abc", None)


# ----------------------------------------------------------------------------- vLLM (no vllm installed)
def test_vllm_sampling_kwargs_mapping() -> None:
    p = SamplingConfig(n=8, temperature=0.7, top_p=0.8, top_k=0, max_tokens=512, seed=42,
                       stop=("```output",), repetition_penalty=1.05)
    assert vllm_sampling_kwargs(p) == {"n": 8, "temperature": 0.7, "top_p": 0.8, "top_k": -1, "max_tokens": 512,
                                       "repetition_penalty": 1.05, "skip_special_tokens": True, "seed": 42,
                                       "stop": ["```output"]}
    q = vllm_sampling_kwargs(SamplingConfig(top_k=20))
    assert q["top_k"] == 20 and "seed" not in q and "stop" not in q
    made: list[dict[str, Any]] = []
    sp = make_sampling_params(p, factory=lambda **kw: made.append(kw) or ("SP", kw["n"]))
    assert sp == ("SP", 8) and made == [vllm_sampling_kwargs(p)]


@dataclass
class CompletionOutput:  # the fields vllm.outputs.CompletionOutput has
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = "stop"
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:  # the fields vllm.outputs.RequestOutput has
    request_id: str
    prompt: str
    prompt_token_ids: list[int]
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool = True


class FakeTokenizer:
    chat_template = "{{ custom }}"

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool,
                            **kw: Any) -> str:
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"[{m['role']}]{m['content']}" for m in messages) + "[assistant]"


@dataclass
class FakeLLM:
    kwargs: dict[str, Any]
    calls: list[tuple[list[str], list[Any]]] = field(default_factory=list)

    def get_tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    def generate(self, prompts: list[str], params: list[Any], use_tqdm: bool = True) -> list[RequestOutput]:
        self.calls.append((prompts, params))
        outs = []
        for i, (p, sp) in enumerate(zip(prompts, params)):
            comps = [CompletionOutput(index=j, text=f"s{j} \\boxed{{{i}}}", token_ids=[1] * (j + 2),
                                      finish_reason="length" if j == 1 else "stop",
                                      stop_reason="```output" if j == 2 else (151645 if j == 0 else None))
                     for j in reversed(range(sp["n"]))]  # vLLM may list samples out of order
            outs.append(RequestOutput(str(i), p, [7] * (3 + i), None, comps))
        return outs


def test_vllm_engine_builds_requests_and_parses_outputs() -> None:
    holder: dict[str, FakeLLM] = {}

    def factory(**kw: Any) -> FakeLLM:
        holder["llm"] = FakeLLM(kw)
        return holder["llm"]

    eng = VLLMEngine("Qwen/Qwen2.5-Math-72B-Instruct", tensor_parallel_size=4, max_model_len=4096, seed=3,
                     llm_factory=factory, sampling_factory=lambda **kw: kw)
    reqs = [GenRequest("a", MSGS, SamplingConfig(n=3, seed=11)),
            GenRequest("b", MSGS[1:], SamplingConfig(n=3, seed=12), prefix="```python\nprint(1)\n```")]
    res = eng.generate(reqs)
    llm = holder["llm"]
    assert llm.kwargs == {"model": "Qwen/Qwen2.5-Math-72B-Instruct", "tensor_parallel_size": 4,
                          "enable_prefix_caching": True, "gpu_memory_utilization": 0.9, "dtype": "auto", "seed": 3,
                          "trust_remote_code": False, "max_model_len": 4096}
    prompts, params = llm.calls[0]
    assert prompts == ["[system]Reason step by step.[user]What is 2+3?[assistant]",
                       "[user]What is 2+3?[assistant]```python\nprint(1)\n```"]
    assert [p["seed"] for p in params] == [11, 12] and all(p["n"] == 3 for p in params)
    assert [r.key for r in res] == ["a", "b"]
    a = res[0]
    assert [c.text for c in a.completions] == ["s0 \\boxed{0}", "s1 \\boxed{0}", "s2 \\boxed{0}"]
    assert [c.finish_reason for c in a.completions] == ["stop", "length", "stop"]
    assert [c.stop_reason for c in a.completions] == [None, None, "```output"]  # token-id stops are not strings
    assert [c.tokens for c in a.completions] == [2, 3, 4] and a.prompt_tokens == 3 and res[1].prompt_tokens == 4
    assert eng.generate([]) == [] and len(llm.calls) == 1


def test_vllm_engine_chatml_when_tokenizer_has_no_template() -> None:
    class Bare(FakeLLM):
        def get_tokenizer(self) -> Any:
            return type("T", (), {"chat_template": None})()

    eng = VLLMEngine("m", llm_factory=lambda **kw: Bare(kw), sampling_factory=lambda **kw: kw)
    assert eng.build_prompts([GenRequest("a", MSGS, SamplingConfig())]) == [render_chat(None, MSGS)]


def test_parse_vllm_output_direct() -> None:
    out = RequestOutput("0", "p", [1, 2], None, [CompletionOutput(0, "hi", [5], finish_reason=None)])
    r = parse_vllm_output(out, "k")
    assert r.key == "k" and r.completions[0].finish_reason == "stop" and r.completions[0].tokens == 1


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_missing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"teacher: --engine vllm needs the vllm package; install it with "
                                          r"`pip install 'mathcorpus\[vllm\]'`"):
        VLLMEngine("m").generate([GenRequest("a", MSGS, SamplingConfig())])


# ----------------------------------------------------------------------------- OpenAI-compatible
def _engine(fake: FakeOpenAI, **kw: Any) -> OpenAIEngine:
    opts: dict[str, Any] = {"base_url": fake.base_url, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
                            "timeout_s": 5.0, "max_retries": 3}
    opts.update(kw)
    return OpenAIEngine("teacher", **opts)


def test_openai_payload_and_parsing(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = lambda body, i: f"sample {i} for {body['messages'][-1]['content']}"
    eng = _engine(fake_openai)
    p = SamplingConfig(n=3, temperature=0.6, top_p=0.9, top_k=20, max_tokens=64, seed=7, stop=("</s>",))
    res = eng.generate([GenRequest("q1", MSGS, p)])
    body = fake_openai.requests[0]
    assert body == {"model": "teacher", "messages": [dict(m) for m in MSGS], "n": 3, "temperature": 0.6,
                    "top_p": 0.9, "max_tokens": 64, "seed": 7, "stop": ["</s>"], "top_k": 20}
    assert [c.text for c in res[0].completions] == [f"sample {i} for What is 2+3?" for i in range(3)]
    assert res[0].prompt_tokens == 11 and res[0].completions[0].tokens == 7
    assert fake_openai.paths == ["/v1/chat/completions"]


def test_openai_prefix_uses_continue_final_message(fake_openai: FakeOpenAI) -> None:
    eng = _engine(fake_openai)
    eng.generate([GenRequest("q", MSGS, SamplingConfig(), prefix="```python\nx=1\n```")])
    body = fake_openai.requests[0]
    assert body["messages"][-1] == {"role": "assistant", "content": "```python\nx=1\n```"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_openai_tops_up_when_server_ignores_n(fake_openai: FakeOpenAI) -> None:
    fake_openai.max_choices = 1
    res = _engine(fake_openai).generate([GenRequest("q", MSGS, SamplingConfig(n=3, seed=5))])
    assert len(res[0].completions) == 3
    assert [(r["n"], r["seed"]) for r in fake_openai.requests] == [(3, 5), (2, 6), (1, 7)]


def test_openai_retries_500_then_succeeds_with_seeded_backoff(fake_openai: FakeOpenAI) -> None:
    fake_openai.plans = [Plan(status=500), Plan(status=503)]
    eng = _engine(fake_openai, seed=9)
    res = eng.generate([GenRequest("q", MSGS, SamplingConfig(seed=1))])
    assert res[0].completions[0].text == "The answer is \\boxed{5}."
    assert eng.stats == {"requests": 3, "retries": 2, "timeouts": 0}
    # equal jitter: attempt k waits between half and all of min(max, base * 2**k)
    assert 0.025 <= eng.sleeps[0] <= 0.05 and 0.05 <= eng.sleeps[1] <= 0.1
    fake_openai.plans = [Plan(status=500), Plan(status=503)]
    again = _engine(fake_openai, seed=9)
    again.generate([GenRequest("q", MSGS, SamplingConfig(seed=1))])
    assert again.sleeps == eng.sleeps  # the jitter comes from a seeded RNG


def test_openai_honours_retry_after(fake_openai: FakeOpenAI) -> None:
    fake_openai.plans = [Plan(status=429, headers={"Retry-After": "0.15"})]
    eng = _engine(fake_openai, backoff_base_s=0.01, backoff_max_s=1.0)
    eng.generate([GenRequest("q", MSGS, SamplingConfig())])
    assert eng.sleeps[0] >= 0.15


def test_openai_timeout_is_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.plans = [Plan(delay=2.0)]
    eng = _engine(fake_openai, timeout_s=0.5)
    t0 = time.monotonic()
    res = eng.generate([GenRequest("q", MSGS, SamplingConfig())])
    assert res[0].completions[0].text.endswith("\\boxed{5}.")
    assert eng.stats["timeouts"] == 1 and eng.stats["requests"] == 2
    assert time.monotonic() - t0 < 2.0  # did not wait for the slow answer


def test_openai_gives_up_with_a_message(fake_openai: FakeOpenAI) -> None:
    fake_openai.plans = [Plan(delay=1.0)] * 2
    eng = _engine(fake_openai, timeout_s=0.3, max_retries=1)
    with pytest.raises(FatalError, match=r"/v1/chat/completions: request q#0 failed after 2 attempt\(s\): timed out "
                                         r"after 0\.3 s \(ReadTimeout\)\. Generated samples so far are saved; rerun "
                                         r"the same command to resume\."):
        eng.generate([GenRequest("q", MSGS, SamplingConfig())])


def test_openai_client_error_is_not_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.plans = [Plan(status=400, body={"error": "bad model"})]
    eng = _engine(fake_openai)
    with pytest.raises(FatalError, match=r"HTTP 400 for model 'teacher': \{\"error\": \"bad model\"\}\. Check "
                                         r"--model and --base-url; this error is not retried\."):
        eng.generate([GenRequest("q", MSGS, SamplingConfig())])
    assert eng.stats["requests"] == 1


def test_openai_concurrency_limit(fake_openai: FakeOpenAI) -> None:
    fake_openai.delay = 0.15
    eng = _engine(fake_openai, concurrency=2)
    reqs = [GenRequest(f"q{i}", MSGS, SamplingConfig(seed=i)) for i in range(6)]
    res = eng.generate(reqs)
    assert [r.key for r in res] == [f"q{i}" for i in range(6)]
    assert fake_openai.max_inflight == 2


def test_openai_needs_base_url() -> None:
    with pytest.raises(ConfigError, match=r"teacher: --engine openai needs --base-url"):
        OpenAIEngine("m", base_url="")


def test_engine_factory_and_cache(fake_openai: FakeOpenAI) -> None:
    spec = EngineSpec("openai", "teacher", {"base_url": fake_openai.base_url})
    assert get_engine(spec) is get_engine(spec)
    with pytest.raises(ConfigError, match="teacher: unknown engine 'vlm'; did you mean 'vllm'?"):
        build_engine(EngineSpec("vlm", "m"))


# ----------------------------------------------------------------------------- transformers (real, CPU)
def test_transformers_generate_is_seeded_and_reports_finish(tiny_model_dir: Path) -> None:
    eng = TransformersEngine(str(tiny_model_dir), threads=1)
    p = SamplingConfig(n=3, temperature=1.0, top_p=1.0, max_tokens=6, seed=123)
    r1 = eng.generate([GenRequest("a", MSGS, p)])[0]
    r2 = eng.generate([GenRequest("a", MSGS, p), GenRequest("b", MSGS, p.with_(seed=124))])
    assert [c.text for c in r1.completions] == [c.text for c in r2[0].completions]
    assert [c.text for c in r2[1].completions] != [c.text for c in r1.completions]
    assert len(r1.completions) == 3 and all(c.tokens is not None and c.tokens <= 6 for c in r1.completions)
    assert all(c.finish_reason in ("stop", "length") for c in r1.completions)
    assert r1.prompt_tokens is not None and r1.prompt_tokens > 10
    greedy = eng.generate([GenRequest("g", MSGS, SamplingConfig(n=1, temperature=0.0, max_tokens=5))])[0]
    assert greedy.completions[0].finish_reason == "length" or greedy.completions[0].tokens <= 5


def test_transformers_stop_strings_cut_output(tiny_model_dir: Path) -> None:
    eng = TransformersEngine(str(tiny_model_dir), threads=1)
    p = SamplingConfig(n=1, temperature=1.0, top_p=1.0, max_tokens=8, seed=5)
    free = eng.generate([GenRequest("a", MSGS, p)])[0]
    text = free.completions[0].text
    assert len(text) > 2
    # a stop string the greedy sample is known to contain, first seen after its start
    k = next(k for k in range(1, len(text) - 1) if text.find(text[k:k + 2]) == k and text[k:k + 2].strip())
    stop = text[k:k + 2]
    cut = eng.generate([GenRequest("a", MSGS, p.with_(stop=(stop,)))])[0].completions[0]
    assert cut.text == text[:k] and cut.finish_reason == "stop" and cut.stop_reason == stop


def test_transformers_missing_model_folder() -> None:
    with pytest.raises(ConfigError, match="teacher: model folder /nonexistent/model does not exist"):
        TransformersEngine("/nonexistent/model").generate([GenRequest("a", MSGS, SamplingConfig())])
