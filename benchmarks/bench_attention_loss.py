"""Cost of the l_I objective with `combine="attention"`: one training step (forward + backward) with loss terms P,I
against P alone, and against the former all-pairs l_I, on the same model and the same batch.

l_I scores, for each triple i, its own query under K other instructions of the batch. Today the model samples
K = `num_instruction_negatives` instructions per triple (the collator's `negative_instruction_index`) and reruns only
the parameter-free cross-attention, on [N, K, L_instruction, d] hidden states. Until 2026-12-02 it scored every
instruction of the batch with every query, an [N, N, L_instruction, d] tensor; that formulation is reproduced here
(`all_pairs_loss`, the former code) as the baseline measured in the same run.

Setup: a random BERT (default hidden 384, 2 layers) with a word-level tokenizer, 32 InF-IR rows = 96 triples,
instructions of 128 tokens, queries of 16, passages of 64, collated by the model's own collator; a step is forward +
backward (no optimiser). Runs alternate between the three variants, after one warm-up step each; the best time of
each counts. Peak memory is the most that torch held during one step above what it held before it (every allocation
and free, from the profiler's memory events), measured on a separate, untimed step. Prints both, and the ratios to
P alone (target: P,I at most 1.5x the step time of P alone). About 3 minutes on 2 idle cores.

    .venv/bin/python benchmarks/bench_attention_loss.py [--rows 32] [--hidden 384] [--layers 2] [--repeats 2]
"""

import argparse
import json
import os
import platform
import random
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from transformers import BertConfig, PreTrainedTokenizerFast  # noqa: E402

from infembed_model import InfEmbedConfig, InfEmbedModel  # noqa: E402
from infembed_model.modeling_infembed import (  # noqa: E402
    ScoreBlock,
    combine_losses,
    copies_of_positive,
    instruction_query_attention,
    passage_block,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
VOCAB = [f"t{i}" for i in range(2000)]


def make_tokenizer() -> PreTrainedTokenizerFast:
    """One token per word, [CLS] ... [SEP] around every text."""
    vocab = {token: i for i, token in enumerate(SPECIALS + VOCAB)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def make_rows(n: int, instruction_tokens: int, query_tokens: int, passage_tokens: int) -> list[dict[str, str]]:
    """InF-IR rows whose texts tokenize to the given lengths ([CLS] and [SEP] included); I- and Q- are edits of
    I+ and Q+, as in the data."""
    rng = random.Random(0)

    def words(k: int) -> list[str]:
        return rng.choices(VOCAB, k=k - 2)

    def edit(text: list[str]) -> str:
        changed = list(text)
        for position in rng.sample(range(len(changed)), max(1, len(changed) // 10)):
            changed[position] = rng.choice(VOCAB)
        return " ".join(changed)

    rows = []
    for _ in range(n):
        instruction, query = words(instruction_tokens), words(query_tokens)
        rows.append(
            {
                "query_positive": " ".join(query),
                "instruction_positive": " ".join(instruction),
                "document_positive": " ".join(words(passage_tokens)),
                "query_negative": edit(query),
                "instruction_negative": edit(instruction),
                "hard_negative_document_1": " ".join(words(passage_tokens)),
                "hard_negative_document_2": " ".join(words(passage_tokens)),
            }
        )
    return rows


def all_pairs_loss(model: InfEmbedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The former attention-mode loss P + I (multi, one process), l_I over every instruction of the batch:
    `InfEmbedModel.forward` and `_instruction_block_attention` as they were before commit afbd4e9."""
    cfg = model.config
    passages = model.embed(batch["passage_input_ids"], batch["passage_attention_mask"])
    mask_instr, mask_query = batch["instruction_attention_mask"], batch["query_attention_mask"]
    h_instr = model._hidden(batch["instruction_input_ids"], mask_instr)
    h_query = model._hidden(batch["query_input_ids"], mask_query)
    queries = model._finish(instruction_query_attention(h_instr, mask_instr, h_query, mask_query))
    copies = copies_of_positive(batch["pair_ids"], batch["passage_ids"])
    blocks = [passage_block(queries, passages, copies, cfg.similarity_scale)]

    pairs = instruction_query_attention(
        h_instr.unsqueeze(0), mask_instr.unsqueeze(0), h_query.unsqueeze(1), mask_query.unsqueeze(1)
    )  # [N (query i), N (instruction k), d], through [N, N, L_instruction, d]
    pairs = model._finish(pairs)
    logits = cfg.similarity_scale * (pairs * passages.unsqueeze(1)).sum(-1)  # [N, N]
    instruction_ids = batch["instruction_ids"]
    same_instruction = instruction_ids[:, None] == instruction_ids[None, :]
    eye = torch.eye(len(passages), dtype=torch.bool)
    first_occurrence = ~(same_instruction & torch.ones_like(eye).tril(-1)).any(1)
    valid = (~same_instruction & first_occurrence[None, :]) | eye
    blocks.append(ScoreBlock(logits, valid, torch.arange(len(passages))))
    return combine_losses(blocks, "multi")


def variants(model: InfEmbedModel, batch: dict[str, torch.Tensor]) -> dict:
    """name -> a function running one forward + backward."""

    def forward_with(terms: list[str]):
        def step() -> None:
            model.config.loss_terms = terms
            model(**batch).loss.backward()

        return step

    def old() -> None:
        all_pairs_loss(model, batch).backward()

    return {
        "P alone": forward_with(["P"]),
        "P,I (K sampled, main)": forward_with(["P", "I"]),
        "P,I (all pairs, former)": old,
    }


def timed(model: InfEmbedModel, step) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def peak_bytes(model: InfEmbedModel, step) -> int:
    """Most bytes torch held during `step` above what it held before: the running sum of every allocation and free
    the profiler saw (all threads), in time order."""
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(trace)
        with open(trace) as f:
            events = json.load(f)["traceEvents"]
    memory = sorted((e["ts"], e["args"]["Bytes"]) for e in events if e.get("name") == "[memory]")
    live = peak = 0
    for _, size in memory:
        live += size
        peak = max(peak, live)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32, help="InF-IR rows per batch (3 triples each)")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--instruction-tokens", type=int, default=128)
    parser.add_argument("--query-tokens", type=int, default=16)
    parser.add_argument("--passage-tokens", type=int, default=64)
    parser.add_argument("--negatives", type=int, default=5, help="num_instruction_negatives (K)")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per variant, after one warm-up")
    args = parser.parse_args()

    tokenizer = make_tokenizer()
    backbone = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        intermediate_size=4 * args.hidden,
    )
    config = InfEmbedConfig(
        encoder_config=backbone,
        combine="attention",
        loss_terms=["P", "I"],
        num_instruction_negatives=args.negatives,
        query_max_length=max(256, args.instruction_tokens),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = InfEmbedModel(config)
    model.tokenizer = tokenizer
    model.train()
    rows = make_rows(args.rows, args.instruction_tokens, args.query_tokens, args.passage_tokens)
    batch = model.data_collator()(rows)
    n, length = batch["instruction_input_ids"].shape
    k = batch["negative_instruction_index"].shape[1]

    steps = variants(model, batch)
    times = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        timed(model, step)
    for _ in range(args.repeats):  # interleaved, so that machine noise hits every variant
        for name, step in steps.items():
            times[name].append(timed(model, step))
    peaks = {name: peak_bytes(model, step) for name, step in steps.items()}

    base = "P alone"
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, cpu")
    print(
        f"backbone: random BERT, hidden {args.hidden}, {args.layers} layers; batch: {args.rows} rows = {n} triples, "
        f"instructions {length} tokens, queries {batch['query_input_ids'].shape[1]}, "
        f"passages {batch['passage_input_ids'].shape[1]}; K = {k}"
    )
    for name in steps:
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(
            f"{name:26s} step {min(times[name]):6.2f} s (runs: {runs})   peak {peaks[name] / 2**20:8.0f} MiB   "
            f"time x{min(times[name]) / min(times[base]):.2f}, memory x{peaks[name] / peaks[base]:.2f} of P alone"
        )
    pairs_bytes = n * n * length * args.hidden * 4
    print(f"one [N, N, L, d] float32 tensor of the former l_I: {pairs_bytes / 2**20:.0f} MiB")
    ratio = min(times["P,I (K sampled, main)"]) / min(times[base])
    print(f"ratio P,I / P alone (step time): {ratio:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
