"""What `infembed train` measures on held-out InF-IR rows at each evaluation, and the loss curve it draws.

`Trainer.evaluate` runs the model's forward on the eval batches (the eval loss) and hands the embeddings of every
triple (query embeddings [3n, d], passage embeddings [3n, d], in row order: (I+,Q+,P+), (I-,Q+,HN1), (I+,Q-,HN2) for
each row) with each triple's passage id to `compute_metrics`, so the metrics also work under DDP, DeepSpeed and FSDP.
Nothing here encodes: the evaluation's precision and device are Trainer's own flags, which `infembed train` passes
through (`--bf16`/`--fp16` mixed precision, `--bf16_full_eval`/`--fp16_full_eval` to cast the model for evaluation,
`--use_cpu` to keep it on the CPU): the counterpart of `infembed eval --dtype/--device`.
"""

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import EvalPrediction, TrainingArguments


def instruction_metrics(
    queries: torch.Tensor, passages: torch.Tensor, passage_ids: torch.Tensor, batch_rows: int
) -> dict[str, float]:
    """Accuracies of the (instruction, query) embeddings [3n, d] against the passage embeddings [3n, d].

    - `inbatch_top1_accuracy`: in chunks of `batch_rows` rows (the training batch), how often a triple's best
      passage is its own (a copy of its passage text counts as its own, by `passage_ids` [3n]).
    - `p_over_hn1`, `p_over_hn2`: (I+,Q+) scores P+ above HN1, above HN2.
    - `i_over_i_negative`, `i_over_q_negative`: P+ scores higher under (I+,Q+) than under (I-,Q+), than under (I+,Q-).
    - `instruction_negative_accuracy`: the rows where all four hold.
    """
    if len(queries) % 3 or len(queries) != len(passages):
        raise ValueError(f"expected 3 triples per row, got {len(queries)} queries and {len(passages)} passages")
    queries, passages = queries.float(), passages.float()
    hits = []
    for start in range(0, len(queries), 3 * batch_rows):
        chunk = slice(start, start + 3 * batch_rows)
        best = (queries[chunk] @ passages[chunk].T).argmax(1)
        hits.append(passage_ids[chunk][best] == passage_ids[chunk])
    rows = len(queries) // 3
    scores = torch.einsum("nid,njd->nij", queries.view(rows, 3, -1), passages.view(rows, 3, -1))  # [n, triple, passage]
    positive = scores[:, 0, 0]
    checks = {
        "p_over_hn1": positive > scores[:, 0, 1],
        "p_over_hn2": positive > scores[:, 0, 2],
        "i_over_i_negative": positive > scores[:, 1, 0],
        "i_over_q_negative": positive > scores[:, 2, 0],
    }
    metrics = {"inbatch_top1_accuracy": torch.cat(hits).float().mean().item()}
    metrics["instruction_negative_accuracy"] = torch.stack(list(checks.values())).all(0).float().mean().item()
    metrics |= {name: check.float().mean().item() for name, check in checks.items()}
    return metrics


def group_triples_by_row(logits: tuple[torch.Tensor, ...], labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`Trainer(preprocess_logits_for_metrics=...)`: one prediction per dataset row, as `Trainer` counts them.

    `Trainer` truncates the gathered predictions to the number of eval rows, so the per-triple outputs
    ([3b, d] embeddings, [3b] passage ids) are regrouped per row: [b, 3, d], [b, 3, d], [b, 3].
    """
    queries, passages = logits[:2]
    rows = queries.shape[0] // 3
    return queries.view(rows, 3, -1), passages.view(rows, 3, -1), labels.view(rows, 3)


def make_compute_metrics(training: TrainingArguments) -> Callable[[EvalPrediction], dict[str, float]]:
    """`Trainer(compute_metrics=...)` for InF-Embed, with `preprocess_logits_for_metrics=group_triples_by_row` and
    `label_names=["passage_ids"]` (both set by `infembed train`)."""
    # Evaluation batches are gathered in process order, so a chunk of the global batch size is one eval step.
    batch_rows = training.per_device_eval_batch_size * max(training.world_size, 1)

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        queries, passages, passage_ids = (torch.as_tensor(p) for p in prediction.predictions)
        dim = queries.shape[-1]
        return instruction_metrics(
            queries.reshape(-1, dim), passages.reshape(-1, dim), passage_ids.reshape(-1), batch_rows
        )

    return compute_metrics


def plot_loss_curve(log_history: list[dict], path: str | Path) -> Path:
    """Training (and eval) loss per step, and the eval accuracies when there are any, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
        return [step for step, _ in points], [value for _, value in points]

    accuracies = [key for key in ("eval_inbatch_top1_accuracy", "eval_instruction_negative_accuracy") if series(key)[0]]
    fig, axes = plt.subplots(1, 2 if accuracies else 1, figsize=(11 if accuracies else 6, 4), squeeze=False)
    loss_ax = axes[0, 0]
    for key, label in (("loss", "train loss"), ("eval_loss", "eval loss")):
        steps, values = series(key)
        if steps:
            loss_ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
    loss_ax.set(xlabel="step", ylabel="contrastive loss", title="InF-Embed training loss")
    loss_ax.grid(alpha=0.3)
    if loss_ax.get_lines():
        loss_ax.legend()
    if accuracies:
        acc_ax = axes[0, 1]
        for key in accuracies:
            steps, values = series(key)
            acc_ax.plot(steps, values, marker="o", markersize=3, label=key.removeprefix("eval_").replace("_", " "))
        acc_ax.set(xlabel="step", ylabel="accuracy", ylim=(0, 1.02), title="held-out rows")
        acc_ax.grid(alpha=0.3)
        acc_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
