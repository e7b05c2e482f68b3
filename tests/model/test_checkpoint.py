"""Checkpoints: a round trip keeps everything; anything doubtful is refused with the file named."""
import io
import os
import pickle
from pathlib import Path

import pytest
import torch

from model import checkpoint, decoding
from model.checkpoint import CheckpointError
from model.config import ModelConfig
from model.network import Seq2Seq


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(attention=True, hidden_dim=24)).eval()
    path = tmp_path / "m.pt"
    checkpoint.save(path, model, {"accuracy": 0.5}, {"steps": 7}, {"kind": "random"}, [{"step": 7}], name="x")
    return model, path


def test_round_trip_restores_the_model_and_everything_stored_with_it(saved):
    model, path = saved
    ckpt = checkpoint.load(path)
    assert ckpt.config == model.config
    assert ckpt.metrics == {"accuracy": 0.5} and ckpt.train_config == {"steps": 7}
    assert ckpt.data == {"kind": "random"} and ckpt.history == [{"step": 7}] and ckpt.name == "x"
    for a, b in zip(model.state_dict().values(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b)
    assert decoding.topk(ckpt.model, [[3]], 4) == decoding.topk(model, [[3]], 4)
    assert path.with_name("m.pt.sha256").read_text().split()[0] == ckpt.sha256


def test_writes_leave_no_temporary_files(saved):
    _, path = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.pt", "m.pt.sha256"]


def test_a_corrupt_file_is_refused(saved):
    _, path = saved
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match=r"m\.pt.*does not match the manifest"):
        checkpoint.load(path)


def test_a_truncated_file_is_refused(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        checkpoint.load(path)


def test_a_missing_manifest_is_refused(saved):
    _, path = saved
    path.with_name("m.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match=r"manifest m\.pt\.sha256 is missing"):
        checkpoint.load(path)


def _rewrite(path: Path, payload) -> None:
    """Tamper with a checkpoint and forge its manifest, so only the content checks can catch it."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    checkpoint.atomic_write(path, buf.getvalue())
    import hashlib
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(buf.getvalue()).hexdigest() + "  m.pt\n")


def test_a_wrong_format_version_is_refused(saved):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    _rewrite(path, payload)
    with pytest.raises(CheckpointError, match="format version 99; this build reads version 1"):
        checkpoint.load(path)


def test_tampered_weights_that_do_not_fit_the_configuration_are_refused(saved):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["hidden_dim"] = 32
    _rewrite(path, payload)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        checkpoint.load(path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/seq2seq-pwned",))


def test_loading_never_executes_code(saved):
    _, path = saved
    Path("/tmp/seq2seq-pwned").unlink(missing_ok=True)
    blob = pickle.dumps({"format_version": 1, "evil": Exploit()})
    buf = io.BytesIO()
    torch.save({"format_version": 1}, buf)  # a real archive, then swap its pickle for the exploit
    import zipfile
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, blob if item.filename.endswith("data.pkl") else src.read(item))
    checkpoint.atomic_write(path, out.getvalue())
    import hashlib
    path.with_name("m.pt.sha256").write_text(hashlib.sha256(out.getvalue()).hexdigest() + "  m.pt\n")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(path)
    assert not Path("/tmp/seq2seq-pwned").exists()


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.pt: cannot be read"):
        checkpoint.load(tmp_path / "nothing.pt")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("vocab_size", 2**31, r"model_config\.vocab_size must be in \[2, 1000\], got 2147483648"),
    ("embedding_dim", 2**31, r"model_config\.embedding_dim must be in \[1, 512\], got 2147483648"),
    ("hidden_dim", 513, r"model_config\.hidden_dim must be in \[1, 512\], got 513"),
    ("seq_length", 10**9, r"model_config\.seq_length must be in \[2, 64\]"),
    ("vocab_size", 10.0, r"model_config\.vocab_size must be an integer, got float"),
    ("attention", "yes", r"model_config\.attention must be true or false"),
])
def test_a_tampered_configuration_beyond_the_limits_is_refused_before_anything_is_built(saved, field, value, message):
    """A forged manifest passes the hash; the configuration is refused by its bounds, not by an allocation
    (2^31 embeddings of 16 floats would be 128 GiB, so a build attempt could not end in this message)."""
    _, path = saved
    payload = torch.load(path, weights_only=True)
    payload["model_config"][field] = value
    _rewrite(path, payload)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(path)


def test_a_corpus_is_kept_beside_the_weights_and_outside_the_data_description(saved, tmp_path):
    model, path = saved
    assert checkpoint.load(path).corpus_sequences() is None  # a file without one says so
    corpus = [[7, 2, 8, 4, 3], [7, 2, 8, 4, 3], [1, 0, 9, 1, 1]]
    checkpoint.save(tmp_path / "c.pt", model, {}, data={"kind": "corpus", "sequences": 3}, corpus=corpus)
    ckpt = checkpoint.load(tmp_path / "c.pt")
    assert ckpt.corpus_sequences() == corpus and ckpt.data == {"kind": "corpus", "sequences": 3}
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    payload["corpus"] = torch.tensor([[7, 2, 8, 4, 12]], dtype=torch.int16)  # a token outside the vocabulary
    buf = io.BytesIO()
    torch.save(payload, buf)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(buf.getvalue())
    checkpoint.manifest_path(bad).write_text(f"{__import__('hashlib').sha256(buf.getvalue()).hexdigest()}  bad.pt\n")
    with pytest.raises(CheckpointError, match="corpus does not fit"):
        checkpoint.load(bad)
