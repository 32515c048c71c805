"""The evidence gates of a group split over two processes equal those of one process gating the same rollouts.

`tests/fixtures/distributed_gates.py` trains for two steps on 2 CPU processes with `num_generations=4` and
`per_device_train_batch_size=2`, so each prompt's 4 rollouts straddle the processes, and records every process's
rollouts and gates. Here, in one process, the recorded rollouts are replayed through the teacher's two views and gated
as whole groups; a gate computed over each process's 2 rows alone would differ.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import load_from_disk
from fixtures.distributed_gates import MAX_STEPS, training_args
from helpers import replay

from vzero_trl import VZeroTrainer
from vzero_trl.gating import evidence_scores, evidence_weights
from vzero_trl.toy.synthetic import make_dataset
from vzero_trl.toy.tiny import build_tiny_pair


NUM_PROCESSES = 2
ROWS_PER_PROCESS = 2  # per_device_train_batch_size of the script, half a group
SCRIPT = Path(__file__).parent / "fixtures" / "distributed_gates.py"


def launch(models: Path, data: Path, out: Path, hf_home: Path) -> tuple[int, str]:
    # `--cpu --num_processes 2` would start ONE process: accelerate's CPU launcher only forks several through mpirun.
    # `--multi_gpu` goes through torchrun, which starts both processes and sets RANK/WORLD_SIZE/MASTER_*; the script's
    # `use_cpu=True` (`PartialState(cpu=True)`) then makes accelerate choose MULTI_CPU with the gloo backend: no GPU
    # is needed, and neither is `ACCELERATE_USE_CPU`. `--main_process_port 0` lets accelerate pick a free port, so runs
    # do not clash; the other flags only silence the "no config" warnings. A private HF_HOME keeps a user's default
    # accelerate config (`$HF_HOME/accelerate/default_config.yaml`) out of the launch.
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        f"--num_processes={NUM_PROCESSES}",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        "--main_process_port=0",
        str(SCRIPT),
        f"--models={models}",
        f"--data={data}",
        f"--out={out}",
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HOME=str(hf_home),
    )
    # A new session, so that a hung run can be killed with both workers (torchrun does not take them down with it).
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    ) as process:
        try:
            output, _ = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            raise AssertionError(f"The 2-process run timed out:\n{output[-20_000:]}") from None
    return process.returncode, output


def concatenated(records: list[dict]) -> dict:
    """Rank 0's rows then rank 1's rows, the order of `accelerator.gather`, with completions padded to one width."""
    width = max(record["completion_ids"].size(1) for record in records)
    return {
        "ids": [row_id for record in records for row_id in record["ids"]],
        "completion_ids": torch.cat(
            [F.pad(r["completion_ids"], (0, width - r["completion_ids"].size(1))) for r in records]
        ),
        "completion_mask": torch.cat(
            [F.pad(r["completion_mask"], (0, width - r["completion_mask"].size(1))) for r in records]
        ),
        "evidence_weights": torch.cat([record["evidence_weights"] for record in records]),
    }


def test_gates_of_a_group_split_over_two_processes_match_one_process(tmp_path):
    models = tmp_path / "tiny"
    build_tiny_pair(models)
    make_dataset(8, seed=0).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "records"

    returncode, output = launch(models, tmp_path / "data", out, tmp_path / "hf_home")
    assert returncode == 0, output[-20_000:]
    for rank in range(NUM_PROCESSES):  # both processes finished every step, one generation batch per step
        assert torch.load(out / f"rank{rank}_done.pt")["global_step"] == MAX_STEPS, output[-20_000:]
        assert sorted(path.name for path in out.glob(f"rank{rank}_call*.pt")) == [
            f"rank{rank}_call{k}.pt" for k in range(MAX_STEPS)
        ]

    dataset = load_from_disk(str(tmp_path / "data"))
    rows = {row["id"]: row for row in dataset}
    # One process scores the 4 rows in chunks of 2, as each process did (2 rows per device would not hold a group).
    trainer = VZeroTrainer(
        model=str(models / "student"),
        teacher_model=str(models / "teacher"),
        args=training_args(tmp_path / "single", per_device_train_batch_size=4, teacher_batch_size=2),
        train_dataset=dataset,
    )
    args = trainer.args
    num_generations = args.num_generations
    gate = dict(
        alpha=args.evidence_alpha,
        w_min=args.evidence_weight_min,
        w_max=args.evidence_weight_max,
        eps=args.evidence_eps,
        std=args.evidence_std,
    )

    distributed, per_rank = [], []
    for k in range(MAX_STEPS):
        records = [torch.load(out / f"rank{rank}_call{k}.pt") for rank in range(NUM_PROCESSES)]
        assert [(r["process_index"], r["num_processes"]) for r in records] == [(0, 2), (1, 2)]
        assert [len(r["ids"]) for r in records] == [ROWS_PER_PROCESS] * NUM_PROCESSES
        batch = concatenated(records)
        # One prompt's 4 rollouts, 2 on each process: the group really straddles the ranks.
        assert batch["ids"] == [batch["ids"][0]] * num_generations

        group = [rows[row_id] for row_id in batch["ids"]]
        columns = [args.crop_column, args.negative_crop_column]
        (pos, _), (neg, _) = replay(trainer, group, batch, columns, "per_sequence", rows_per_forward=2)
        scores = evidence_scores(pos, neg, batch["completion_mask"], gamma=args.evidence_gamma)
        expected = evidence_weights(scores, num_generations, **gate)
        # The random teacher's view gaps are ~1e-3, so standardising turns the ~1e-6 log-prob noise of scoring the rows
        # padded to another width into up to ~5e-4 on the gates; a wrong grouping moves them by far more (see below).
        torch.testing.assert_close(
            batch["evidence_weights"], expected, atol=2e-3, rtol=0, msg=lambda m, k=k: f"call {k}: {m}"
        )

        distributed.append(batch["evidence_weights"])
        per_rank.append(evidence_weights(scores, ROWS_PER_PROCESS, **gate))  # each process's rows gated alone

    distributed, per_rank = torch.cat(distributed), torch.cat(per_rank)
    assert distributed.min() < 1 < distributed.max()  # the gates are not all neutral, so the comparison has teeth
    assert (distributed - per_rank).abs().max() > 0.1  # gating per process would have failed the test
