"""A teacher served by vLLM: both evidence views scored over HTTP, so the teacher's weights never enter training memory.

V-Zero needs only the teacher's log-probability of each sampled token under each view, which a stock vLLM server
(>= 0.30, started with `--enable-scale-out --logprobs-mode raw_logprobs`) returns with images through two endpoints:

1. `POST /v1/chat/completions/render` with a view's user turn (text and images) returns the prompt's `token_ids` and
   its multimodal `features` (processed pixels, hashes and placeholder ranges). A view is rendered once per group and
   serves all `G` rollouts: the rendered ids are the prompt, so the placeholder offsets hold for `prompt + completion`
   unchanged ([`check_placeholders`] checks that they lie inside it);
2. `POST /inference/v1/generate` with `token_ids = prompt + completion`, those `features` and `prompt_logprobs: 1`
   returns `prompt_logprobs[i]`, the log-probability of token `i` given tokens `< i` (`None` at `i = 0`).

[`ServedTeacher`] renders each (group, view) while the student generates, sends one scoring request per (rollout,
view), spreads them over `teacher_server_urls` and runs `teacher_server_concurrency` at a time. A failed request is
retried `teacher_server_retries` times with exponential backoff, then the step stops naming the URL and the error:
training never sees a missing or partial score. [`ServedTeacher.check`] refuses a server at start that is down, serves
another tokenizer, chat template or vocabulary, or does not see the images.
"""

import base64
import io
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx2
import torch
from PIL import Image, ImageDraw
from transformers import PretrainedConfig, ProcessorMixin


if TYPE_CHECKING:
    from .config import VZeroConfig


RENDER = "/v1/chat/completions/render"
GENERATE = "/inference/v1/generate"
# Single-token requests that return the prompt's log-probabilities: the sampled continuation is thrown away.
SCORING_PARAMS = {"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 1, "skip_special_tokens": False}
# vLLM writes a log-probability of -inf as -9999.0; raw log-probabilities (a full softmax) are never -inf.
MASKED_LOGPROB = -9999.0
SERVE_HINT = "vllm serve <teacher> --enable-scale-out --logprobs-mode raw_logprobs"


class TeacherServerError(RuntimeError):
    """A teacher server that cannot be used: refused at start, or out of retries during training. `status` is the HTTP
    status of a refused request (`None` otherwise)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def image_url(image: Image.Image) -> str:
    """A PIL image as a PNG data URL (lossless: the server sees the pixels the in-process teacher would)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages with `{"type": "image", "image": <PIL>}` parts as OpenAI `image_url` parts (data URLs)."""
    converted = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": image_url(part["image"])}}
                if part["type"] == "image"
                else part
                for part in content
            ]
        converted.append({**message, "content": content})
    return converted


def check_placeholders(features: dict | None, prompt_length: int, url: str) -> None:
    """Raise unless every multimodal placeholder range of a render lies inside its prompt of `prompt_length` ids."""
    for modality, ranges in ((features or {}).get("mm_placeholders") or {}).items():
        for item in ranges:
            if item["offset"] < 0 or item["offset"] + item["length"] > prompt_length:
                raise TeacherServerError(
                    f"The teacher server at {url} rendered a {modality} placeholder at offset {item['offset']} "
                    f"(length {item['length']}) outside its {prompt_length}-token prompt."
                )


def token_logps(response: dict, token_ids: list[int], start: int, url: str) -> list[float]:
    """
    The log-probabilities of `token_ids[start:]` in a `/inference/v1/generate` response with `prompt_logprobs`.

    `prompt_logprobs[i]` maps token ids (JSON keys: strings) to `{"logprob": ...}` and always holds the token actually
    at position `i`; entry 0 is `None` (no context). Raises [`TeacherServerError`] on anything else: a short list, a
    missing token, a non-finite or masked value (the server is not returning raw log-probabilities).
    """
    entries = response.get("prompt_logprobs")
    if not isinstance(entries, list) or len(entries) != len(token_ids):
        length = len(entries) if isinstance(entries, list) else None
        raise TeacherServerError(
            f"The teacher server at {url} returned prompt_logprobs of length {length} for {len(token_ids)} tokens; "
            "it must score every prompt token (`prompt_logprobs` in the sampling parameters)."
        )
    logps = []
    for position in range(start, len(token_ids)):
        entry = entries[position] or {}
        value = entry.get(str(token_ids[position]), entry.get(token_ids[position]))
        logp = value["logprob"] if isinstance(value, dict) else value
        if not isinstance(logp, (int, float)) or not math.isfinite(logp) or logp > 1e-4:
            raise TeacherServerError(
                f"The teacher server at {url} sent no valid log-probability for token {token_ids[position]} at "
                f"position {position} (got {value!r})."
            )
        if logp <= MASKED_LOGPROB:
            raise TeacherServerError(
                f"The teacher server at {url} gave token {token_ids[position]} at position {position} probability 0 "
                f"(log-probability {logp}): it is returning processed log-probabilities (after top-k/top-p), not the "
                f"model's. Restart it with `--logprobs-mode raw_logprobs`: {SERVE_HINT}."
            )
        logps.append(float(logp))
    return logps


class ServedTeacher:
    """
    Client of one or more vLLM servers of the same teacher, scoring rollouts under the evidence views.

    Args:
        urls (`list[str]`):
            Base URLs of the servers (`http://host:port`); requests are spread over them in turn.
        model (`str`, *optional*):
            The served model name sent with each request; must be among the server's `/v1/models`. Defaults to the
            first model the first server lists.
        timeout (`float`, *optional*, defaults to `120.0`):
            Seconds each HTTP request may take.
        retries (`int`, *optional*, defaults to `3`):
            Retries of a request that fails to connect, times out or gets a 5xx answer.
        backoff (`float`, *optional*, defaults to `1.0`):
            Seconds before the first retry; each further retry waits twice as long.
        concurrency (`int`, *optional*, defaults to `32`):
            Requests in flight at once, over all servers.
    """

    def __init__(
        self,
        urls: list[str],
        model: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
        concurrency: int = 32,
    ):
        self.urls = [url.rstrip("/") for url in urls]
        self.model, self.retries, self.backoff = model, retries, backoff
        self._http = httpx2.Client(timeout=timeout, limits=httpx2.Limits(max_connections=concurrency))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="vzero-teacher")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def request(self, url: str, path: str, body: dict | None = None, retries: int | None = None) -> dict:
        """
        One JSON request (`GET` without `body`, else `POST`), retried with exponential backoff on connection errors,
        timeouts and 5xx answers. A 4xx answer, or running out of retries, raises [`TeacherServerError`] naming the
        URL and the server's error.
        """
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                if body is None:
                    response = self._http.get(url + path)
                else:
                    response = self._http.post(url + path, json=body)
            except httpx2.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return response.json() if response.content else {}
                error = f"HTTP {response.status_code}: {response.text[:500]}"
                if response.status_code < 500:
                    raise TeacherServerError(
                        f"The teacher server at {url} refused {path} ({error}).", response.status_code
                    )
            if attempt < retries:
                time.sleep(self.backoff * 2**attempt)
        raise TeacherServerError(
            f"The teacher server at {url} failed {path} {retries + 1} times; last error: {error}. Training stops "
            "rather than go on without the teacher's scores; restart the server and resume from the last checkpoint."
        )

    def render(self, url: str, messages: list[dict], chat_template_kwargs: dict) -> tuple[list[int], dict | None]:
        """A conversation (OpenAI format) rendered by the server: its prompt `token_ids` and multimodal `features`."""
        body = {"model": self.model, "messages": messages, "chat_template_kwargs": chat_template_kwargs}
        try:
            rendered = self.request(url, RENDER, body)
        except TeacherServerError as exc:
            if exc.status == 404 and "does not exist" not in str(exc):  # vLLM's 404 for an unknown model says so
                raise TeacherServerError(
                    f"The teacher server at {url} does not serve {RENDER}. Start it with `{SERVE_HINT}` "
                    "(vLLM >= 0.30)."
                ) from exc
            raise
        check_placeholders(rendered.get("features"), len(rendered["token_ids"]), url)
        return rendered["token_ids"], rendered.get("features")

    def prompt_logps(self, url: str, token_ids: list[int], features: dict | None, start: int) -> list[float]:
        """The server's log-probabilities of `token_ids[start:]`, each given the tokens before it (and `features`)."""
        body = {"model": self.model, "token_ids": token_ids, "features": features, "sampling_params": SCORING_PARAMS}
        return token_logps(self.request(url, GENERATE, body), token_ids, start, url)

    def render_views(
        self, views: list[list[list[dict[str, Any]]]], chat_template_kwargs: dict | None = None
    ) -> list[list[Future]]:
        """
        Start rendering every group's conversation under every view (`views[v][k]`, as
        [`~vzero_trl.replay.teacher_views`] builds them) and return at once: `futures[v][k]` resolves to the rendered
        `(token_ids, features)`. The images are encoded here, in the caller's thread; only the requests run behind.
        """
        kwargs, count = chat_template_kwargs or {}, len(views[0]) if views else 0
        return [
            [
                self._pool.submit(self.render, self.urls[(v * count + k) % len(self.urls)], messages, kwargs)
                for k, messages in enumerate(map(openai_messages, view))
            ]
            for v, view in enumerate(views)
        ]

    def score(
        self,
        rendered: list[list[Future]],
        groups: list[slice],
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
    ) -> list[tuple[torch.Tensor, None]]:
        """
        The teacher's log-probabilities of the rollouts under each rendered view.

        Args:
            rendered (`list[list[Future]]`):
                From [`render_views`]: one render per view and group.
            groups (`list[slice]`):
                Rows of each group, contiguous and in order (as for [`~vzero_trl.replay.replay_teacher`]).
            completion_ids (`torch.Tensor`):
                The rollouts, `(B, C)`, right-padded.
            completion_mask (`torch.Tensor`):
                `(B, C)`.

        Returns:
            `list[tuple[torch.Tensor, None]]`: per view, the log-probabilities `(B, C)` in float32 (0 where masked),
            and `None` (no hidden states: a server has none to give). Raises [`TeacherServerError`] if any request
            fails after its retries; no partial result is returned.
        """
        lengths = completion_mask.sum(dim=1).tolist()
        completions = [ids[: int(n)].tolist() for ids, n in zip(completion_ids, lengths, strict=True)]
        row_group = [k for k, group in enumerate(groups) for _ in range(group.start, group.stop)]
        prompts = [[future.result() for future in view] for view in rendered]
        futures = []
        for v, view in enumerate(prompts):
            for row, k in enumerate(row_group):
                if not completions[row]:
                    continue  # nothing to score
                (prompt_ids, features), url = view[k], self.urls[(v * len(row_group) + row) % len(self.urls)]
                token_ids = prompt_ids + completions[row]
                futures.append(
                    (v, row, self._pool.submit(self.prompt_logps, url, token_ids, features, len(prompt_ids)))
                )
        results = [
            torch.zeros(completion_ids.shape, dtype=torch.float32, device=completion_ids.device) for _ in prompts
        ]
        for v, row, future in futures:
            logps = future.result()
            results[v][row, : len(logps)] = torch.tensor(logps, dtype=torch.float32)
        return [(logps, None) for logps in results]

    def check(self, processor: ProcessorMixin, vocab_size: int, chat_template_kwargs: dict | None = None) -> None:
        """
        Refuse, with the reason, a server that cannot stand in for the in-process teacher. For every URL:

        - it is up (`/health`, within the retry budget) and serves `model` (`/v1/models`);
        - it renders a probe conversation (an image and a question) to exactly the ids the student's processor gives
          (same tokenizer and chat template);
        - its vocabulary has `vocab_size` ids: the last one is accepted, the next refused;
        - log-probabilities of a fixed continuation change when the probe's image changes (not a blind teacher).

        Args:
            processor ([`~transformers.ProcessorMixin`]):
                The student's processor.
            vocab_size (`int`):
                The student's vocabulary size: the larger of its tokenizer's and its embedding's.
            chat_template_kwargs (`dict`, *optional*):
                As for the student's prompts.
        """
        kwargs = chat_template_kwargs or {}
        for url in self.urls:
            self.request(url, "/health")
            served = [card["id"] for card in self.request(url, "/v1/models")["data"]]
            self.model = self.model or served[0]
            if self.model not in served:
                raise TeacherServerError(
                    f"The teacher server at {url} serves {served}, not {self.model!r} (`teacher_model_name_or_path`)."
                )
            self._check_template(url, processor, kwargs)
            self._check_vocabulary(url, vocab_size)
            self._check_sight(url, processor, kwargs)

    def _check_template(self, url: str, processor: ProcessorMixin, kwargs: dict) -> None:
        messages = probe_messages(probe_image("red"))
        expected = processor.apply_chat_template(
            [messages], add_generation_prompt=True, tokenize=True, return_dict=True, **kwargs
        )["input_ids"][0]
        expected = expected.tolist() if isinstance(expected, torch.Tensor) else list(expected)
        rendered, _ = self.render(url, openai_messages(messages), kwargs)
        if rendered != expected:
            at = next(
                (i for i, (a, b) in enumerate(zip(rendered, expected, strict=False)) if a != b),
                min(len(rendered), len(expected)),
            )
            decode = processor.tokenizer.decode
            raise TeacherServerError(
                f"The teacher server at {url} renders a probe conversation to {len(rendered)} tokens where the "
                f"student's processor gives {len(expected)}; they first differ at position {at}: server "
                f"{rendered[at : at + 8]} ({decode(rendered[at : at + 8])!r}), student {expected[at : at + 8]} "
                f"({decode(expected[at : at + 8])!r}). The served model's tokenizer or chat template is not the "
                "student's, so its scores would be of other tokens. Serve a teacher of the student's family."
            )

    def _check_vocabulary(self, url: str, vocab_size: int) -> None:
        last = {"model": self.model, "token_ids": [vocab_size - 1], "sampling_params": SCORING_PARAMS}
        self.request(url, GENERATE, last, retries=0)  # a 4xx answer (out of vocabulary) raises
        try:
            self.request(url, GENERATE, {**last, "token_ids": [vocab_size]}, retries=0)
        except TeacherServerError:
            return  # refused: the server's vocabulary ends where the student's does
        raise TeacherServerError(
            f"The teacher server at {url} accepts token id {vocab_size}, past the student's vocabulary of "
            f"{vocab_size}: it serves a model with another vocabulary. Serve a teacher of the student's family."
        )

    def _check_sight(self, url: str, processor: ProcessorMixin, kwargs: dict) -> None:
        continuation = processor.tokenizer.encode("The shape in the image is red.", add_special_tokens=False)
        scores = []
        for color in ("red", "blue"):  # same size, so the same prompt ids: only the pixels differ
            token_ids, features = self.render(url, openai_messages(probe_messages(probe_image(color))), kwargs)
            scores.append(torch.tensor(self.prompt_logps(url, token_ids + continuation, features, len(token_ids))))
        if (scores[0] - scores[1]).abs().max() < 1e-6:
            raise TeacherServerError(
                f"The teacher server at {url} gives the same log-probabilities whatever the image: it does not see "
                "the images (a text-only model, or the multimodal features are dropped), so both evidence views "
                "would score alike and every gate would be 1. Serve a vision-language teacher with vLLM >= 0.30."
            )


def probe_image(color: str) -> Image.Image:
    """A 64x64 probe picture: a colored square on white."""
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle((16, 16, 48, 48), fill=color)
    return image


def probe_messages(image: Image.Image) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": "What color is the shape?"}],
        }
    ]


def vocabulary_size(processor: ProcessorMixin, config) -> int:
    """The student's vocabulary as vLLM bounds token ids: the larger of the tokenizer's and the text model's."""
    return max(len(processor.tokenizer), config.get_text_config().vocab_size)


def connect_served_teacher(
    args: "VZeroConfig", processor: ProcessorMixin, student_config: PretrainedConfig, chat_template_kwargs: dict
) -> ServedTeacher:
    """
    The client of the teacher's servers `args.teacher_server_urls`, with the `teacher_server_*` settings, refused
    before any step unless they can stand in for an in-process teacher of this student ([`ServedTeacher.check`]).
    """
    teacher = ServedTeacher(
        args.teacher_server_urls,
        args.teacher_model_name_or_path,
        timeout=args.teacher_server_timeout,
        retries=args.teacher_server_retries,
        backoff=args.teacher_server_backoff,
        concurrency=args.teacher_server_concurrency,
    )
    teacher.check(processor, vocabulary_size(processor, student_config), chat_template_kwargs)
    return teacher
