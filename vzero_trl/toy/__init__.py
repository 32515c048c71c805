"""Tiny building blocks for tests and demos: random tiny Qwen3.5 models built offline (`tiny`), synthetic
fine-grained VQA data, a small target among cluttered shapes (`synthetic`), and the torchvision-free processor the
tiny models are saved with (`processors`).

Not to be confused with "the toy world", [`vzero_trl.mini.world`]: the miniature reproduction's 4 x 4 grid, one
cell per vision token, which `mini` builds from these blocks (its shapes are drawn with `synthetic.draw_shape`; its
teacher and student start as `tiny.build_tiny_vlm` models). Nothing here is needed to train, prepare data or evaluate
with real checkpoints, and the training core never imports it. Its importers: [`vzero_trl.mini`], the launcher (the
demo's assets), the tests, and [`vzero_trl.processing`], which imports `processors` only to load a checkpoint saved
with the torchvision-free processor.
"""
