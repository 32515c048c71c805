"""A teacher served over vLLM's render/generate endpoints, against a stand-in server backed by the tiny teacher.

The stand-in (`tests/fixtures/teacher_server.py`) follows vLLM 0.30's request and response shapes; it is not vLLM.
Served log-probabilities, gates and training steps are checked against the in-process teacher, and every server the
trainer must refuse (down, another tokenizer, template or vocabulary, blind, no render route) is refused at start.
"""

import copy
import math
import socket

import pytest
import torch
from fixtures.teacher_server import StandInTeacher
from helpers import generation_batch, load, make_args, make_trainer, ragged, replay, rows_with_two_image_sizes
from transformers import set_seed

from vzero_trl import VZeroConfig, VZeroTrainer
from vzero_trl.gating import group_slices, rollout_groups
from vzero_trl.replay import teacher_views
from vzero_trl.served_teacher import ServedTeacher, TeacherServerError, token_logps, vocabulary_size
from vzero_trl.toy.synthetic import make_dataset


COLUMNS = ["crop", "negative_crop"]
GENERATE = "/inference/v1/generate"
RENDER = "/v1/chat/completions/render"


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(16, seed=0)


@pytest.fixture(scope="module")
def teacher(tiny_models):
    return load(tiny_models[1])  # (model, processor)


@pytest.fixture
def server(teacher):
    with StandInTeacher(*teacher) as running:
        yield running


def served_trainer(tiny_models, tmp_path, dataset, urls, **overrides):
    settings = dict(teacher_server_urls=urls, teacher_server_backoff=0.01, teacher_server_retries=2)
    return VZeroTrainer(
        model=str(tiny_models[0]),
        teacher_model=None,
        args=make_args(tmp_path, **{**settings, **overrides}),
        train_dataset=dataset,
    )


def served_scores(client, trainer, rows, batch):
    groups = group_slices(rollout_groups(len(rows), trainer.args.num_generations))
    views = teacher_views(rows, groups, COLUMNS, *trainer.args.teacher_texts, trainer.args.teacher_view)
    return client.score(client.render_views(views), groups, batch["completion_ids"], batch["completion_mask"])


def free_port_url():
    with socket.socket() as probe:  # bound, then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


# --- scores -----------------------------------------------------------------------------------------------------------


def test_served_log_probs_equal_the_in_process_teachers(tiny_models, tmp_path, dataset, server):
    """Both views, G = 4, two prompts of different lengths, ragged completions: equal to 1e-5 in float32."""
    trainer = make_trainer(tiny_models, tmp_path, dataset)
    rows = rows_with_two_image_sizes(dataset)
    batch = ragged(generation_batch(trainer, rows), trainer.processing_class.tokenizer.pad_token_id)
    in_process = replay(trainer, rows, batch, COLUMNS, "per_sequence")
    client = ServedTeacher([server.url])
    served = served_scores(client, trainer, rows, batch)
    for (expected, _), (actual, hidden) in zip(in_process, served, strict=True):
        assert actual.dtype == torch.float32 and hidden is None
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
        assert (actual[batch["completion_mask"] == 0] == 0).all() and (actual[batch["completion_mask"] == 1] < 0).all()
    # each (prompt, view) rendered once for its 4 rollouts; one scoring request per (rollout, view)
    assert server.calls[RENDER] == 2 * 2 and server.calls[GENERATE] == 2 * 8


def test_several_urls_share_the_load(tiny_models, tmp_path, dataset, teacher):
    trainer = make_trainer(tiny_models, tmp_path, dataset)
    rows = rows_with_two_image_sizes(dataset)
    batch = generation_batch(trainer, rows)
    in_process = replay(trainer, rows, batch, COLUMNS, "per_sequence")
    with StandInTeacher(*teacher) as first, StandInTeacher(*teacher) as second:
        served = served_scores(ServedTeacher([first.url, second.url + "/"]), trainer, rows, batch)
        assert (first.calls[GENERATE], second.calls[GENERATE]) == (8, 8)
        assert (first.calls[RENDER], second.calls[RENDER]) == (2, 2)
    for (expected, _), (actual, _) in zip(in_process, served, strict=True):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_gates_and_three_training_steps_equal_an_in_process_run(tiny_models, tmp_path, dataset, server):
    # SGD: Adam moves each parameter by about the learning rate at its first steps whatever its gradient, so a gradient
    # difference of 1e-9 in a parameter with hardly any gradient could flip its update.
    settings = dict(max_steps=3, optim="sgd")
    local = make_trainer(tiny_models, tmp_path / "local", dataset, teacher_scoring="per_sequence", **settings)
    served = served_trainer(tiny_models, tmp_path / "served", dataset, [server.url], **settings)
    assert served.teacher_model is None  # no teacher weights in training

    rows = rows_with_two_image_sizes(dataset)
    outputs = []
    for trainer in (local, served):
        set_seed(0)
        outputs.append(generation_batch(trainer, rows))
    assert torch.equal(outputs[0]["completion_ids"], outputs[1]["completion_ids"])
    torch.testing.assert_close(outputs[1]["teacher_logps"], outputs[0]["teacher_logps"], atol=1e-5, rtol=0)
    # The gate divides each score by its group's standard deviation, about 3e-3 for the random tiny teacher, whose two
    # views barely differ: log-probabilities equal to 5e-7 give gates equal to about 2e-4.
    torch.testing.assert_close(outputs[1]["evidence_weights"], outputs[0]["evidence_weights"], atol=1e-3, rtol=0)
    assert len(set(outputs[1]["evidence_weights"].tolist())) > 1  # the gate is not trivially 1

    for trainer in (local, served):
        set_seed(0)
        trainer.train()
    for (name, a), (_, b) in zip(local.model.named_parameters(), served.model.named_parameters(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=name)
    logs = [[entry for entry in t.state.log_history if "loss" in entry] for t in (local, served)]
    assert len(logs[1]) == 3
    for expected, actual in zip(*logs, strict=True):
        for key in ("evidence/score_std", "evidence/teacher_pos_logp_mean", "evidence/teacher_neg_logp_mean"):
            assert actual[key] == pytest.approx(expected[key], abs=1e-5), key
        # the loss and the gates move with the gates (see above)
        for key in ("loss", "evidence/weight_mean"):
            assert actual[key] == pytest.approx(expected[key], abs=3e-4), key
    served.create_model_card()
    assert "tiny-teacher" in (tmp_path / "served" / "out" / "README.md").read_text()


# --- refused at start -------------------------------------------------------------------------------------------------


def test_a_down_server_is_refused_at_start(tiny_models, tmp_path, dataset):
    url = free_port_url()
    with pytest.raises(TeacherServerError, match=rf"{url} failed /health 3 times; last error: ConnectError"):
        served_trainer(tiny_models, tmp_path, dataset, [url])


def wider(model):
    other = copy.deepcopy(model)
    other.resize_token_embeddings(576 + 64)
    return other


def with_system_turn(processor):
    other = copy.deepcopy(processor)
    other.chat_template = "<|im_start|>system\nYou are a teacher.<|im_end|>\n" + processor.chat_template
    return other


@pytest.mark.parametrize(
    "change, error",
    [
        (
            lambda model, processor: dict(processor=with_system_turn(processor)),
            r"first differ at position 1: server .*'system\\nYou'.*chat template",
        ),
        (lambda model, processor: dict(model=wider(model)), r"accepts token id 576, past the student's vocabulary"),
        (
            lambda model, processor: dict(vocab_size=576 - 8),
            r"refused /inference/v1/generate \(HTTP 400.*out of vocab",
        ),
        (lambda model, processor: dict(scale_out=False), r"does not serve /v1/chat/completions/render.*scale-out"),
        (lambda model, processor: dict(blind=True), r"same log-probabilities whatever the image"),
    ],
    ids=["template", "larger-vocabulary", "smaller-vocabulary", "no-render-route", "blind"],
)
def test_a_wrong_or_blind_teacher_is_refused_at_start(tiny_models, tmp_path, dataset, teacher, change, error):
    model, processor = teacher
    assert vocabulary_size(processor, model.config) == 576  # max(532 tokenizer ids, 576 embedding rows)
    settings = dict(model=model, processor=processor) | change(model, processor)
    with StandInTeacher(**settings) as wrong:
        with pytest.raises(TeacherServerError, match=error):
            served_trainer(tiny_models, tmp_path, dataset, [wrong.url])
        assert wrong.calls["/health"] == 1


def test_another_served_model_name_is_refused(tiny_models, tmp_path, dataset, server):
    with pytest.raises(TeacherServerError, match=r"serves \['tiny-teacher'\], not 'Qwen/Qwen3.5-27B'"):
        served_trainer(tiny_models, tmp_path, dataset, [server.url], teacher_model_name_or_path="Qwen/Qwen3.5-27B")


def test_every_url_is_checked(tiny_models, tmp_path, dataset, server, teacher):
    with StandInTeacher(*teacher, blind=True) as blind:
        with pytest.raises(TeacherServerError, match=blind.url):
            served_trainer(tiny_models, tmp_path, dataset, [server.url, blind.url])


# --- during training --------------------------------------------------------------------------------------------------


def test_a_mid_run_failure_is_retried_then_stops(tiny_models, tmp_path, dataset, server):
    trainer = served_trainer(tiny_models, tmp_path, dataset, [server.url], max_steps=1)
    server.failures.extend(["503", "drop"])  # two failed requests, each within its 2 retries
    before = server.calls[GENERATE]
    trainer.train()
    assert trainer.state.global_step == 1 and not server.failures
    assert server.calls[GENERATE] - before == 2 * 4 + 2  # 4 rollouts x 2 views, and the 503 and the dropped tries

    # A server that keeps failing: the step stops with the URL and the error, and nothing is trained.
    trainer = served_trainer(tiny_models, tmp_path / "again", dataset, [server.url], max_steps=1)
    weights = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    server.failures.extend(["503"] * 100)
    with pytest.raises(TeacherServerError, match=rf"{server.url} failed {GENERATE} 3 times; last error: HTTP 503"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert all(torch.equal(p, weights[name]) for name, p in trainer.model.named_parameters())


# --- the response and the settings ------------------------------------------------------------------------------------


def test_prompt_logprobs_are_read_from_position_one_with_string_keys():
    # tokens [7, 8, 9]; entry 0 is None (no context); entry i scores token i
    response = {"prompt_logprobs": [None, {"8": {"logprob": -0.5, "rank": 1}}, {"9": {"logprob": -2.0}, "3": {}}]}
    assert token_logps(response, [7, 8, 9], 1, "u") == [-0.5, -2.0]
    assert token_logps(response, [7, 8, 9], 2, "u") == [-2.0]


@pytest.mark.parametrize(
    "entries, error",
    [
        ([None, {"8": {"logprob": -0.5}}], r"prompt_logprobs of length 2 for 3 tokens"),
        ([None, {"8": {"logprob": -0.5}}, None], r"no valid log-probability for token 9 at position 2"),
        ([None, {"8": {"logprob": -0.5}}, {"4": {"logprob": -0.1}}], r"no valid log-probability for token 9"),
        ([None, {"8": {"logprob": math.nan}}, {"9": {"logprob": -1.0}}], r"token 8 at position 1 \(got"),
        ([None, {"8": {"logprob": -9999.0}}, {"9": {"logprob": -1.0}}], r"processed log-probabilities.*raw_logprobs"),
    ],
)
def test_a_malformed_response_is_never_half_read(entries, error):
    with pytest.raises(TeacherServerError, match=error):
        token_logps({"prompt_logprobs": entries}, [7, 8, 9], 1, "u")


def config(**overrides):
    settings = dict(output_dir="out", use_cpu=True, bf16=False, report_to="none", per_device_train_batch_size=8)
    return VZeroConfig(**{**settings, "teacher_server_urls": ["http://10.0.0.2:8000"], **overrides})


@pytest.mark.parametrize(
    "overrides, error",
    [
        (dict(loss_type="full_reverse_kl"), r"sampled tokens only.*loss_type='full_reverse_kl'"),
        (dict(loss_type="full_reverse_kl", loss_top_k=100), r"sampled tokens only.*`loss_top_k`"),
        (dict(teacher_source="ema"), r"`teacher_server_urls` serves an external teacher, got teacher_source='ema'"),
        (dict(offload_teacher=True), r"`offload_teacher` moves a local teacher's weights"),
        (dict(teacher_server_urls=["10.0.0.2:8000"]), r"`teacher_server_urls` holds '10.0.0.2:8000'.*http://"),
        (dict(teacher_server_timeout=math.nan), r"`teacher_server_timeout` must be > 0, got nan \(a finite number"),
        (dict(teacher_server_timeout=0.0), r"`teacher_server_timeout` must be > 0, got 0.0"),
        (dict(teacher_server_backoff=math.nan), r"`teacher_server_backoff` must be >= 0, got nan"),
        (dict(teacher_server_backoff=math.inf), r"`teacher_server_backoff` must be >= 0, got inf"),
        (dict(teacher_server_retries=-1), r"`teacher_server_retries` must be >= 0, got -1"),
        (dict(teacher_server_concurrency=0), r"`teacher_server_concurrency` must be >= 1, got 0"),
    ],
)
def test_bad_server_settings_fail_naming_the_option(overrides, error):
    with pytest.raises(ValueError, match=error):
        config(**overrides)


def test_a_local_teacher_and_a_served_one_are_exclusive(tiny_models, tmp_path, dataset, server):
    with pytest.raises(ValueError, match=r"`teacher_server_urls` scores both views on the teacher's servers"):
        VZeroTrainer(
            model=str(tiny_models[0]),
            teacher_model=str(tiny_models[1]),
            args=make_args(tmp_path, teacher_server_urls=[server.url]),
            train_dataset=dataset,
        )
    assert (
        config().teacher_server_urls == ["http://10.0.0.2:8000"]
        and config(teacher_server_urls=[]).teacher_server_urls is None
    )


def test_the_launcher_trains_with_a_served_teacher_from_the_command_line(launch, tmp_path, server):
    # `teacher_model_name_or_path` names the served model: nothing is loaded from it.
    trainer = launch(
        tmp_path / "run", "--teacher_server_urls", server.url, "--teacher_model_name_or_path", "tiny-teacher"
    )
    assert trainer.state.global_step == 2 and trainer.teacher_model is None
    assert server.calls[GENERATE] == 4 + 2 * 2 * 4  # the start checks, then 2 steps of 4 rollouts x 2 views
    assert "tiny-teacher" in (tmp_path / "run" / "README.md").read_text()
