"""Evaluate a checkpoint on the paper's Table 1 benchmarks under a fixed protocol, resumably.

    python scripts/evaluate.py --model Qwen/Qwen3.5-4B --output_dir eval/qwen3.5-4b --backend vllm

Two protocols (`--protocol`):

- `"zwz"` (default): what the paper follows ("Following ZwZ"), ZwZ's `mm-eval`: a system prompt asking for the answer in
  `<answer>` tags, the image then the question, sampling with temperature 0.7, top-p 0.8, top-k 20, presence penalty 1.5,
  up to 8,192 new tokens, images resized within 65,536 to 16,777,216 pixels, one sample per question, seed 42.
- `"greedy"`: the same prompt and pixel budget with greedy decoding, for comparisons without sampling noise.

Each answer is extracted and scored by `vzero_trl.eval.answers` (letters by rule; ZoomBench's open-ended rows by a
deterministic normaliser, or by an optional judge model); each benchmark is aggregated as it defines its score.
Predictions are appended to `predictions.jsonl` one batch at a time, one record per item, and every batch is sampled
from a seed derived from the run seed and the batch's position, so a rerun skips what is done and ends with the same
report as an uninterrupted run; an item recorded before a kill cut its batch keeps its one record. `run.json` records what the predictions come from (the model's weights or Hub commit, the protocol,
generation and pixel settings, each benchmark's data): a rerun with anything else in the same `output_dir` is refused,
naming the differences. A benchmark row that cannot be asked (a corrupt image, a missing field) is recorded as an error
with its benchmark and id, left out of the score and counted in the report. `summary.json` holds every score and
`report.md` the Table 1 layout beside the paper's rows. With `--push_to_hub --hub_model_id <repo>`, the scores are
published to that model repository as `.eval_results/` files and the card's `model-index`
([`~vzero_trl.eval.hub_results`]).
"""

import hashlib
import json
import math
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, TrainerCallback

from ..card import hub_id
from ..checks import check_range
from ..images import BadImage
from ..provenance import NOT_MODEL_FILES, fingerprint, hub_commit, setting_differences
from .answers import COLUMNS, HEADERS, PAPER_ROWS, ZWZ_SYSTEM_PROMPT, aggregate, score_item, table_row
from .hub_results import check_results_repo, push_eval_results
from .tasks import BENCHMARKS, DATASETS, EvalItem, is_local_source, load_benchmark, read_benchmark


@dataclass(frozen=True)
class Protocol:
    """Decoding settings of an evaluation protocol."""

    system_prompt: str | None
    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float
    max_new_tokens: int


PROTOCOLS = {
    "zwz": Protocol(ZWZ_SYSTEM_PROMPT, True, 0.7, 0.8, 20, 1.5, 8192),
    "greedy": Protocol(ZWZ_SYSTEM_PROMPT, False, 1.0, 1.0, 0, 0.0, 8192),
}

# The paper's judge for ZwZ's open-ended rows decides whether a response means the same as the reference.
JUDGE_PROMPT = (
    "Your task is to judge whether the response expresses the same meaning as the answer to the question.\n"
    "Question: {question}\nAnswer: {reference}\nResponse: {prediction}\n"
    "Reply with Yes or No only. Directly give me your output."
)


@dataclass
class EvaluateConfig:
    """
    Settings of an evaluation run (`scripts/evaluate.py`); every field is a command-line flag.

    Parameters:
        model (`str`):
            Checkpoint to evaluate: a local folder or a Hub id (a LoRA adapter folder must be merged first).
        revision (`str`, *optional*):
            Branch, tag or commit of a Hub `model` (default branch when unset). The commit it points to is recorded.
        output_dir (`str`):
            Where `predictions.jsonl`, `run.json`, `summary.json` and `report.md` go.
        overwrite (`bool`, *optional*, defaults to `False`):
            Delete the predictions already in `output_dir` and start over. Without it, a rerun resumes, and is refused
            if its model, data or generation settings differ from those the predictions were made with.
        benchmarks (`list[str]`, *optional*, defaults to all six):
            Any of `vstar`, `hrbench_4k`, `hrbench_8k`, `zoombench`, `mme_realworld`, `mmstar`.
        data_dir (`str`, *optional*):
            A folder of local copies named `<benchmark>.parquet` (in the public schema); benchmarks without one are
            read from their default Hub dataset.
        sources (`list[str]`, *optional*):
            Per-benchmark overrides `name=hub_id_or_path`.
        limit (`int`, *optional*):
            Evaluate only the first items of each benchmark (a smoke test; the report says so).
        protocol (`str`, *optional*, defaults to `"zwz"`):
            `"zwz"` or `"greedy"`, see the module docstring.
        backend (`str`, *optional*, defaults to `"transformers"`):
            `"transformers"` or `"vllm"` (much faster; needs a GPU and the `vllm` extra: `pip install -e
            ".[gpu,vllm]"` in the clone).
        batch_size (`int`, *optional*, defaults to `8`):
            Questions generated together; also the unit of resuming.
        min_pixels (`int`, *optional*, defaults to `65536`), max_pixels (`int`, *optional*, defaults to `16777216`):
            Pixel budget of every image (the paper's).
        max_new_tokens (`int`, *optional*):
            Overrides the protocol's 8,192.
        seed (`int`, *optional*, defaults to `42`):
            Run seed; each batch samples from a seed derived from it.
        enable_thinking (`bool`, *optional*, defaults to `False`):
            Chat-template switch of Qwen3.5 (the paper evaluates without thinking).
        dtype (`str`, *optional*, defaults to `"auto"`):
            Model dtype (`"bfloat16"` on GPUs).
        tensor_parallel_size (`int`, *optional*, defaults to `1`), gpu_memory_utilization (`float`, *optional*, defaults to `0.9`):
            vLLM settings.
        judge_model (`str`, *optional*):
            A text model that judges ZoomBench's open-ended answers the deterministic normaliser does not accept (the
            paper's ZwZ protocol uses Qwen3-30B-A3B-Instruct-2507). Without it those count as wrong.
        push_to_hub (`bool`, *optional*, defaults to `False`):
            Publish the scores to the model repository `hub_model_id`: one `.eval_results/<benchmark>_<protocol>.yaml`
            per benchmark and the card's `model-index` ([`~vzero_trl.eval.hub_results`]). Checked before evaluating:
            the repository must exist and hold the evaluated weights. Not with `limit` (a partial run's scores would be
            shown as the model's).
        hub_model_id (`str`, *optional*):
            The model repository (`owner/name`) the scores are published to: where the evaluated folder was pushed, or
            `model` itself for a Hub model.
    """

    model: str = field(metadata={"help": "Checkpoint: local folder or Hub id."})
    output_dir: str = field(metadata={"help": "Output folder."})
    revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of a Hub model."})
    overwrite: bool = field(default=False, metadata={"help": "Delete the predictions in output_dir and start over."})
    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS), metadata={"help": "Benchmarks to run."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of local <benchmark>.parquet copies."})
    sources: list[str] = field(default_factory=list, metadata={"help": "Overrides name=hub_id_or_path."})
    limit: int | None = field(default=None, metadata={"help": "First items of each benchmark only."})
    protocol: Literal["zwz", "greedy"] = field(default="zwz", metadata={"help": "Decoding protocol."})
    backend: Literal["transformers", "vllm"] = field(default="transformers", metadata={"help": "Generation backend."})
    batch_size: int = field(default=8, metadata={"help": "Questions per generation batch (unit of resuming)."})
    min_pixels: int = field(default=65536, metadata={"help": "Smallest image area after resizing."})
    max_pixels: int = field(default=16777216, metadata={"help": "Largest image area after resizing."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Overrides the protocol's 8192."})
    seed: int = field(default=42, metadata={"help": "Run seed."})
    enable_thinking: bool = field(default=False, metadata={"help": "Qwen3.5 thinking mode."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM tensor parallel size."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM GPU memory fraction."})
    judge_model: str | None = field(default=None, metadata={"help": "Judge for open-ended answers."})
    push_to_hub: bool = field(default=False, metadata={"help": "Publish the scores to the repo hub_model_id."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Model repo (owner/name) to publish to."})

    def __post_init__(self):
        unknown = [name for name in self.benchmarks if name not in BENCHMARKS]
        if unknown:
            raise ValueError(f"Unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}.")
        for pair in self.sources:
            if "=" not in pair or pair.split("=", 1)[0] not in BENCHMARKS:
                raise ValueError(f"`sources` entries look like `vstar=path_or_hub_id`, got {pair!r}.")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"`protocol` must be one of {list(PROTOCOLS)}, got {self.protocol!r}.")
        if self.backend not in ("transformers", "vllm"):
            raise ValueError(f"`backend` must be 'transformers' or 'vllm', got {self.backend!r}.")
        count = dict(integer=True)
        check_range("batch_size", self.batch_size, 1, **count)
        check_range("limit", self.limit, 1, **count, optional=True)
        check_range("seed", self.seed, 0, 2**32 - 1, **count, fix="Seeds are below 2**32.")
        check_range("max_pixels", self.max_pixels, 1, **count)
        check_range("min_pixels", self.min_pixels, 1, self.max_pixels, **count, fix="`max_pixels` bounds it.")
        check_range("max_new_tokens", self.max_new_tokens, 1, **count, optional=True)
        check_range("tensor_parallel_size", self.tensor_parallel_size, 1, **count)
        check_range("gpu_memory_utilization", self.gpu_memory_utilization, 0, 1, open_low=True)
        if self.revision is not None and Path(self.model).expanduser().exists():
            raise ValueError(f"`revision` ({self.revision!r}) is for Hub models; {self.model} is a local folder.")
        if self.push_to_hub:
            if not (self.hub_model_id and hub_id(self.hub_model_id)):
                raise ValueError(
                    f"`push_to_hub` needs `hub_model_id`, the model repository (owner/name) to publish the scores to; "
                    f"got {self.hub_model_id!r}."
                )
            if self.limit is not None:
                raise ValueError(
                    f"`push_to_hub` with `limit` ({self.limit}) would publish the score of the first {self.limit} "
                    "items as the model's: evaluate every item to publish, or drop `--push_to_hub`."
                )
            if not Path(self.model).expanduser().exists() and self.hub_model_id != self.model:
                raise ValueError(
                    f"The scores of the Hub model {self.model!r} belong to its own repository: `hub_model_id` must be "
                    f"{self.model!r}, got {self.hub_model_id!r}."
                )

    def source(self, benchmark: str) -> str | None:
        """Where a benchmark is read from: an explicit source, a local copy in `data_dir`, or its Hub default."""
        explicit = dict(pair.split("=", 1) for pair in self.sources)
        if benchmark in explicit:
            return explicit[benchmark]
        if self.data_dir and (Path(self.data_dir) / f"{benchmark}.parquet").is_file():
            return str(Path(self.data_dir) / f"{benchmark}.parquet")
        return None

    def decoding(self) -> Protocol:
        protocol = PROTOCOLS[self.protocol]
        if self.max_new_tokens is None:
            return protocol
        return Protocol(**{**asdict(protocol), "max_new_tokens": self.max_new_tokens})


def eval_messages(item: EvalItem, system_prompt: str | None) -> list[dict]:
    """The conversation shown to the model: the protocol's system prompt, then the image and the question (ZwZ)."""
    messages = [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}] if system_prompt else []
    content = [{"type": "image", "image": item.image}, {"type": "text", "text": item.question}]
    return [*messages, {"role": "user", "content": content}]


class PresencePenalty(LogitsProcessor):
    """
    vLLM's presence penalty for transformers generation: every token already generated (not in the prompt) has its
    logit lowered by `penalty`, once, however often it occurred.
    """

    def __init__(self, penalty: float, prompt_length: int):
        self.penalty, self.prompt_length = penalty, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :]
        present = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, generated, True)
        return scores - self.penalty * present


def batch_seed(seed: int, benchmark: str, batch_index: int) -> int:
    """The sampling seed of one batch: fixed by the run seed and the batch's position, whatever ran before."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{benchmark}/{batch_index}".encode()).digest()[:4], "big")


class TransformersGenerator:
    """Batched generation with transformers (left padding, the protocol's sampling, presence penalty)."""

    def __init__(self, model, processor, protocol: Protocol, enable_thinking: bool = False):
        self.model, self.processor, self.protocol = model, processor, protocol
        self.template_kwargs = {"enable_thinking": enable_thinking}

    @classmethod
    def from_config(cls, config: EvaluateConfig) -> "TransformersGenerator":
        """Load the checkpoint and its processor, with the run's pixel budget."""
        from transformers import AutoModelForImageTextToText

        from ..processing import load_processor

        processor = load_processor(config.model, revision=config.revision, padding_side="left")
        processor.image_processor.size = {"shortest_edge": config.min_pixels, "longest_edge": config.max_pixels}
        device_map = "auto" if torch.cuda.is_available() else None
        model = AutoModelForImageTextToText.from_pretrained(
            config.model, revision=config.revision, dtype=config.dtype, device_map=device_map
        )
        return cls(model.eval(), processor, config.decoding(), config.enable_thinking)

    @torch.no_grad()
    def __call__(self, items: Sequence[EvalItem], seed: int) -> list[str]:
        inputs = self.processor.apply_chat_template(
            [eval_messages(item, self.protocol.system_prompt) for item in items],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
            **self.template_kwargs,
        ).to(self.model.device)
        prompt_length = inputs["input_ids"].size(1)
        sampling = dict(temperature=self.protocol.temperature, top_p=self.protocol.top_p, top_k=self.protocol.top_k)
        penalty = self.protocol.presence_penalty
        torch.manual_seed(seed)
        output = self.model.generate(
            **inputs,
            do_sample=self.protocol.do_sample,
            max_new_tokens=self.protocol.max_new_tokens,
            logits_processor=[PresencePenalty(penalty, prompt_length)] if penalty else [],
            **(sampling if self.protocol.do_sample else {}),
        )
        return self.processor.batch_decode(output[:, prompt_length:], skip_special_tokens=True)


class VLLMGenerator:
    """Generation with vLLM: one engine, one image per prompt, per-question seeds derived from the batch seed."""

    def __init__(self, config: EvaluateConfig):
        from transformers import AutoProcessor
        from vllm import LLM

        self.processor = AutoProcessor.from_pretrained(config.model, revision=config.revision)
        self.llm = LLM(
            model=config.model,
            revision=config.revision,
            dtype=config.dtype,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            limit_mm_per_prompt={"image": 1},
            mm_processor_kwargs={"min_pixels": config.min_pixels, "max_pixels": config.max_pixels},
            seed=config.seed,
        )
        self.protocol = config.decoding()
        self.template_kwargs = {"enable_thinking": config.enable_thinking}

    def __call__(self, items: Sequence[EvalItem], seed: int) -> list[str]:
        from vllm import SamplingParams

        requests, params = [], []
        for offset, item in enumerate(items):
            text = self.processor.apply_chat_template(
                eval_messages(item, self.protocol.system_prompt),
                add_generation_prompt=True,
                tokenize=False,
                **self.template_kwargs,
            )
            requests.append({"prompt": text, "multi_modal_data": {"image": item.image}})
            params.append(
                SamplingParams(
                    temperature=self.protocol.temperature if self.protocol.do_sample else 0.0,
                    top_p=self.protocol.top_p,
                    top_k=self.protocol.top_k if self.protocol.top_k > 0 else -1,
                    presence_penalty=self.protocol.presence_penalty,
                    max_tokens=self.protocol.max_new_tokens,
                    seed=seed + offset,
                )
            )
        return [output.outputs[0].text for output in self.llm.generate(requests, params, use_tqdm=False)]


class TransformersJudge:
    """A text model asked whether a response means the same as the reference (greedy, Yes/No)."""

    def __init__(self, model: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        device_map = "auto" if torch.cuda.is_available() else None
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype="auto", device_map=device_map).eval()

    @torch.no_grad()
    def __call__(self, question: str, reference: str, prediction: str) -> bool:
        prompt = JUDGE_PROMPT.format(question=question, reference=reference, prediction=prediction)
        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.model.device)
        output = self.model.generate(**ids, do_sample=False, max_new_tokens=8)
        verdict = self.tokenizer.decode(output[0, ids["input_ids"].size(1) :], skip_special_tokens=True)
        return verdict.strip().lower().startswith("yes")


def read_predictions(path: Path) -> dict[tuple[str, str], dict]:
    """Records already written, by (benchmark, id). A line cut short by a crash is ignored (its batch is redone)."""
    records = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records.setdefault((record["benchmark"], record["id"]), record)
    return records


def _one_record_per_item(path: Path) -> dict[tuple[str, str], dict]:
    """
    [`read_predictions`], after rewriting the file (atomically) with one whole record per item if it holds more, or a
    line cut short by a kill: the first record of each item is the one the report uses, and the one kept.
    """
    records = read_predictions(path)
    text = "".join(json.dumps(record) + "\n" for record in records.values())
    if path.is_file() and path.read_text() != text:
        partial = path.with_name(f"{path.name}.partial")
        partial.write_text(text)
        partial.replace(path)
    return records


def run_record(config: EvaluateConfig) -> dict:
    """
    What the predictions of a run come from, as `run.json` records it: the model (a local folder's path and the
    fingerprint of its files, training state left out; or a Hub id and the commit of `revision`), every setting that
    changes a response or its verdict, and each benchmark's data (a local copy's path and fingerprint, or a Hub id and
    commit). Not recorded, because they do not change the predictions: `output_dir`, `limit` and `benchmarks` (a rerun
    may ask for more items or benchmarks), the vLLM resource settings.

    Raises:
        FileNotFoundError: For a `model` that is neither a local folder nor a Hub id.
        ValueError: For a Hub model or dataset that cannot be resolved to a commit.
    """
    path = Path(config.model).expanduser()
    if path.is_dir():
        weights = fingerprint(path, skip=NOT_MODEL_FILES, recursive=False)
        model = {"model": str(path.resolve()), "model_fingerprint": weights}
    elif hub_id(config.model) and not is_local_source(config.model):
        model = {"model": config.model, "model_fingerprint": hub_commit(config.model, config.revision)}
    else:
        raise FileNotFoundError(
            f"`model` {config.model!r} is neither a local folder nor a Hub id (owner/name). Pass a checkpoint folder "
            "(for example outputs/demo/vzero-mini) or a Hub id (for example Qwen/Qwen3.5-4B)."
        )
    settings = dict(
        protocol=config.protocol,
        backend=config.backend,
        dtype=config.dtype,
        batch_size=config.batch_size,  # fixes each batch's sampling seed
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
        seed=config.seed,
        enable_thinking=config.enable_thinking,
        judge_model=config.judge_model,
    )
    protocol = {f"protocol.{key}": value for key, value in asdict(config.decoding()).items()}
    data = {f"data.{name}": _data_record(name, config.source(name)) for name in config.benchmarks}
    return {**model, **settings, **protocol, **data}


def _data_record(name: str, source: str | None) -> str:
    if source and is_local_source(source):
        path = Path(source).expanduser().resolve()
        return f"{path} {fingerprint(path)}" if path.exists() else str(path)  # a missing path fails when loaded
    spec = DATASETS[name]
    revision = spec.revision if source in (None, spec.dataset) else None
    return f"{source or spec.dataset}@{hub_commit(source or spec.dataset, revision, repo_type='dataset')}"


def check_output_dir(config: EvaluateConfig, record: dict) -> None:
    """
    Refuse to add to predictions made by another run: `output_dir/run.json` must match `record` (the data of
    benchmarks only one of them has is not compared). With `config.overwrite`, the old outputs are deleted instead.
    """
    output_dir = Path(config.output_dir)
    files = [output_dir / name for name in ("predictions.jsonl", "run.json", "summary.json", "report.md")]
    if config.overwrite:
        for file in files:
            file.unlink(missing_ok=True)
        return
    fix = "Use a new `--output_dir`, or pass `--overwrite` to delete them and start over."
    if not files[1].is_file():
        if files[0].is_file():
            raise ValueError(
                f"{files[0]} has no record of the model and settings its predictions come from (no run.json), so "
                f"they cannot be reused safely. {fix}"
            )
        return
    recorded = json.loads(files[1].read_text())
    shared = {key for key in recorded.keys() & record.keys() if key.startswith("data.")}
    compared = {key for key in recorded.keys() | record.keys() if not key.startswith("data.")} | shared
    differences = setting_differences(
        {k: v for k, v in recorded.items() if k in compared}, {k: v for k, v in record.items() if k in compared}
    )
    if differences:
        raise ValueError(
            f"{output_dir} holds predictions made with other settings:\n  " + "\n  ".join(differences) + f"\n{fix}"
        )


def evaluate(
    config: EvaluateConfig,
    generator: Callable[[Sequence[EvalItem], int], list[str]] | None = None,
    judge: Callable[[str, str, str], bool] | None = None,
) -> dict:
    """
    Run (or resume) the evaluation and write `summary.json` and `report.md`; returns the summary.

    Args:
        config ([`EvaluateConfig`]):
            The run's settings; with `push_to_hub`, the scores are also published to `hub_model_id`.
        generator (`Callable`, *optional*):
            `(items, seed) -> responses`; built from `config.backend` when `None`.
        judge (`Callable`, *optional*):
            `(question, reference, prediction) -> bool` for open-ended answers; built from `config.judge_model`.
    """
    record = run_record(config)
    if config.push_to_hub:
        check_results_repo(config.hub_model_id, config.model)
    if not Path(config.model).expanduser().is_dir():  # load exactly the commit the predictions are recorded under
        config = replace(config, revision=record["model_fingerprint"])
    check_output_dir(config, record)
    output_dir = Path(config.output_dir)
    loaded = {name: read_benchmark(name, config.source(name), limit=config.limit) for name in config.benchmarks}
    output_dir.mkdir(parents=True, exist_ok=True)
    run_file = output_dir / "run.json"
    recorded = json.loads(run_file.read_text()) if run_file.is_file() else {}
    run_file.write_text(json.dumps({**recorded, **record}, indent=2) + "\n")

    predictions = output_dir / "predictions.jsonl"
    done = _one_record_per_item(predictions)
    items = {name: benchmark_items for name, (benchmark_items, _) in loaded.items()}
    broken = [row for _, rows in loaded.values() for row in rows if (row["benchmark"], row["id"]) not in done]
    _append(predictions, done, broken)
    pending = {
        name: [
            batch
            for batch in _batches(benchmark_items, config.batch_size)
            if any((name, i.id) not in done for _, i in batch)
        ]
        for name, benchmark_items in items.items()
    }
    if any(pending.values()):
        if generator is None:
            generator = (
                VLLMGenerator(config) if config.backend == "vllm" else TransformersGenerator.from_config(config)
            )
        judge = judge or (TransformersJudge(config.judge_model) if config.judge_model else None)
    with tqdm(
        total=sum(len(b) for batches in pending.values() for b in batches), desc="Evaluating", unit="question"
    ) as bar:
        for name, batches in pending.items():
            for batch in batches:
                shown, failed = _decoded(batch)
                seed = batch_seed(config.seed, name, batch[0][0] // config.batch_size)
                responses = generator(shown, seed) if shown else []
                records = [_record(item, response, judge) for item, response in zip(shown, responses, strict=True)]
                _append(predictions, done, failed + records)
                bar.update(len(batch))

    summary = {"model": config.model, "protocol": config.protocol, "limit": config.limit, "benchmarks": {}}
    summary["date"] = datetime.now(UTC).isoformat(timespec="seconds")  # when these scores were computed
    for name, (benchmark_items, rows) in loaded.items():
        ids = [item.id for item in benchmark_items] + [row["id"] for row in rows]
        records = [done[(name, item_id)] for item_id in ids]
        scored = [record for record in records if "error" not in record]
        errors = [record for record in records if "error" in record]
        summary["benchmarks"][name] = {"items": len(scored), "errors": len(errors), **aggregate(name, scored)}
    summary["table"] = table_row({name: scores["score"] for name, scores in summary["benchmarks"].items()})
    summary["settings"] = asdict(config)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (output_dir / "report.md").write_text(report(summary))
    if config.push_to_hub:  # after writing the scores: a failed push keeps them, and a rerun pushes again
        summary["hub_commit"] = push_eval_results(summary, {**recorded, **record}, config.hub_model_id).commit_url
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _decoded(batch: list[tuple[int, EvalItem]]) -> tuple[list[EvalItem], list[dict]]:
    """The batch's items with their images decoded once, and an error record for each image that does not decode."""
    shown, failed = [], []
    for _, item in batch:
        try:
            shown.append(replace(item))  # reads `item.image` once
        except BadImage as error:
            failed.append({"benchmark": item.benchmark, "id": item.id, "error": str(error)})
    return shown, failed


def _append(path: Path, done: dict, records: list[dict]) -> None:
    # Items of the batch already recorded (before a kill cut the batch, or by a run with a smaller `limit`) keep their
    # record: one record per item.
    with open(path, "a") as file:
        for record in records:
            key = (record["benchmark"], record["id"])
            if key not in done:
                done[key] = record
                file.write(json.dumps(record) + "\n")


def report(summary: dict) -> str:
    """The Table 1 layout (VStar, HR-4K, HR-8K, ZoomBench, MME-RW | MMStar | Perception avg, avg) with the paper's
    Qwen3.5-4B and V-Zero-4B rows for reference."""

    def cell(value: float | None) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"

    rows = [(f"**{Path(summary['model']).name or summary['model']}** (this run)", summary["table"])]
    rows += [(f"{name} (paper)", table_row(values)) for name, values in PAPER_ROWS.items()]
    lines = [
        f"# Evaluation of `{summary['model']}`",
        "",
        f"Protocol `{summary['protocol']}`"
        + (f", first {summary['limit']} items per benchmark only" if summary["limit"] else ""),
        "",
        "| Model | " + " | ".join(HEADERS) + " |",
        "| --- |" + " --- |" * len(HEADERS),
    ]
    lines += [f"| {label} | " + " | ".join(cell(values.get(c)) for c in COLUMNS) + " |" for label, values in rows]
    lines += ["", "Perc. Avg is the mean of the first four columns; Avg the mean of all six.", ""]
    for name, scores in summary["benchmarks"].items():
        details = ", ".join(
            f"{key} {value:.1f}" for key, value in scores.items() if key not in ("items", "errors", "score")
        )
        errors = scores["errors"]
        lines.append(
            f"- `{name}`: {scores['score']:.1f} over {scores['items']} items"
            + (f" ({details})" if details else "")
            + (
                f"; {errors} item(s) could not be asked and are left out (`error` in predictions.jsonl)"
                if errors
                else ""
            )
        )
    return "\n".join(lines) + "\n"


def _batches(items: list[EvalItem], size: int) -> list[list[tuple[int, EvalItem]]]:
    # Fixed boundaries by position, so a resumed run samples every batch exactly as an uninterrupted one would.
    indexed = list(enumerate(items))
    return [indexed[start : start + size] for start in range(0, len(indexed), size)]


def _record(item: EvalItem, response: str, judge) -> dict:
    return {
        "benchmark": item.benchmark,
        "id": item.id,
        "question": item.question,
        "answer": item.answer,
        "kind": item.kind,
        "category": item.category,
        "group": item.group,
        "response": response,
        **score_item(item, response, judge),
    }


# The authors validated on 450 items of V*, HR-Bench and MME-RealWorld during training.
VALIDATION_BENCHMARKS = ("vstar", "hrbench_4k", "mme_realworld")


def validation_mix(
    benchmarks: Sequence[str] = VALIDATION_BENCHMARKS,
    per_benchmark: int = 150,
    seed: int = 0,
    sources: dict[str, str] | None = None,
) -> list[EvalItem]:
    """
    A small fixed sample of benchmark items for evaluation during training (like the authors' 450-item set):
    `per_benchmark` items drawn without replacement from each benchmark with `seed`, in their benchmark order.

    Args:
        benchmarks (`Sequence[str]`, *optional*, defaults to V*, HR-Bench 4K and MME-RealWorld):
            Benchmarks to sample.
        per_benchmark (`int`, *optional*, defaults to `150`):
            Items per benchmark (all of them if the benchmark is smaller).
        seed (`int`, *optional*, defaults to `0`):
            Sampling seed.
        sources (`dict[str, str]`, *optional*):
            Per-benchmark Hub ids or local files, as for [`~vzero_trl.eval.tasks.load_benchmark`].
    """
    mix = []
    for name in benchmarks:
        items = load_benchmark(name, (sources or {}).get(name))
        chosen = sorted(random.Random(f"{seed}/{name}").sample(range(len(items)), min(per_benchmark, len(items))))
        mix += [items[i] for i in chosen]
    return mix


class BenchmarkEvalCallback(TrainerCallback):
    """
    Scores the model being trained on a fixed list of benchmark items every `eval_steps` optimizer steps (greedy,
    the ZwZ prompt) and logs `benchmark/<name>` (each benchmark's own score) and `benchmark/avg` with the training
    metrics. The items are split over the processes and the records gathered, so it works under DDP and ZeRO. An item
    whose image does not decode is skipped with a warning naming its benchmark and id.

    Example:

    ```python
    >>> trainer = VZeroTrainer(...)
    >>> trainer.add_callback(BenchmarkEvalCallback(trainer, validation_mix(), eval_steps=20))
    ```
    """

    def __init__(
        self, trainer, items: list[EvalItem], eval_steps: int, batch_size: int = 8, max_new_tokens: int = 1024
    ):
        if eval_steps < 1:
            raise ValueError(f"`eval_steps` must be >= 1, got {eval_steps}.")
        self.trainer, self.items, self.eval_steps, self.batch_size = trainer, items, eval_steps, batch_size
        self.protocol = Protocol(**{**asdict(PROTOCOLS["greedy"]), "max_new_tokens": max_new_tokens})

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.eval_steps != 0:
            return
        self.trainer.add_metrics({f"benchmark/{name}": value for name, value in self.scores().items()})
        control.should_log = True

    def scores(self) -> dict[str, float]:
        """Score the current model on the items: `{benchmark: score, ..., "avg": mean}`."""
        from accelerate.utils import gather_object
        from trl.models.utils import unwrap_model_for_generation

        trainer = self.trainer
        accelerator = trainer.accelerator
        local = self.items[accelerator.process_index :: accelerator.num_processes]
        was_training = trainer.model.training
        trainer.model.eval()
        records = []
        with unwrap_model_for_generation(trainer.model_wrapped, accelerator) as model:
            generate = TransformersGenerator(model, trainer.processing_class, self.protocol)
            for batch in _batches(local, self.batch_size):
                shown, failed = _decoded(batch)
                for record in failed:  # an image that does not decode must not stop training
                    warnings.warn(f"Benchmark evaluation skips {record['error']}", stacklevel=2)
                responses = generate(shown, seed=0) if shown else []
                records += [_record(item, response, None) for item, response in zip(shown, responses, strict=True)]
        trainer.model.train(was_training)
        records = gather_object(records)
        scores = {}
        for name in dict.fromkeys(item.benchmark for item in self.items):
            scores[name] = aggregate(name, [r for r in records if r["benchmark"] == name])["score"]
        scores["avg"] = sum(scores.values()) / len(scores)
        return scores
