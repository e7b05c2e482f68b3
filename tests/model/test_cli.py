"""The CLI contract the benchmarks rely on: the last line of `train` is one JSON object."""
import json
import subprocess
import sys
from pathlib import Path

from model import checkpoint, decoding

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run([sys.executable, "-m", "model", *args], capture_output=True, text=True, cwd=ROOT)


def test_train_on_random_data_writes_a_checkpoint_and_ends_with_json(tmp_path):
    out = tmp_path / "copy.pt"
    proc = run("train", "--data", "random", "--no-attention", "--steps", "20", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 20 and summary["eval_size"] == 10_000
    assert {"train_seconds", "total_seconds", "seq_acc"} <= set(summary)
    decoded = run("decode", "--checkpoint", str(out), "--prefix", "7,2", "--k", "2")
    answer = json.loads(decoded.stdout)
    assert answer["sequence"][:2] == [7, 2] and len(answer["topk"]) == 2


def test_train_from_a_job_body_and_from_a_corpus_file(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"dataset": {"sequences": [[1, 2, 3, 4, 5]] * 3},
                               "model": {"attention": False, "hidden_dim": 8}, "training": {"steps": 5},
                               "activate": "if_better", "name": "offline"}))  # read, and checked, as POST /jobs does
    proc = run("train", "--job", str(job))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 5 and "top1_agreement" in summary and summary["attention"] is False


def test_a_job_body_is_refused_offline_as_the_service_refuses_it(tmp_path):
    job = tmp_path / "job.json"
    for body, words in (({"dataset": {"sequences": [[1, 2, 3, 4, 5], [1, 2, 3, 4, 12]]}},
                         "dataset.sequences[1][4]: token 12 is outside the vocabulary 0..9"),
                        ({"dataset": {"generator": "random"}, "model": {"hidden_dim": 513}}, "model.hidden_dim"),
                        ({"dataset": {"generator": "random"}, "activate": "sometimes"}, "activate")):
        job.write_text(json.dumps(body))
        proc = run("train", "--job", str(job))
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr


def test_bad_input_gives_a_clear_error_and_exit_code_2(tmp_path):
    corpus = tmp_path / "bad.json"
    corpus.write_text(json.dumps([[1, 2, 3, 4, 5], [1, 2, 3, 4, 12]]))
    proc = run("train", "--data", str(corpus), "--steps", "2")
    assert proc.returncode == 2
    assert "sequence 1 has token 12" in proc.stderr


def test_decode_reads_one_prefix_per_line_and_writes_json_lines(tmp_path):
    weights = ROOT / "weights" / "default.pt"
    source = tmp_path / "prefixes.txt"
    source.write_text("7\n7,2\n\n1 2 3\n")
    proc = run("decode", "--checkpoint", str(weights), "--input", str(source), "--k", "2")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["prefix"] for r in rows] == [[7], [7, 2], [1, 2, 3]]
    model = checkpoint.load(weights).model
    for r in rows:
        assert r["sequence"] == decoding.greedy(model, [r["prefix"]])[0].sequence
        assert [c["sequence"] for c in r["topk"]] == [c.sequence for c in decoding.topk(model, [r["prefix"]], 2)[0]]
    source.write_text("7\n7,12\n")
    proc = run("decode", "--checkpoint", str(weights), "--input", str(source))
    assert proc.returncode == 2 and "prefix 2 [7, 12]: token 12 is outside" in proc.stderr
