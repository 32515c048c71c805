"""lmms-eval hooks of the ZoomBench task: the question layout and the scoring of `vzero_trl` (no lmms-eval import)."""

from vzero_trl.eval.answers import aggregate, score_item
from vzero_trl.eval.tasks import EvalItem, item_fields
from vzero_trl.images import to_rgb


def doc_to_visual(doc):
    return [to_rgb(doc["image"])]  # RGBA images flattened onto white, as vzero_trl does


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return item_fields("zoombench", doc)["question"]


def doc_to_target(doc):
    return item_fields("zoombench", doc)["answer"]


def process_results(doc, results):
    fields = item_fields("zoombench", doc)
    verdict = score_item(EvalItem("zoombench", str(doc.get("id", "")), None, **fields), results[0] if results else "")
    return {"zoombench_acc": {"correct": verdict["correct"], "kind": fields["kind"], "category": None, "group": None}}


def aggregate_results(results):
    return aggregate("zoombench", results)["score"]
