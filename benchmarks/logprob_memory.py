"""Benchmark (c): peak memory of sampled-token log-probabilities, chunked vs full logits, forward and backward.

    OMP_NUM_THREADS=1 python benchmarks/logprob_memory.py --output benchmarks/results/logprob_memory.json

T = 2,048 completion tokens and V = 248,320 (Qwen3.5's vocabulary), hidden size 128, float32, with a gradient to both
the hidden states and the `lm_head` (the student's case). `full` projects every token onto the whole vocabulary
(`log_softmax(h @ W.T)` then a gather); `chunked` is `vzero_trl.scoring.completion_logps`, which never holds a
`(T x V)` tensor. Each mode runs in its own process, because a process's peak RSS only grows; the peak is measured above
the RSS after the inputs are allocated. Both modes' log-probabilities and gradients are compared.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


T, V, H = 2048, 248_320, 128


def run_mode(mode: str, dump: Path) -> None:
    from vzero_trl.scoring import completion_logps

    torch.manual_seed(0)
    torch.set_num_threads(1)
    hidden = torch.randn(1, T, H, requires_grad=True)
    lm_head = torch.nn.Linear(H, V, bias=False)
    torch.nn.init.normal_(lm_head.weight, std=0.05)
    targets = torch.randint(0, V, (1, T))
    mask = torch.ones(1, T, dtype=torch.long)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if mode == "full":
        logps = torch.log_softmax(hidden @ lm_head.weight.T, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    else:
        logps, _ = completion_logps(hidden, lm_head, targets, mask)
    logps.sum().backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.save({"logps": logps.detach(), "grad_hidden": hidden.grad, "grad_weight": lm_head.weight.grad}, dump)
    print(json.dumps({"mode": mode, "peak_mib": round((peak - baseline) / 1024), "seconds": round(seconds, 2)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/logprob_memory.json"))
    parser.add_argument("--mode", choices=["full", "chunked"], help="Run one mode in this process (internal).")
    parser.add_argument("--dump", type=Path)
    args = parser.parse_args()
    if args.mode:
        run_mode(args.mode, args.dump)
        return
    results, tensors = {}, {}
    for mode in ("full", "chunked"):
        dump = args.output.parent / f"logprob_{mode}.pt"
        args.output.parent.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--dump", str(dump)], capture_output=True, text=True, check=True
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        tensors[mode] = torch.load(dump)
        dump.unlink()
    summary = {
        "T": T,
        "V": V,
        "H": H,
        "fp32_logits_mib": round(T * V * 4 / 2**20),
        "full": results["full"],
        "chunked": results["chunked"],
        "memory_ratio": round(results["chunked"]["peak_mib"] / results["full"]["peak_mib"], 3),
        "max_abs_logp_diff": float((tensors["full"]["logps"] - tensors["chunked"]["logps"]).abs().max()),
        "grad_weight_rel_diff": float(
            (tensors["full"]["grad_weight"] - tensors["chunked"]["grad_weight"]).norm()
            / tensors["full"]["grad_weight"].norm()
        ),
    }
    print(json.dumps(summary))
    args.output.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
