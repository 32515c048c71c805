"""The labelled gate probe: does the evidence gate rank a prompt's correct rollouts above its wrong ones, on your data?

`evidence/*` looks the same whether the gate works or is noise (a weak teacher, crops that miss the target, a task
where the crop does not matter). With a few hundred labelled rows in the training schema (`gate_probe_dataset`, with
`answer`), every `gate_probe_steps` steps the probe lets the current student sample `num_generations` rollouts per row,
has the teacher score both views and computes the gates exactly as a training step does (the trainer's own
`_generate_and_score_completions`), grades each rollout with [`vzero_trl.eval.answers`], and logs:

- `probe/gate_auc`: within-group AUC of gate vs correctness over the groups that hold both outcomes (0.5: the gate is
  noise; the letter-world miniature measures about 0.9, [`vzero_trl.gate_stats`]);
- `probe/gate_correct`, `probe/gate_wrong`: the mean gate of correct and of wrong rollouts;
- `probe/rollout_accuracy` and `probe/mixed_groups` (the number of groups that hold both outcomes; the AUC rests on
  them).

The probe never trains: it runs without gradients, puts back the trainer's metrics, token count and random state, and
keeps its batches out of the completions table and the blind-teacher alarm. Rows that are training rows (same `id`, or
without ids the same prompt and image) are refused.
"""

import copy
import hashlib
import json
import re
from contextlib import contextmanager

import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback

from .eval.answers import extract_answer, extract_choice, match_open
from .gate_stats import gate_diagnostics
from .prepare.pipeline import open_dataset
from .views import check_dataset_columns


def grade(completion: str, answer: str) -> bool:
    """
    Whether a rollout answers `answer`: a one-letter answer is an option letter, read with
    [`~vzero_trl.eval.answers.extract_choice`] from the extracted answer; any other is compared as a short open answer
    ([`~vzero_trl.eval.answers.match_open`]).
    """
    extracted, answer = extract_answer(completion), answer.strip()
    if re.fullmatch(r"[A-Za-z]", answer):
        return bool(extracted) and extract_choice(extracted, {}) == answer.upper()
    return match_open(extracted, answer)


def row_key(row: dict) -> str:
    """A row's identity for the overlap check: its `id`, or a hash of its prompt and full image's pixels."""
    if row.get("id") is not None:
        return f"id:{row['id']}"
    images = row["images"] if "images" in row else [row["image"]]
    digest = hashlib.sha256(json.dumps(row["prompt"], sort_keys=True).encode())
    for image in images:
        digest.update(repr(image.size).encode() + image.convert("RGB").tobytes())
    return f"sha256:{digest.hexdigest()}"


def load_probe_rows(path: str, train_dataset, crop_columns: list[str]) -> list[dict]:
    """
    The probe's rows from `gate_probe_dataset`, checked: the training schema with `answer`, and no training row among
    them. A streamed training set cannot be compared row by row and is refused.
    """
    probe = open_dataset(path)
    check_dataset_columns(probe, crop_columns, "gate_probe_dataset")
    if "answer" not in probe.column_names:
        raise ValueError(
            f"gate_probe_dataset {path!r} has no `answer` column (it has {sorted(probe.column_names)}): the probe grades "
            "each rollout against its row's answer. Point it at labelled rows in the training schema."
        )
    if train_dataset is None or not hasattr(train_dataset, "__len__"):
        raise ValueError(
            "The gate probe checks that its rows are not training rows, which needs a map-style `train_dataset`; a "
            "stream cannot be compared. Train from a `datasets.Dataset`, or unset `gate_probe_dataset`."
        )
    rows = list(probe)
    with_ids = "id" in probe.column_names and "id" in train_dataset.column_names
    train_keys = (
        {f"id:{i}" for i in train_dataset["id"]} if with_ids else {row_key(dict(r, id=None)) for r in train_dataset}
    )
    overlap = [row_key(row if with_ids else dict(row, id=None)) for row in rows]
    overlap = [key for key in overlap if key in train_keys]
    if overlap:
        raise ValueError(
            f"gate_probe_dataset {path!r} holds {len(overlap)} training row(s) (e.g. {overlap[0]}): a probe on rows the "
            "student is trained on measures memory, not the gate. Hold the probe rows out of the training data."
        )
    return rows


@contextmanager
def probing(trainer):
    """Run the trainer's generation and scoring for the probe, then put back what they touch."""
    metrics = {key: list(values) for key, values in trainer._metrics["train"].items()}
    tokens_seen = trainer.state.num_input_tokens_seen
    cpu_rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    log_completions, trainer.log_completions = trainer.log_completions, False
    trainer._evidence_alarm.paused = True
    try:
        with torch.no_grad():
            yield
    finally:
        trainer._metrics["train"].clear()
        trainer._metrics["train"].update(metrics)
        trainer.state.num_input_tokens_seen = tokens_seen
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        trainer.log_completions = log_completions
        trainer._evidence_alarm.paused = False


def run_probe(trainer, rows: list[dict]) -> dict[str, float]:
    """
    Sample, score, gate and grade `num_generations` rollouts of every probe row with the trainer's current student and
    teacher, in batches laid out as training lays out a generation batch; returns the `probe/*` metrics.
    """
    args, accelerator = trainer.args, trainer.accelerator
    size = args.num_generations
    local = args.per_device_train_batch_size * args.gradient_accumulation_steps  # rows per process per batch
    total = local * accelerator.num_processes  # a multiple of `size`, checked by the config
    expanded = [row for row in rows for _ in range(size)]
    pad = -len(expanded) % total  # a whole last batch, filled with repeated groups that are dropped below
    expanded += (expanded * (pad // len(expanded) + 1))[:pad]
    records = []
    with probing(trainer):
        for start in range(0, len(expanded), total):
            mine = slice(start + accelerator.process_index * local, start + (accelerator.process_index + 1) * local)
            batch = copy.deepcopy(expanded[mine])  # generation rewrites the prompts it is given
            output = trainer._generate_and_score_completions(batch)
            texts = trainer.processing_class.batch_decode(output["completion_ids"], skip_special_tokens=True)
            groups = (output["group_index"] + start // size).tolist()
            gates = output["evidence_weights"].tolist()
            correct = [grade(text, row["answer"]) for text, row in zip(texts, batch, strict=True)]
            records += gather_object(list(zip(gates, correct, groups, strict=True)))
    records = [record for record in records if record[2] < len(rows)]
    gates, correct, groups = zip(*records, strict=True)
    diagnostics = gate_diagnostics(gates, correct, groups)
    return {
        "probe/gate_auc": diagnostics["gate_auc"],
        "probe/gate_correct": diagnostics["gate_correct"],
        "probe/gate_wrong": diagnostics["gate_wrong"],
        "probe/rollout_accuracy": diagnostics["rollout_accuracy"],
        "probe/mixed_groups": round(diagnostics["mixed_group_frac"] * len(rows)),
    }


class GateProbeCallback(TrainerCallback):
    """Runs [`run_probe`] every `gate_probe_steps` optimizer steps and hands its metrics to the next log."""

    def __init__(self, trainer, rows: list[dict]):
        self.trainer, self.rows = trainer, rows

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.gate_probe_steps == 0:
            self.trainer.add_metrics(run_probe(self.trainer, self.rows))
