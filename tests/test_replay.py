"""Teacher replay without a model: the views are built once per group, from the group's own row.

The replay against the tiny teacher is checked in `test_trainer.py` (every rollout against scoring its row alone,
including two questions that share an id) and `test_shared_prefix.py` (the two strategies against each other).
"""

import pytest
import torch
from PIL import Image

from vzero_trl.replay import replay_teacher, teacher_views


def question(text, crop_color):
    image = Image.new("RGB", (64, 48))
    return dict(
        id="same-image",  # two questions about one image, with one id: not one example
        prompt=[{"role": "user", "content": text}],
        image=image,
        crop=Image.new("RGB", (16, 16), crop_color),
        negative_crop=Image.new("RGB", (16, 16), "gray"),
    )


def test_each_group_gets_its_own_prompt_and_crops():
    first, second = question("What color is the star?", "red"), question("Where is the ring?", "blue")
    rows = [first, first, second, second]
    views = teacher_views(rows, [slice(0, 2), slice(2, 4)], ["crop", "negative_crop"], "PRE", "POST")
    assert len(views) == 2 and all(len(view) == 2 for view in views)  # per view, one conversation per group
    for view, column in zip(views, ["crop", "negative_crop"], strict=True):
        for messages, row in zip(view, (first, second), strict=True):
            (turn,) = messages
            assert turn["content"] == [
                {"type": "image", "image": row["image"]},
                {"type": "text", "text": row["prompt"][0]["content"]},
                {"type": "text", "text": "PRE"},
                {"type": "image", "image": row[column]},
                {"type": "text", "text": "POST"},
            ]


@pytest.mark.parametrize(
    "groups", [[slice(0, 2)], [slice(0, 2), slice(3, 4)], [slice(1, 4)], [slice(0, 3), slice(2, 4)]]
)
def test_groups_must_cover_the_rows_in_order(groups):
    rows = [question("What color is the star?", "red")] * 4
    ids, mask = torch.zeros(4, 3, dtype=torch.long), torch.ones(4, 3)
    with pytest.raises(ValueError, match="`groups` must cover the 4 rows in order"):
        replay_teacher(
            None, None, rows, groups, ids, mask, ["crop"], strategy="per_sequence", crop_prefix="", crop_suffix=""
        )
