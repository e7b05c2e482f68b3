"""The management key (issue 15, items 13 and 15): short keys and the example's placeholder are refused at start
naming where they came from, a trailing newline is dropped, and a key file appears whole or not at all, even
when the disk fills up while it is written."""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import yaml

from app.security import KEY_FILE, MIN_KEY_LENGTH, KeyRefused, checked_key, resolve_key
from tests.conftest import ROOT

GOOD = "k" * MIN_KEY_LENGTH


@pytest.mark.parametrize("key,why", [
    ("short-key", "9 characters"),
    ("k" * (MIN_KEY_LENGTH - 1), f"{MIN_KEY_LENGTH - 1} characters"),
    ("CHANGE-ME", "placeholder"),
    ("CHANGE-ME\n", "placeholder"),
    (yaml.safe_load((ROOT / "deploy/k8s/secret.example.yaml").read_text())["stringData"]["api-key"], "placeholder"),
    (" " + GOOD, "whitespace"),
])
def test_a_weak_key_is_refused_naming_the_setting(tmp_path, key, why):
    with pytest.raises(KeyRefused, match=why) as refused:
        resolve_key(key, "key", tmp_path)
    assert str(refused.value).startswith("SEQ2SEQ_API_KEY")


def test_a_trailing_newline_is_dropped():
    assert checked_key(GOOD + "\n", "SEQ2SEQ_API_KEY") == GOOD.encode()
    assert checked_key(GOOD + "\r\n", "SEQ2SEQ_API_KEY") == GOOD.encode()


def test_a_short_key_file_is_refused_naming_the_file(tmp_path):
    (tmp_path / KEY_FILE).write_text("abc\n")
    with pytest.raises(KeyRefused, match="3 characters") as refused:
        resolve_key(None, "key", tmp_path)
    assert KEY_FILE in str(refused.value)


def test_the_server_refuses_to_start_with_a_short_key_and_says_why(make_server):
    srv = make_server(SEQ2SEQ_API_KEY="bench")
    srv.data_dir.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, env=srv.env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "refusing to start: SEQ2SEQ_API_KEY has 5 characters" in done.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/healthz", timeout=2)


FILL_DISK = """
import resource, signal, sys
from pathlib import Path
from app.security import resolve_key
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
resolve_key(None, "key", Path(sys.argv[1]))
"""


@pytest.mark.parametrize("room", [0, 10])  # no byte fits; a short write of 10 bytes, then EFBIG
def test_a_full_disk_at_first_start_leaves_no_key_file_and_no_temporary_file(tmp_path, room):
    done = subprocess.run([sys.executable, "-c", FILL_DISK, str(tmp_path), str(room)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "cannot write a new API key" in done.stderr and "SEQ2SEQ_API_KEY" in done.stderr
    assert list(tmp_path.iterdir()) == []  # neither a half-written key nor a stray temporary file
    key = resolve_key(None, "key", tmp_path)  # with room again, the next start makes a whole key
    assert len(key) >= MIN_KEY_LENGTH and (tmp_path / KEY_FILE).read_bytes() == key + b"\n"
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]
