"""Peak memory and time of `InfEmbedModel.from_backbone` against the former way of building the model.

The former `from_backbone` (before commit afbd4e9) built `InfEmbedModel(config)` with a fully materialised, randomly
initialised encoder, then loaded the pretrained encoder and dropped the random one: twice the backbone's weights at
the peak, and the time to initialise them. Today's builds the wrapper on the meta device and loads the pretrained
encoder once. The former code is reproduced here (`former_from_backbone`) as the baseline measured in the same run.

Setup: a randomly initialised backbone of real size (default BERT-base: 110M parameters; `--backbone qwen2-0.5b` for
a Qwen2 of ~0.5B), saved as float32 safetensors to a temporary folder, so that the former `dtype="auto"` and today's
float32 load the same dtype and only the random encoder differs. Each build runs in a fresh subprocess, the two
alternating; peak RSS is the subprocess's high-water mark (VmHWM) when the call returns, and the build's own share is
that peak less the RSS after imports. transformers memory-maps the checkpoint and reads each weight when it is first
used, so the RSS once every weight has been read (as after a first training step) is printed too: there the two
agree, since the former's random encoder is gone by then. Prints both, and the ratio (today / former).

    .venv/bin/python benchmarks/bench_from_backbone.py [--backbone bert-base|qwen2-0.5b] [--repeats 2]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

BACKBONES = {
    "bert-base": dict(
        model_type="bert",
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    ),
    "qwen2-0.5b": dict(
        model_type="qwen2",
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    ),
}

# Run in a fresh interpreter: argv = [mode, backbone folder]; prints one JSON line.
CHILD = r"""
import json, sys, time

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from infembed_model import InfEmbedConfig, InfEmbedModel
from infembed_model.modeling_infembed import _without_pooler


def former_from_backbone(path):
    # InfEmbedModel.from_backbone as it was before commit afbd4e9 (pooling aside, which costs no memory).
    backbone_config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = InfEmbedConfig(encoder_config=backbone_config, pad_token_id=tokenizer.pad_token_id, pooling="mean")
    if hasattr(config.encoder_config, "use_cache"):
        config.encoder_config.use_cache = False
    model = InfEmbedModel(config)  # a random encoder, materialised and initialised ...
    model.encoder = _without_pooler(  # ... then replaced
        AutoModel.from_pretrained(path, config=config.encoder_config, dtype="auto")
    )
    model.tokenizer = tokenizer
    return model


def status(field):
    # VmRSS: resident now; VmHWM: the most resident so far. Both belong to this process's own memory (ru_maxrss
    # would also count the parent's, kept across exec).
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


mode, path = sys.argv[1], sys.argv[2]
before = status("VmRSS")
start = time.perf_counter()
model = former_from_backbone(path) if mode == "former" else InfEmbedModel.from_backbone(path)
seconds = time.perf_counter() - start
peak = status("VmHWM")
after = status("VmRSS")
# transformers maps the checkpoint and reads a weight when it is first used: read every weight, as a first step does.
with torch.no_grad():
    for parameter in model.parameters():
        parameter.sum()
print(json.dumps({"before": before, "peak": peak, "after": after, "used": status("VmRSS"), "seconds": seconds,
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "dtype": str(next(model.parameters()).dtype)}))
"""


def write_backbone(folder: str, name: str) -> None:
    """A random backbone of the given shape with a word-level tokenizer, saved as float32 safetensors."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

    settings = dict(BACKBONES[name])
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    torch.manual_seed(0)
    AutoModel.from_config(config, dtype=torch.float32).save_pretrained(folder)
    vocab = {"[PAD]": 0, "[UNK]": 1, "[SEP]": 2, **{f"w{i}": i + 3 for i in range(1000)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", eos_token="[SEP]"
    ).save_pretrained(folder)


def measure(mode: str, folder: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, folder], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} build failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="bert-base")
    parser.add_argument("--repeats", type=int, default=2, help="builds of each kind, alternating")
    args = parser.parse_args()

    runs = {"former": [], "today": []}
    with tempfile.TemporaryDirectory() as folder:
        write_backbone(folder, args.backbone)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".safetensors"))
        for _ in range(args.repeats):
            for mode in runs:
                runs[mode].append(measure(mode, folder))

    def mib(n: float) -> str:
        return f"{n / 2**20:7.0f} MiB"

    first = runs["today"][0]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(
        f"backbone: random {args.backbone}, {first['parameters'] / 1e6:.0f}M parameters, "
        f"{size / 2**20:.0f} MiB of float32 safetensors; loaded as {first['dtype']} by both"
    )
    summary = {}
    for mode, label in (("former", "former (random encoder, then load)"), ("today", "today (meta wrapper, load)")):
        peak = min(r["peak"] for r in runs[mode])
        build = min(r["peak"] - r["before"] for r in runs[mode])
        seconds = min(r["seconds"] for r in runs[mode])
        summary[mode] = (peak, build, seconds)
        all_peaks = ", ".join(mib(r["peak"]).strip() for r in runs[mode])
        used = min(r["used"] for r in runs[mode])
        print(
            f"{label:36s} peak RSS {mib(peak)} (runs: {all_peaks}), of which the build {mib(build)}, "
            f"time {seconds:5.1f} s; RSS once every weight is read {mib(used)}"
        )
    (peak_f, build_f, sec_f), (peak_t, build_t, sec_t) = summary["former"], summary["today"]
    print(
        f"ratio today / former: peak RSS {peak_t / peak_f:.2f}x, the build's share {build_t / build_f:.2f}x, "
        f"time {sec_t / sec_f:.2f}x"
    )


if __name__ == "__main__":
    main()
