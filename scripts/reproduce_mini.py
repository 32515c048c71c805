"""The paper's Table 2 in miniature, on CPU: V-Zero, no gate and random evidence from one trained tiny student.

    python scripts/reproduce_mini.py --output_dir outputs/mini      # both worlds, 3 seeds each (`make reproduce`)

Builds (or reuses) a trained tiny teacher and student per toy world, runs every variant from the same student for each
seed through `VZeroTrainer`, and writes `results.json`, `results.md`, `accuracy.png`, `curves.png` and `gates.png` to
`--output_dir`. Finished runs are kept and reused by a rerun with the same settings; see `vzero_trl.mini.reproduce`.
"""

import argparse
import os

from vzero_trl.mini.reproduce import TABLE2_VARIANTS, VARIANTS, reproduce
from vzero_trl.mini.world import WORLDS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/mini", help="Where results, pictures and runs are written.")
    parser.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=WORLDS, help="Toy worlds to run.")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(TABLE2_VARIANTS),
        choices=list(VARIANTS),
        help="Table 2's three by default; add self_frozen and vision_opd for the sibling methods (longer).",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="Training seeds per variant.")
    parser.add_argument("--workers", type=int, default=2, help="Parallel runs, one CPU thread each.")
    parser.add_argument("--cache_dir", default=None, help="Trained pairs (default: OUTPUT_DIR/models).")
    parser.add_argument("--pair_seed", type=int, default=0, help="Seed of the world and of the trained pair.")
    parser.add_argument("--overwrite", action="store_true", help="Discard runs made with other settings.")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # CPU torch thrashes with more threads on small machines
    reproduce(
        args.output_dir,
        worlds=tuple(args.worlds),
        variants=tuple(args.variants),
        seeds=tuple(args.seeds),
        workers=args.workers,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
        pair_seed=args.pair_seed,
    )
    print(open(os.path.join(args.output_dir, "results.md")).read())
    print(f"Wrote results.json, results.md and the pictures to {args.output_dir}")


if __name__ == "__main__":
    main()
