"""Score a checkpoint (base or trained) on the paper's Table 1 benchmarks and print the table beside the paper's rows.

Table 1 of the paper for Qwen/Qwen3.5-4B, on a GPU machine (about 33K questions; vLLM is much faster than
transformers):

    python scripts/evaluate.py --model Qwen/Qwen3.5-4B --output_dir eval/qwen3.5-4b --backend vllm --dtype bfloat16 \
        --judge_model Qwen/Qwen3-30B-A3B-Instruct-2507

A quick look at a trained checkpoint (greedy, 50 questions per benchmark, local copies of the benchmarks):

    python scripts/evaluate.py --model outputs/vzero-qwen3.5-4b-27b --output_dir eval/trial --protocol greedy \
        --limit 50 --data_dir benchmarks_data

The scores of a trained model, published to its Hub repository (`.eval_results/` files the model page and the
benchmarks' leaderboards show, and the card's `model-index`):

    python scripts/evaluate.py --model outputs/vzero-qwen3.5-4b-27b --output_dir eval/vzero-4b --backend vllm \
        --dtype bfloat16 --push_to_hub --hub_model_id <you>/vzero-qwen3.5-4b

Rerunning the same command resumes: questions already in `output_dir/predictions.jsonl` are not asked again (a rerun
with another model, data or generation settings is refused; `--overwrite` starts over). Every flag
is a field of `vzero_trl.eval.evaluate.EvaluateConfig`; `--config settings.yaml` reads them from a file.
"""

from trl import TrlParser

from vzero_trl.eval.evaluate import EvaluateConfig, evaluate, report
from vzero_trl.quiet import silence_unactionable_warnings


if __name__ == "__main__":
    silence_unactionable_warnings()
    (config,) = TrlParser((EvaluateConfig,)).parse_args_and_config()
    summary = evaluate(config)
    print(report(summary))
    if config.push_to_hub:
        print(f"Published the scores to {config.hub_model_id}: {summary['hub_commit']}")
