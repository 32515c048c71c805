"""The paper's Table 2 in miniature, on CPU: paired comparisons of V-Zero and its variants against plain OPD.

    python scripts/reproduce_mini.py                 # default: letter and prior worlds, 2 pairs, core variants
    python scripts/reproduce_mini.py --full          # the committed table: 3 worlds, 5 pairs x 2 seeds, 6 variants
    python scripts/reproduce_mini.py --pilot         # the learning-rate rule on the pilot pairs (100, 101)
    python scripts/reproduce_mini.py --full --report # the grid's finished runs only, with the missing ones listed
    python scripts/reproduce_mini.py --worlds prior --pairs 0 1 2 3 4 --learning_rate 1e-4 \
        --output_dir outputs/mini-prior-lr1e-4       # a sensitivity run at another rate, in its own folder

A cell is (pair seed, run seed): a trained tiny teacher and student drawn from the pair seed, one run of every variant
from that student with the run seed. Writes `results.json`, `results.md` and the pictures (`paired.png`, `curves.png`,
`gates.png`) to `--output_dir`; finished runs are kept and reused by a rerun with the same settings, so a grid can grow
across sittings (see `vzero_trl.mini.reproduce`).
"""

import argparse
import os

from vzero_trl.mini.reproduce import PILOT_LEARNING_RATES, PILOT_PAIRS, pilot, reproduce
from vzero_trl.mini.variants import CORE_VARIANTS, VARIANTS
from vzero_trl.mini.world import WORLDS


FULL = {"worlds": list(WORLDS), "variants": list(VARIANTS), "pairs": [0, 1, 2, 3, 4], "seeds": [0, 1]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/mini", help="Where results, pictures and runs are written.")
    parser.add_argument(
        "--worlds",
        nargs="+",
        choices=WORLDS,
        help="Toy worlds (default: letter prior; all three with --pilot or --full).",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        help=f"Default: {' '.join(CORE_VARIANTS)} (run in every cell); the others run in the first seed's cells.",
    )
    parser.add_argument("--pairs", nargs="+", type=int, help="Pair seeds (default: 0 1).")
    parser.add_argument("--seeds", nargs="+", type=int, help="Run seeds per pair (default: 0).")
    parser.add_argument("--full", action="store_true", help="The committed grid: " + str(FULL))
    parser.add_argument(
        "--pilot",
        action="store_true",
        help=f"Run plain OPD at lr {PILOT_LEARNING_RATES} on pilot pairs {PILOT_PAIRS} and apply the rule.",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="Report the grid's finished runs only (no training); the missing runs are listed.",
    )
    parser.add_argument(
        "--learning_rate",
        type=float,
        help="Replace the rule's learning rate of every world: a sensitivity run, in its own --output_dir.",
    )
    parser.add_argument("--workers", type=int, default=2, help="Parallel runs, one CPU thread each.")
    parser.add_argument("--cache_dir", default=None, help="Trained pairs (default: OUTPUT_DIR/models).")
    parser.add_argument("--overwrite", action="store_true", help="Discard runs made with other settings.")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # CPU torch thrashes with more threads on small machines
    grid = FULL if args.full else {"worlds": ["letter", "prior"], "variants": list(CORE_VARIANTS), "pairs": [0, 1]}
    if args.pilot:
        worlds = tuple(args.worlds or WORLDS)
        result = pilot(
            args.output_dir, worlds, workers=args.workers, cache_dir=args.cache_dir, overwrite=args.overwrite
        )
        print(open(os.path.join(args.output_dir, "pilot.md")).read())
        for world in worlds:
            print(f"{world}: the rule chooses lr {result[world]['learning_rate']:g}")
        return
    worlds = tuple(args.worlds or grid["worlds"])
    reproduce(
        args.output_dir,
        worlds=worlds,
        variants=tuple(args.variants or grid["variants"]),
        pair_seeds=tuple(args.pairs or grid["pairs"]),
        run_seeds=tuple(args.seeds or grid.get("seeds", [0])),
        workers=args.workers,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
        run_missing=not args.report,
        learning_rate=args.learning_rate,
    )
    print(open(os.path.join(args.output_dir, "results.md")).read())
    print(f"Wrote results.json, results.md and the pictures to {args.output_dir}")


if __name__ == "__main__":
    main()
