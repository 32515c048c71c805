"""A miniature V-Zero reproduction that trains on CPU in minutes.

- `world`: the toy world, images whose question-relevant region is one merged vision token of the tiny models;
- `pretrain`: a tiny teacher trained on the teacher view and a student trained briefly on the student view, cached;
- `measure`: held-out greedy accuracy, probability of the reference answer, and the gate's diagnostics;
- `reproduce`: the paper's Table 2 variants from the same trained student, over seeds, with a table and pictures.
"""
