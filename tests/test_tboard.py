"""tboard.py: newest run, free port, and the message when there is no run."""

import os
import socket
import time

import tboard


def test_no_run_is_a_clear_error(tmp_path, capsys):
    assert tboard.main(["--log_dir", str(tmp_path / "logs")]) == 2
    assert "no run folder found" in capsys.readouterr().err


def test_newest_run_is_chosen(tmp_path, capsys):
    old, new = tmp_path / "toyfaces_0101_000000", tmp_path / "toyfaces_0102_000000"
    old.mkdir()
    new.mkdir()
    past = time.time() - 100
    os.utime(old, (past, past))
    assert tboard.newest_run(tmp_path) == new
    assert tboard.main(["--log_dir", str(tmp_path), "--print_only"]) == 0
    out = capsys.readouterr().out
    assert str(new) in out and "--logdir" in out


def test_taken_port_is_skipped():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        sock.listen(1)
        taken = sock.getsockname()[1]
        assert tboard.free_port(taken) != taken
