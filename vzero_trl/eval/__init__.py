"""The evaluation wing: the paper's Table 1 benchmarks (`tasks`), answer extraction and scoring (`answers`), and the
runner, its report and the training-time callback (`evaluate`). Training imports it only for that callback."""
