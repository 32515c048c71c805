"""The fake Hub (tests/fixtures/hub_server.py) driven by the real huggingface_hub, datasets and transformers clients.

Every client runs in a fresh Python: huggingface_hub reads HF_ENDPOINT when it is imported, and this process imported
it offline (conftest sets HF_HUB_OFFLINE=1). Each client prints one JSON object on its last line for the asserts.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fixtures.hub_server import FakeHub


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with FakeHub(tmp_path_factory.mktemp("fake_hub")) as server:
        yield server


def run_client(hub: FakeHub, home: Path, code: str, *args: str) -> dict:
    """Run `code` (with `args` as sys.argv[1:]) in a fresh Python against `hub` and parse its last stdout line."""
    env = {**os.environ, **hub.env(home)}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        pytest.fail(f"client exited with {proc.returncode}:\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_upload_folder_snapshot_download_and_errors(hub, tmp_path):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    local = {
        "config.json": b'{"n_layer": 1}\n',  # small text: a regular git file
        "sub/model.safetensors": rng.bytes(100_000),  # LFS by extension
        "big.dat": rng.bytes(11 * 2**20),  # LFS by size (> 10 MiB)
    }
    for name, data in local.items():
        (folder / name).write_bytes(data)
    out = run_client(
        hub,
        tmp_path / "home",
        """
        import json, sys
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download

        api = HfApi()
        out = {"user": api.whoami()["name"], "url": api.create_repo("user/model-a", private=True)}
        api.create_repo("user/model-a", exist_ok=True)
        first = api.upload_folder(folder_path=sys.argv[1], repo_id="user/model-a", commit_message="weights")
        out["snapshot"] = snapshot_download("user/model-a")
        out["config"] = hf_hub_download("user/model-a", "config.json")
        info = api.model_info("user/model-a", files_metadata=True)
        out["private"], out["sha"] = info.private, info.sha
        out["lfs"] = {s.rfilename: s.lfs is not None and s.lfs.sha256 for s in info.siblings}
        out["tree"] = sorted(entry.path for entry in api.list_repo_tree("user/model-a"))
        second = api.upload_file(path_or_fileobj=b"v2", path_in_repo="notes.txt", repo_id="user/model-a")
        third = api.delete_file("sub/model.safetensors", "user/model-a")
        out["commits"] = [first.oid, second.oid, third.oid, api.repo_info("user/model-a").sha]
        out["files"] = api.list_repo_files("user/model-a")
        out["old"] = hf_hub_download("user/model-a", "sub/model.safetensors", revision=first.oid)
        errors = {
            "repo": lambda: api.model_info("user/missing"),
            "wrong_type": lambda: api.dataset_info("user/model-a"),
            "download": lambda: hf_hub_download("user/missing", "config.json"),
            "file": lambda: hf_hub_download("user/model-a", "missing.txt"),
            "revision": lambda: api.list_repo_files("user/model-a", revision="no-such-branch"),
        }
        for name, call in errors.items():
            try:
                call()
                errors[name] = None
            except Exception as e:
                errors[name] = [cls.__name__ for cls in type(e).__mro__]
        print(json.dumps({**out, "errors": errors}))
        """,
        str(folder),
    )
    assert out["user"] == "user"
    assert out["url"] == f"{hub.url}/user/model-a"
    for name, data in local.items():
        assert (Path(out["snapshot"]) / name).read_bytes() == data, name
    assert Path(out["config"]).read_bytes() == local["config.json"]
    assert out["private"] is True
    assert out["lfs"] == {
        ".gitattributes": False,
        "config.json": False,
        "big.dat": hashlib.sha256(local["big.dat"]).hexdigest(),
        "sub/model.safetensors": hashlib.sha256(local["sub/model.safetensors"]).hexdigest(),
    }
    assert out["tree"] == [".gitattributes", "big.dat", "config.json", "sub"]
    assert len(set(out["commits"][:3])) == 3 and out["commits"][3] == out["commits"][2]
    assert all(len(sha) == 40 and int(sha, 16) >= 0 for sha in out["commits"])
    assert out["files"] == [".gitattributes", "big.dat", "config.json", "notes.txt"]
    assert Path(out["old"]).read_bytes() == local["sub/model.safetensors"]  # an old commit still resolves
    stored, first = hub.files("user/model-a", "model"), hub.files("user/model-a", "model", revision=out["commits"][0])
    assert (
        stored["notes.txt"] == b"v2"
        and stored["big.dat"] == local["big.dat"]
        and "sub/model.safetensors" not in stored
    )
    assert first["sub/model.safetensors"] == local["sub/model.safetensors"] and "notes.txt" not in first
    errors = out["errors"]
    assert "RepositoryNotFoundError" in errors["repo"] and "RepositoryNotFoundError" in errors["wrong_type"]
    assert "RepositoryNotFoundError" in errors["download"]
    assert "EntryNotFoundError" in errors["file"]
    assert "RevisionNotFoundError" in errors["revision"]


def test_dataset_push_to_hub_and_load_dataset(hub, tmp_path):
    rng = np.random.default_rng(1)
    shapes = [(5, 7, 3), (6, 4, 3), (3, 3), (4, 9, 3)]  # RGB and one grayscale image, all different sizes
    rows = {
        "pixels": [rng.integers(0, 256, shape, dtype=np.uint8).tolist() for shape in shapes],
        "bbox": [[i, 2 * i, 10 + i, 20 + i] for i in range(len(shapes))],
        "text": [f"question {i}: é?" for i in range(len(shapes))],
    }
    data = json.dumps(rows)
    push = """
        import json, sys
        import numpy as np
        from PIL import Image
        from datasets import Dataset, Features, Image as ImageFeature, List, Value

        rows = json.loads(sys.argv[1])
        features = Features({"image": ImageFeature(), "bbox": List(Value("int64")), "text": Value("string")})
        images = [Image.fromarray(np.array(p, dtype=np.uint8)) for p in rows["pixels"]]
        ds = Dataset.from_dict({"image": images, "bbox": rows["bbox"], "text": rows["text"]}, features=features)
        ds.push_to_hub("user/ds", num_shards=2)  # then replace the two shards by one, as a re-run would
        ds.push_to_hub("user/ds")
        print(json.dumps({}))
    """
    run_client(hub, tmp_path / "push-home", push, data)
    stored = hub.files("user/ds")
    assert sorted(stored) == [".gitattributes", "README.md", "data/train-00000-of-00001.parquet"]
    readme = stored["README.md"].decode()
    assert "dataset_info:" in readme and "dtype: image" in readme and "path: data/train-*" in readme

    load = """
        import json
        import numpy as np
        from datasets import load_dataset

        ds = load_dataset("user/ds", split="train")
        rows = list(ds)
        print(json.dumps({
            "features": {name: type(feature).__name__ for name, feature in ds.features.items()},
            "pixels": [np.asarray(row["image"]).tolist() for row in rows],
            "modes": [row["image"].mode for row in rows],
            "bbox": [row["bbox"] for row in rows],
            "text": [row["text"] for row in rows],
        }))
    """
    out = run_client(hub, tmp_path / "load-home", load)  # a fresh HF_HOME: nothing cached from the push
    assert out["features"] == {"image": "Image", "bbox": "List", "text": "Value"}
    assert out["pixels"] == rows["pixels"]
    assert out["modes"] == ["RGB", "RGB", "L", "RGB"]
    assert out["bbox"] == rows["bbox"] and out["text"] == rows["text"]


def test_cards_round_trip_and_yaml_validation_hook(hub, tmp_path):
    hub.validate_yaml = lambda text, repo_type: ["license: not-a-license"] if "not-a-license" in text else []
    try:
        out = run_client(
            hub,
            tmp_path / "home",
            """
            import json
            from huggingface_hub import DatasetCard, HfApi, ModelCard

            api = HfApi()
            api.create_repo("user/card-ds", repo_type="dataset")
            api.create_repo("user/card-model")
            text = "---\\nlicense: mit\\ntags:\\n- vqa\\npretty_name: Tiny VQA\\n---\\n\\n# Tiny VQA\\n\\nSome text.\\n"
            DatasetCard(text).push_to_hub("user/card-ds")
            ModelCard(text.replace("Tiny VQA", "Tiny model")).push_to_hub("user/card-model")
            dataset_card, model_card = DatasetCard.load("user/card-ds"), ModelCard.load("user/card-model")
            bad = "---\\nlicense: not-a-license\\n---\\nbad\\n"
            rejected = []
            for push in (  # RepoCard.validate() and create_commit's README check both ask the server
                lambda: ModelCard(bad).push_to_hub("user/card-model"),
                lambda: api.upload_file(path_or_fileobj=bad.encode(), path_in_repo="README.md", repo_id="user/card-model"),
            ):
                try:
                    push()
                    rejected.append(None)
                except ValueError as e:
                    rejected.append(str(e))
            print(json.dumps({
                "dataset": [dataset_card.text, dataset_card.data.to_dict()],
                "model": [model_card.text, model_card.data.to_dict()],
                "rejected": rejected,
            }))
            """,
        )
    finally:
        hub.validate_yaml = None
    assert out["dataset"] == ["\n# Tiny VQA\n\nSome text.\n", {"license": "mit", "tags": ["vqa"], "pretty_name": "Tiny VQA"}]  # fmt: skip
    assert out["model"][1]["pretty_name"] == "Tiny model" and out["model"][0] == "\n# Tiny model\n\nSome text.\n"
    assert all("license: not-a-license" in message for message in out["rejected"])
    assert "Invalid metadata in README.md" in out["rejected"][1]
    assert b"license: mit" in hub.files("user/card-ds")["README.md"]
    assert b"not-a-license" not in hub.files("user/card-model", "model")["README.md"]


def test_transformers_push_to_hub_and_from_pretrained(hub, tmp_path):
    out = run_client(
        hub,
        tmp_path / "home",
        """
        import json, sys
        import torch
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import (
            AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Trainer, TrainingArguments
        )
        from huggingface_hub import HfApi, ModelCard

        torch.manual_seed(0)
        config = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(config)
        backend = Tokenizer(models.WordLevel({"[UNK]": 0, "red": 1, "bird": 2}, unk_token="[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
        commit = model.push_to_hub("user/tiny-gpt2")
        tokenizer.push_to_hub("user/tiny-gpt2")
        loaded = GPT2LMHeadModel.from_pretrained("user/tiny-gpt2")
        same = {k: torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items()}
        ids = AutoTokenizer.from_pretrained("user/tiny-gpt2")("red bird blue").input_ids

        # Trainer: a hub_model_id without namespace is created under the token's user (whoami).
        args = TrainingArguments(
            output_dir=sys.argv[1], push_to_hub=True, hub_model_id="tiny-trainer", report_to=[], use_cpu=True
        )
        trainer = Trainer(model=model, args=args)
        trainer.push_to_hub(commit_message="end of training")
        card = ModelCard.load(trainer.hub_model_id)
        print(json.dumps({
            "commit": commit.oid, "same": same, "ids": ids, "trainer_repo": trainer.hub_model_id,
            "trainer_files": HfApi().list_repo_files(trainer.hub_model_id), "card_tags": card.data.tags,
        }))
        """,
        str(tmp_path / "trainer_output"),
    )
    assert out["same"] and all(out["same"].values())
    assert out["ids"] == [1, 2, 0]
    stored = hub.files("user/tiny-gpt2", "model", revision=out["commit"])
    assert {"config.json", "model.safetensors"} <= set(stored)
    assert json.loads(stored["config.json"])["n_layer"] == 1
    assert "tokenizer.json" in hub.files("user/tiny-gpt2", "model")
    assert out["trainer_repo"] == "user/tiny-trainer"
    assert {"README.md", "config.json", "model.safetensors", "training_args.bin"} <= set(out["trainer_files"])
    assert "generated_from_trainer" in out["card_tags"]
