"""The trained tiny pair of the miniature reproduction: a teacher that reads the crop, a student that half-sees.

- The **teacher** (text width 96, a Gated-DeltaNet and a full-attention layer) is trained supervised on the teacher
  view, the very messages `VZeroTrainer` builds: full image, question, the paper's Fig. 4 sentence around the positive
  crop. It learns to read the answer off the crop, so it is near perfect with the positive crop and near chance with
  the negative one: the contrast V-Zero's gate measures.
- The **student** (text width 64, two full-attention layers) is trained briefly on the student view, full image and
  question: it answers in the expected format, but well below the teacher.

What the teacher is taught differs by world ([`WORLD_PAIRS`]): gold answers in the `letter` world; in the `drift`
world also rows that state a random wrong colour and give that colour's letter, with the loss on the letter and what
follows only (so it continues a drifted prefix consistently without learning to state wrong colours); in the `prior`
world a share of rows whose answer is `PRIOR_LETTER` whatever the image shows.

The pair is a random draw: the seed of a [`PairSpec`] sets the models' initial weights, the training rows and the
held-out rows, and on another CPU the same seed gives another pair (floating point differs), so results are reported
over pairs as well as runs.

Both use `transformers.Trainer` with the model's own next-token loss, on the answer tokens only (AdamW, betas 0.9 and
0.98, cosine schedule with warm-up, gradient norm clipped at 1). A build is deterministic for its settings and seed.

The letter world's pair seed 0 (the demo's and the learning check's) ships with the package (`pairs/`, with its hash
and the machine that built it), so every machine starts the demo from the same weights; [`ensure_pair`] copies it
instead of training it. [`ensure_pair`] builds any other pair once and reuses it: each model is written to a temporary folder and renamed into place,
so a killed build leaves nothing that looks finished, and a folder built with other settings is refused. In a cache of
pairs ([`pair_dir`]) the folder name carries a fingerprint of every setting, so a change of settings builds a new pair
instead of reusing a stale one; `build.json` records the settings and each phase's measured accuracies.
"""

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, PrinterCallback, Trainer, TrainingArguments

from ..processing import load_processor
from ..provenance import fingerprint, machine
from ..quiet import silence_unactionable_warnings
from ..toy.tiny import build_tiny_vlm
from .measure import View, answer_ids, drift_condition, encode, evaluate_view, prior_condition, view_messages
from .world import LETTERS, PRIOR_LETTER, World, make_rows


# Answer tokens that a drifted teaching row keeps in the loss: the letter, the full stop and the end of turn.
DRIFT_LOSS_TOKENS = 3


@dataclass(frozen=True)
class ModelSpec:
    """
    How one model of the pair is built and trained. Every field enters the cache fingerprint.

    `drift_share` of the rows state a random wrong colour and give its letter, with the loss on the last
    `DRIFT_LOSS_TOKENS` answer tokens only (the `drift` world's teacher); `prior_share` of the rows answer
    `PRIOR_LETTER` whatever the image shows (the `prior` world's teacher). The initial weights are drawn with seed
    `init_seed + 1000 * pair seed`.
    """

    view: View
    hidden_size: int
    layer_types: tuple[str, ...]
    num_rows: int
    steps: int
    learning_rate: float
    batch_size: int = 32
    warmup_steps: int = 20
    init_seed: int = 0
    drift_share: float = 0.0
    prior_share: float = 0.0


@dataclass(frozen=True)
class PairSpec:
    """A teacher and a student for one world and seed."""

    world: World = "letter"
    seed: int = 0
    vision_hidden_size: int = 64
    teacher: ModelSpec = field(
        default_factory=lambda: ModelSpec(
            view="crop",
            hidden_size=96,
            layer_types=("linear_attention", "full_attention"),
            num_rows=2000,
            steps=150,
            learning_rate=2e-3,
            init_seed=1,
        )
    )
    student: ModelSpec = field(
        default_factory=lambda: ModelSpec(
            view="student",
            hidden_size=64,
            layer_types=("full_attention", "full_attention"),
            num_rows=3000,
            steps=100,
            learning_rate=3e-3,
        )
    )
    num_eval_rows: int = 1000

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


_LETTER = PairSpec(world="letter")
# Each world's pair at seed 0 (`dataclasses.replace(WORLD_PAIRS[world], seed=s)` for another draw). The drift world's
# teacher needs 600 steps to learn both the crop and the consistent continuation (30% drifted rows), and its student
# 180 steps to see the colour in part; the prior world's teacher 300 steps to read the crop through 30% prior answers.
WORLD_PAIRS: dict[World, PairSpec] = {
    "letter": _LETTER,
    "drift": replace(
        _LETTER,
        world="drift",
        teacher=replace(_LETTER.teacher, steps=600, drift_share=0.3),
        student=replace(_LETTER.student, steps=180),
    ),
    "prior": replace(_LETTER, world="prior", teacher=replace(_LETTER.teacher, steps=300, prior_share=0.3)),
}


def teaching_rows(rows: list[dict], spec: ModelSpec, seed: int) -> list[dict]:
    """
    `rows` with the answer each model is taught: `taught` (the letter whose reference answer is the target) and
    `loss_tokens` (how many final answer tokens carry the loss; `None` for all). Seeded, so a build is deterministic.
    """
    rng = random.Random(f"vzero-mini/teaching/{seed}/{spec.view}")
    taught = []
    for row in rows:
        draw = rng.random()
        if draw < spec.drift_share:
            wrong = rng.choice([letter for letter in LETTERS if letter != row["answer"]])
            taught.append({**row, "taught": wrong, "loss_tokens": DRIFT_LOSS_TOKENS})
        elif draw < spec.drift_share + spec.prior_share:
            taught.append({**row, "taught": PRIOR_LETTER, "loss_tokens": None})
        else:
            taught.append({**row, "taught": row["answer"], "loss_tokens": None})
    return taught


class AnswerCollator:
    """Batches rows of [`teaching_rows`] into the trainer's layout for one view, with labels on the taught answer."""

    def __init__(self, processor, view: View, world: World):
        self.processor, self.view, self.world = processor, view, world

    def __call__(self, rows: list[dict]) -> dict:
        ids = answer_ids(self.processor.tokenizer, [row["taught"] for row in rows], self.world)
        inputs = encode(self.processor, view_messages(rows, self.view), ids)
        labels = inputs["labels"]
        for i, row in enumerate(rows):
            if row["loss_tokens"] is not None:  # keep only the last answer tokens in the loss
                positions = (labels[i] != -100).nonzero().squeeze(-1)
                labels[i, positions[: -row["loss_tokens"]]] = -100
        return dict(inputs)


def train_model(
    spec: ModelSpec, pair: PairSpec, rows: list[dict], output_dir: Path, work_dir: Path, progress: bool = True
) -> None:
    """Build a random model of `spec`'s shape and train it on `rows` under `spec.view`; save to `output_dir`."""
    init_dir = build_tiny_vlm(
        work_dir / "init",
        seed=spec.init_seed + 1000 * pair.seed,
        hidden_size=spec.hidden_size,
        num_hidden_layers=len(spec.layer_types),
        layer_types=spec.layer_types,
        vision_hidden_size=pair.vision_hidden_size,
    )
    processor = load_processor(init_dir, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(init_dir, dtype=torch.float32)
    args = TrainingArguments(
        output_dir=str(work_dir / "trainer"),
        max_steps=spec.steps,
        per_device_train_batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=spec.warmup_steps,
        adam_beta2=0.98,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=max(1, spec.steps // 5),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=pair.seed,
        data_seed=pair.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=rows, data_collator=AnswerCollator(processor, spec.view, pair.world)
    )
    if not progress:  # quiet in worker processes that share a terminal
        trainer.remove_callback(PrinterCallback)
    trainer.train()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)


# Pairs shipped with the package, each in its `pair_dir` with `shipped.json` (its hash and the machine that built it).
SHIPPED_PAIRS = Path(__file__).with_name("pairs")
SHIPPED_RECORD = "shipped.json"


def pair_dir(cache_dir: str | Path, pair: PairSpec) -> Path:
    """The folder of `pair` under a cache of pairs: its name carries the world, the seed and the settings' fingerprint."""
    return Path(cache_dir) / f"{pair.world}-seed{pair.seed}-{pair.fingerprint()}"


def _copy_shipped(root: Path, pair: PairSpec, shipped: Path, log) -> bool:
    """Copy the shipped build of `pair` into the empty or absent `root`, after checking its hash; whether one exists."""
    source = pair_dir(shipped, pair)
    manifest_path = source / SHIPPED_RECORD
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    found = fingerprint(source, skip=(SHIPPED_RECORD,))
    if found != manifest["fingerprint"]:
        raise ValueError(
            f"The trained pair shipped in {source} does not match its recorded hash ({found}, recorded "
            f"{manifest['fingerprint']}): the installation is damaged. Reinstall vzero_trl."
        )
    tmp = root.with_name(f".{root.name}.shipped")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(SHIPPED_RECORD))
    if root.exists():
        root.rmdir()  # the caller checked that it is empty
    os.replace(tmp, root)
    if log is not None:
        log(
            f"Using the {pair.world}-world pair (seed {pair.seed}) shipped with vzero_trl, built on "
            f"{manifest['machine']['cpu']} (hash checked): every machine starts from the same weights."
        )
    return True


def ship_pair(root: str | Path, shipped: str | Path = SHIPPED_PAIRS) -> Path:
    """Copy the complete pair in `root` into the package's shipped pairs with its hash and the machine that built it."""
    root = Path(root)
    record = json.loads((root / "build.json").read_text())
    pair = PairSpec(**{**record["settings"], "teacher": ModelSpec(**record["settings"]["teacher"]),
                       "student": ModelSpec(**record["settings"]["student"])})  # fmt: skip
    target = pair_dir(shipped, pair)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(root, target, ignore=shutil.ignore_patterns(".*"))
    manifest = {"fingerprint": fingerprint(target), "machine": machine()}
    (target / SHIPPED_RECORD).write_text(json.dumps(manifest, indent=2))
    return target


def ensure_pair(
    root: str | Path, pair: PairSpec = PairSpec(), log=print, shipped: str | Path | None = SHIPPED_PAIRS
) -> tuple[Path, Path, dict]:
    """
    The trained teacher and student of `pair` in `root/teacher` and `root/student`, built there unless complete.

    A pair that the package ships (`shipped`: the letter world's pair seed 0, the demo's) is copied instead of trained,
    after its hash is checked: the pair that a CPU trains is a random draw of its floating point, and the shipped one
    is the same on every machine. `shipped=None` always trains.

    `root/settings.json` is written before anything is trained and `root/build.json` (settings and each phase's
    accuracy) last, atomically: a killed build resumes with the model it had not finished, and a folder built with
    other settings is refused, never reused.

    Args:
        root (`str` or `Path`): The pair's folder (see [`pair_dir`] for a cache of several pairs).
        pair ([`PairSpec`]): How to build it.
        log (`Callable[[str], None]` or `None`): Where progress goes; `None` also hides the progress bars.

    Returns:
        `tuple[Path, Path, dict]`: the teacher folder, the student folder, and the build record (settings, each
        phase's held-out accuracy, format rate and p(gold): the teacher with the positive, negative and random crops,
        the student; and in the drift and prior worlds `condition`, from [`drift_condition`] or [`prior_condition`]).
    """
    silence_unactionable_warnings()
    root = Path(root)
    teacher_dir, student_dir, record_path = root / "teacher", root / "student", root / "build.json"
    settings = {"settings": asdict(pair), "fingerprint": pair.fingerprint()}
    settings_path = root / "settings.json"
    if settings_path.is_file():
        built = json.loads(settings_path.read_text())
        if built["fingerprint"] != settings["fingerprint"]:
            raise ValueError(
                f"{root} holds a trained pair built with other settings ({built['settings']}, asked for "
                f"{settings['settings']}). Delete the folder to rebuild it, or use another one."
            )
    elif root.exists() and any(root.iterdir()):
        raise ValueError(
            f"{root} is not empty and holds no trained pair (no settings.json): it may hold models from an older "
            "version of the demo. Delete the folder to build the trained pair there, or use another one."
        )
    if record_path.is_file():
        return teacher_dir, student_dir, json.loads(record_path.read_text())
    if not settings_path.is_file() and shipped is not None and _copy_shipped(root, pair, Path(shipped), log):
        return teacher_dir, student_dir, json.loads(record_path.read_text())

    root.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings, indent=2))
    eval_rows = make_rows(pair.num_eval_rows, seed=pair.seed, split="eval")
    record = dict(settings)
    models = {}
    for role, spec, final in (("teacher", pair.teacher, teacher_dir), ("student", pair.student, student_dir)):
        if not (final / "model.safetensors").is_file():
            if log is not None:
                log(f"Training the {pair.world}-world {role} ({spec.steps} steps on {spec.num_rows} rows)")
            rows = teaching_rows(make_rows(spec.num_rows, seed=pair.seed, split=f"sft-{role}"), spec, pair.seed)
            with tempfile.TemporaryDirectory(dir=root, prefix=f".{role}-") as work:
                train_model(spec, pair, rows, Path(work) / "model", Path(work), progress=log is not None)
                shutil.rmtree(final, ignore_errors=True)
                os.replace(Path(work) / "model", final)
        model = models[role] = AutoModelForImageTextToText.from_pretrained(final, dtype=torch.float32)
        processor = load_processor(final, padding_side="left")
        views = ("crop", "negative_crop", "random_crop") if role == "teacher" else ("student",)
        record[role] = {
            view: evaluate_view(
                model, processor, eval_rows, view, pair.world, desc=f"{role} on {view}" if log is not None else ""
            )
            for view in views
        }
        if log is not None:
            log(f"{role}: " + ", ".join(f"{v} accuracy {m['accuracy']:.3f}" for v, m in record[role].items()))
    if pair.world == "drift":
        record["condition"] = drift_condition(models["teacher"], models["student"], processor, eval_rows, pair.seed)
    elif pair.world == "prior":
        record["condition"] = prior_condition(models["teacher"], models["student"], processor, eval_rows)
    if log is not None and "condition" in record:
        log(f"{pair.world} condition: " + ", ".join(f"{k} {v:.3f}" for k, v in record["condition"].items()))
    tmp = record_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, record_path)
    return teacher_dir, student_dir, record
