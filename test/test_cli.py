"""The `stocks` command line refuses bad numbers as usage errors (exit 2), before it starts
anything: no OverflowError from a socket, no server started with a silent default."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stocks.cli import build_parser

BAD = [
    (["serve", "--port", "-1"], "must be a port from 1 to 65535"),
    (["serve", "--port", "0"], "must be a port from 1 to 65535"),
    (["serve", "--port", "70000"], "must be a port from 1 to 65535"),
    (["serve", "--port", "99999"], "must be a port from 1 to 65535"),
    (["serve", "--workers", "0"], "--workers: 0: must be at least 1"),
    (["serve", "--workers", "-2"], "must be at least 1"),
    (["worker", "--concurrency", "0"], "--concurrency: 0: must be at least 1"),
    (["worker", "--concurrency", "-3"], "must be at least 1"),
    (["worker", "--metrics-port", "99999"], "or 0 (off)"),
    (["worker", "--health-port", "-1"], "or 0 (off)"),
    (["autoscale", "--health-port", "65536"], "or 0 (off)"),
    (["run", "--port", "70000"], "must be a port from 1 to 65535"),
    (["run", "--port", "5e3"], "'5e3' is not a whole number"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_number_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["serve", "--port", "65535", "--workers", "1"], "port", 65535),
        (["worker", "--metrics-port", "0"], "health_port", 0),  # 0: off, as documented
        (["worker", "--concurrency", "1"], "concurrency", 1),
        (["run", "--port", "1"], "port", 1),
    ],
)
def test_the_edges_of_each_range_are_accepted(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


def test_the_command_says_so_in_one_line_without_a_traceback():
    run = subprocess.run(
        [sys.executable, "-m", "stocks.cli", "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines()[-1] == (
        "stocks serve: error: argument --port: 99999: must be a port from 1 to 65535"
    )
    assert "Traceback" not in run.stderr
