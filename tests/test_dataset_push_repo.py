"""`infir push-repo`: the dry run lists files and checks the card offline; the upload goes through
`HfApi.create_repo` + `HfApi.upload_folder` with an allow-list of the repo format (observed, since the Hub is
unreachable here); a file holding a token-shaped string is never sent."""

import json
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from infir_rows import public_row

from infir_dataset.build_repo import build_repo
from infir_dataset.cli import main as infir_main
from infir_dataset.push_repo import ALLOW_PATTERNS, upload_files

SECRET = "hf_THISISASECRETTOKENVALUE1234567890"


@pytest.fixture
def repo(tmp_path):
    records = tmp_path / "records.jsonl"
    rows = [public_row(i) for i in range(12)] + [{**public_row(99), "query_negative": ""}]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "repo"
    build_repo([records], out)
    assert (out / "rejects.jsonl").read_text()
    return out


def test_dry_run_lists_files_checks_card_and_never_prints_the_token(repo, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert infir_main(["push-repo", str(repo), "--repo-id", "me/inf-ir", "--dry-run", "--private"]) == 0
    out = capsys.readouterr()
    assert "data/msmarco-00000-of-00001.parquet" in out.out
    assert "triplets/hard_negative-00000-of-00001.parquet" in out.out
    assert "README.md" in out.out
    listed = out.out.split("not uploaded")[0]
    assert (
        "rejects.jsonl" not in listed and "not uploaded (not part of the dataset repo format): rejects.jsonl" in out.out
    )
    assert "card metadata OK" in out.out and "(private)" in out.out
    size = (repo / "data/msmarco-00000-of-00001.parquet").stat().st_size
    assert f"{size / 1024:.1f} KB" in out.out
    assert SECRET not in out.out + out.err


def test_upload_files_skip_rejects(repo):
    files = [p.as_posix() for p in upload_files(repo)]
    assert "rejects.jsonl" not in files and "README.md" in files


def test_upload_files_are_the_repo_format_only_and_the_rest_is_named(repo, capsys):
    """An allow-list (README.md and the Parquet shards of each config): stray files, pickles, a clone's .git and
    huggingface_hub's own cache stay local, and the dry run names them."""
    strays = (".git/config", ".git/HEAD", "data/.cache/huggingface/upload/x.lock", "notes/README.txt", "model.pickle")
    for extra in strays:
        (repo / extra).parent.mkdir(parents=True, exist_ok=True)
        (repo / extra).write_text("x")
    files = [p.as_posix() for p in upload_files(repo)]
    assert files and all(f == "README.md" or f.endswith(".parquet") for f in files)
    assert infir_main(["push-repo", str(repo), "--repo-id", "me/inf-ir", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    left_out = printed.split("not uploaded (not part of the dataset repo format): ")[1].splitlines()[0]
    assert left_out.split(", ") == [
        ".git/ (2 files)",
        "data/.cache/huggingface/upload/x.lock",
        "model.pickle",
        "notes/ (1 file)",
        "rejects.jsonl",
    ]


def test_a_token_in_any_uploaded_file_stops_the_push(repo, capsys, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    calls = []
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(kw))
    shard = next((repo / "data").glob("*.parquet"))
    table = pq.read_table(shard)
    passages = table["document_positive"].to_pylist()
    passages[3] += f" (my key is {SECRET})"
    pq.write_table(
        table.set_column(table.schema.get_field_index("document_positive"), "document_positive", pa.array(passages)),
        shard,
    )
    for argv in (["--dry-run"], []):
        assert infir_main(["push-repo", str(repo), "--repo-id", "me/inf-ir", *argv]) == 1
        err = capsys.readouterr().err
        assert f"{shard}: contains a string shaped like a Hugging Face token" in err
        assert SECRET not in err and len(err.strip().splitlines()) == 1
    assert calls == []


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda r: (r / "README.md").unlink(), "README.md: missing"),
        (lambda r: [p.unlink() for p in (r / "triplets").iterdir()], "no file matches triplets/positive-*"),
        (
            lambda r: (r / "README.md").write_text((r / "README.md").read_text().replace("- text-retrieval\n", "")),
            "metadata lacks task_categories",
        ),
        (  # the Hub's card spec: `other` names its terms
            lambda r: (r / "README.md").write_text(
                (r / "README.md").read_text().replace("license_name: ms-marco\n", "")
            ),
            "license: other needs license_name and license_link",
        ),
    ],
)
def test_dry_run_catches_a_broken_card(repo, capsys, breakage, message):
    breakage(repo)
    assert infir_main(["push-repo", str(repo), "--repo-id", "me/inf-ir", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bad_repo_id(repo, capsys):
    assert infir_main(["push-repo", str(repo), "--repo-id", "just-a-name", "--dry-run"]) == 1
    assert "ORG/NAME" in capsys.readouterr().err


def test_upload_calls_create_repo_and_upload_folder_without_rejects(repo, capsys, monkeypatch):
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)

    def upload_folder(self, **kwargs):
        calls["upload_folder"] = kwargs
        staged = Path(kwargs["folder_path"])
        calls["uploaded"] = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
        calls["card"] = (staged / "README.md").read_text()
        return "https://huggingface.co/datasets/me/inf-ir/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    local_card = (repo / "README.md").read_text()
    assert 'load_dataset("InF-IR/InF-IR")' in local_card  # built with the default --repo-id
    assert infir_main(["push-repo", str(repo), "--repo-id", "me/inf-ir", "--private"]) == 0
    repo_id, kwargs = calls["create_repo"]
    assert repo_id == "me/inf-ir" and kwargs["repo_type"] == "dataset" and kwargs["private"] is True
    assert kwargs["exist_ok"] is True
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "me/inf-ir" and upload["repo_type"] == "dataset"
    assert calls["uploaded"] == [p.as_posix() for p in upload_files(repo)]
    # The published card's snippets load the repo it is published in; the built folder is left as it was.
    assert 'load_dataset("me/inf-ir")' in calls["card"] and 'load_dataset("me/inf-ir", "triplets")' in calls["card"]
    assert 'load_dataset("InF-IR/InF-IR"' not in calls["card"]
    assert calls["card"].replace("me/inf-ir", "InF-IR/InF-IR") == local_card
    assert (repo / "README.md").read_text() == local_card
    assert not [p for p in repo.parent.iterdir() if p.name.startswith(".repo-push-")]  # staging removed
    assert upload["allow_patterns"] == ALLOW_PATTERNS and "ignore_patterns" not in upload
    assert "data/*.parquet" in upload["delete_patterns"]  # stale shards of an earlier push go away
    printed = capsys.readouterr().out
    assert "uploaded" in printed and "not uploaded (not part of the dataset repo format): rejects.jsonl" in printed


def test_upload_failure_is_one_line(repo, capsys):
    # HF_HUB_OFFLINE=1 in the tests: huggingface_hub refuses the request, which must come out as one clean line.
    assert infir_main(["push-repo", str(repo), "--repo-id", "me/inf-ir"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("infir: error: upload to me/inf-ir failed") and len(err.strip().splitlines()) == 1
