"""An async streaming client for OpenAI-compatible completion servers, measuring every request.

>>> async with server.client() as c:
...     rec = await c.complete(prompt_len=32, max_tokens=16)
>>> rec.ttft, rec.tokens_out

Requests are sent with ``stream=True``, ``ignore_eos=True``, ``temperature=0`` and a fixed
``max_tokens``, so the load is the same on every run. A request never raises: whatever happens,
it returns a RequestRecord with what was measured and ``status`` "ok" or "error".
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field

import httpx

# Words whose tokens make the vocabulary that exact-length prompts are drawn from (any tokenizer has them).
_VOCABULARY_TEXT = ("the of and to in is was for on that with as by at from his her an which or were are be this "
              "had not but have one they their all there been has when who more would will into other time "
              "some than only its new about after first two may also over most these many such years where "
              "then could made them through state city world house water light music river north garden")


@dataclass
class RequestRecord:
    """One request as measured by the client. Times in seconds; offsets from the workload's start."""

    model: str
    url: str
    index: int = 0
    scheduled: float = 0.0          # when the schedule wanted it sent
    start: float | None = None      # when it was sent
    start_time: float | None = None  # the same, as a Unix time (to line up with telemetry)
    ttft: float | None = None       # time to first token, from start
    itl: list[float] = field(default_factory=list)  # gaps between streamed chunks after the first
    e2e: float | None = None        # start to last byte
    tokens_in: int | None = None
    tokens_out: int | None = None
    max_tokens: int | None = None
    status: str = "pending"         # "ok" or "error" once done
    error: str | None = None
    phase: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict:
        return asdict(self)

    def fail(self, message: str) -> "RequestRecord":
        self.status, self.error = "error", message
        return self


class Client:
    """Streams completions from one server. Use as ``async with`` (one connection pool per use) or
    call ``complete`` directly (a pool is opened for that one request)."""

    def __init__(self, url: str, model: str, *, server=None, concurrency: int = 64,
                 timeout: float = 600.0, connect_timeout: float = 10.0):
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        self.url = url.rstrip("/")
        self.model = model
        self.server = server
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self._http: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._vocabulary: list[int] | None = None

    def __repr__(self) -> str:
        return f"Client({self.url!r}, model={self.model!r}, concurrency={self.concurrency})"

    @property
    def alive(self) -> bool | None:
        """Whether the server's engine runs (None when this client knows no Server object)."""
        return None if self.server is None else self.server.alive

    async def __aenter__(self) -> "Client":
        limits = httpx.Limits(max_connections=self.concurrency + 4, max_keepalive_connections=self.concurrency)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                                       limits=limits, trust_env=False)
        self._sem = asyncio.Semaphore(self.concurrency)
        return self

    async def __aexit__(self, *exc) -> None:
        http, self._http, self._sem = self._http, None, None
        if http is not None:
            await http.aclose()

    async def vocabulary(self) -> list[int]:
        """Ordinary token ids of the served tokenizer (via the server's /tokenize), to build prompts of
        an exact length: a list of token ids is sent as is, so its length is the prompt's length."""
        if self._vocabulary is None:
            r = await self._request("POST", "/tokenize", json={"model": self.model, "prompt": _VOCABULARY_TEXT,
                                                              "add_special_tokens": False})
            r.raise_for_status()
            ids = sorted(set(r.json()["tokens"]))
            if len(ids) < 2:
                raise RuntimeError(f"{self.url}/tokenize gave {len(ids)} distinct tokens; cannot build prompts")
            self._vocabulary = ids
        return self._vocabulary

    async def prompt_ids(self, n: int, seed: int = 0) -> list[int]:
        """``n`` token ids drawn from ``vocabulary()``; different seeds give different prompts (so the prefix
        cache does not share them), the same seed the same prompt."""
        ids = await self.vocabulary()
        rng = random.Random(seed)
        return [rng.choice(ids) for _ in range(n)]

    async def _request(self, method: str, path: str, **kw) -> httpx.Response:
        if self._http is not None:
            return await self._http.request(method, self.url + path, **kw)
        async with httpx.AsyncClient(timeout=self.connect_timeout + 20, trust_env=False) as http:
            return await http.request(method, self.url + path, **kw)

    async def complete(self, prompt: str | list[int] | None = None, *, max_tokens: int, prompt_len: int | None = None,
                       seed: int = 0, record: RequestRecord | None = None, t0: float | None = None,
                       extra: dict | None = None) -> RequestRecord:
        """Send one streamed completion and measure it. Give ``prompt`` (text or token ids) or
        ``prompt_len`` (exact-length prompt built from the tokenizer, varied by ``seed``)."""
        if self._http is None:
            async with self:
                return await self.complete(prompt, max_tokens=max_tokens, prompt_len=prompt_len, seed=seed,
                                           record=record, t0=t0, extra=extra)
        rec = record or RequestRecord(self.model, self.url)
        rec.max_tokens = max_tokens
        t0 = time.perf_counter() if t0 is None else t0
        try:
            if prompt is None:
                if prompt_len is None:
                    raise ValueError("give a prompt or a prompt_len")
                prompt = await self.prompt_ids(prompt_len, seed)
        except Exception as e:
            return rec.fail(f"could not build a prompt: {type(e).__name__}: {e}")
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
                "ignore_eos": True, "temperature": 0.0, "stream_options": {"include_usage": True},
                **(extra or {})}
        async with self._sem:
            await self._stream(body, rec, t0)
        if rec.tokens_in is None and isinstance(prompt, list):
            rec.tokens_in = len(prompt)
        return rec

    async def _stream(self, body: dict, rec: RequestRecord, t0: float) -> None:
        start = time.perf_counter()
        rec.start, rec.start_time = start - t0, time.time()
        last = None
        chunks = 0
        finish, done = None, False
        try:
            async with self._http.stream("POST", self.url + "/v1/completions", json=body) as r:
                if r.status_code != 200:
                    text = (await r.aread()).decode(errors="replace")
                    rec.fail(f"HTTP {r.status_code}: {_error_text(text)}")
                    return
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    now = time.perf_counter()
                    chunk = json.loads(data)
                    if "error" in chunk:
                        rec.fail(f"server error: {_error_text(json.dumps(chunk))}")
                        return
                    if chunk.get("choices"):
                        chunks += 1
                        finish = chunk["choices"][0].get("finish_reason") or finish
                        if last is None:
                            rec.ttft = now - start
                        else:
                            rec.itl.append(now - last)
                        last = now
                    usage = chunk.get("usage")
                    if usage:
                        rec.tokens_in = usage.get("prompt_tokens")
                        rec.tokens_out = usage.get("completion_tokens")
            rec.e2e = time.perf_counter() - start
            if rec.tokens_out is None:
                rec.tokens_out = chunks  # a server without usage reporting: one chunk per token
            if not done:
                rec.fail(f"the stream ended early (no [DONE]) after {chunks} chunks")
            elif finish not in ("length", "stop"):
                # vLLM ends streams of requests it aborts (e.g. while shutting down) with reason "abort".
                rec.fail(f"the server ended the request early: finish_reason={finish!r} "
                         f"after {rec.tokens_out} of {body.get('max_tokens')} tokens")
            else:
                rec.status = "ok"
        except asyncio.CancelledError:
            rec.e2e = time.perf_counter() - start
            rec.fail(rec.error or "cancelled while streaming")
            raise
        except Exception as e:
            rec.e2e = time.perf_counter() - start
            rec.fail(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        finally:
            if rec.status != "ok" and rec.tokens_out is None and chunks:
                rec.tokens_out = chunks  # what arrived before it failed


def _error_text(text: str) -> str:
    try:
        obj = json.loads(text)
        err = obj.get("error", obj)
        return err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        return text.strip()[:500]
