"""A [`VZeroTrainer`] that keeps what the miniature measures about its training rollouts, and changes nothing else."""

from ..trainer import VZeroTrainer
from .world import parse_answer


class RecordingTrainer(VZeroTrainer):
    """
    [`VZeroTrainer`] that also keeps, per training rollout, its step, group, gate and answer correctness in
    `self.rollouts`. Training is untouched: the answers are read only here, for the gate's diagnostics.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rollouts: list[dict] = []

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            texts = self.processing_class.batch_decode(output["completion_ids"], skip_special_tokens=True)
            gates = output["evidence_weights"].tolist()
            groups = output["group_index"].tolist()
            step = self.state.global_step
            for row, text, gate, group in zip(inputs, texts, gates, groups, strict=True):
                self.rollouts.append(
                    {
                        "step": step,
                        "group": step * 1000 + group,
                        "gate": gate,
                        "correct": parse_answer(text) == row["answer"],
                    }
                )
        return output
