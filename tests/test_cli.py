"""The command line's own errors: a mistake by the operator is a sentence and an exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgeagent.cli import EXIT_ERROR, main


def test_a_drain_timeout_in_the_environment_that_is_no_number_is_named_not_a_traceback(monkeypatch, capsys, tmp_path):
    """EDGEAGENT_DRAIN_TIMEOUT=40s (a duration, as configs write them) in the unit's environment file
    stopped every command, `version` and `validate` too, with a ValueError traceback."""
    monkeypatch.setenv("EDGEAGENT_DRAIN_TIMEOUT", "40s")
    assert main(["version"]) == 0
    assert main(["validate"]) == 0
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == EXIT_ERROR
    assert "error: EDGEAGENT_DRAIN_TIMEOUT: '40s' is not a number of seconds" in capsys.readouterr().err


def test_an_export_to_a_file_that_cannot_be_written_is_refused_before_the_queue_is_read(capsys, tmp_path):
    """`queue export -o` (and `dead-letter export -o`) into a missing directory ended in a
    FileNotFoundError traceback, after the whole export had been read."""
    state = str(tmp_path / "state")
    for verb in (["queue", "export"], ["queue", "dead-letter", "export"]):
        try:
            code = main([*verb, "-o", str(tmp_path / "missing" / "out.jsonl"), "--state-dir", state])
        except SystemExit as exit_:
            code = exit_.code
        assert code not in (0, None)
        assert f"cannot write {tmp_path / 'missing' / 'out.jsonl'}: No such file or directory" in str(code) + \
            capsys.readouterr().err


@pytest.mark.e2e  # runs the CLI in a process of its own
def test_output_into_a_closed_pipe_ends_quietly_not_in_a_traceback():
    """`edgeagent queue peek | head -1`: the reader leaves early, and every verb that prints ended in a
    BrokenPipeError traceback (and another at exit)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        result = subprocess.run([sys.executable, "-m", "edgeagent", "components"], stdout=write, stderr=subprocess.PIPE,
                                text=True, timeout=60)
    finally:
        os.close(write)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    assert result.returncode == 1


def test_a_purge_of_a_queue_that_does_not_exist_is_refused_naming_the_queues(capsys, tmp_path):
    """`queue purge --queue otlphttp/trace --yes` (for otlphttp/traces) purged nothing and exited 0,
    so the operator believed the queue emptied."""
    state = str(tmp_path / "state")
    assert main(["queue", "stats", "--state-dir", state]) == 0  # the embedded default's queues exist
    try:
        code = main(["queue", "purge", "--queue", "otlphttp/trace", "--yes", "--state-dir", state])
    except SystemExit as exit_:
        code = exit_.code
    message = str(code) + capsys.readouterr().err
    assert code not in (0, None), message
    assert "no queue named 'otlphttp/trace'" in message and "otlphttp/traces" in message, message


@pytest.mark.parametrize("argv", [
    ["validate", "--config", "yaml:receivers: {otlp: {bogus: 1}}"],  # a bad config
    ["run", "--config", "missing.yaml"],
    ["--config", "missing.yaml"],  # run, the verb left out
    ["validate", "--no-such-flag"],  # a flag no verb has
    ["--no-such-flag"],
    ["no-such-verb"],
    ["queue", "peek", "many"],  # a value of the wrong type
], ids=["bad config", "missing config", "missing config without a verb", "unknown flag", "unknown flag without a verb",
        "unknown verb", "bad value"])
def test_a_config_or_usage_error_exits_1_as_otelcol_does(argv, capsys):
    """otelcol-contrib exits 1 for every error (its main: `os.Exit(1)` when the cobra command fails),
    a bad config, an unknown flag and an unknown verb alike; edgeagent exited 2, so a wrapper or unit
    that told them apart by code read edgeagent's refusals differently."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 1 and "error" in err.lower(), err


@pytest.mark.parametrize("count", ["0", "-3"])
def test_a_peek_of_no_records_is_refused_not_read_as_every_record(count, capsys, tmp_path):
    """`queue peek 0` peeked every record of every queue, parsed and held at once in the agent (a
    gateway's million-record backlog), and `peek -3` one: a count must be at least 1."""
    state = str(tmp_path / "state")
    try:
        code = main(["queue", "peek", count, "--state-dir", state])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 1 and "at least 1" in err, err
    assert not os.path.exists(state)  # refused before any queue was opened


def test_the_help_of_status_says_what_its_exit_codes_mean(capsys):
    """Scripts and monitoring checks run `edgeagent status`: it exits 3 beside a stopped agent (as
    `systemctl status`), which its help never said."""
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 while the agent runs" in text and "3 when it does not" in text and "1 on an error" in text, text
    assert "--state-dir STATE_DIR the agent's state directory" in text, text


def test_run_makes_the_parser_of_no_other_command_and_a_command_is_made_once_for_its_aliases(capsys):
    """Making all twenty sub-command parsers cost every start 3 ms (edgeagent/cli_commands.py):
    each is made when its command is chosen or its help asked for, and serves its aliases too."""
    from edgeagent.cli import build_parser
    from edgeagent.cli_commands import Commands

    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, Commands)).choices
    assert parser.parse_args(["run", "--state-dir", "/s"]).state_dir == "/s"
    assert [name for name, made in dict.items(commands) if isinstance(made, type(parser))] == ["run"]
    assert commands["print-initial-config"] is commands["print-config"]
    assert main(["help", "print-initial-config"]) == 0
    listed = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["print-config", "--help"])
    assert capsys.readouterr().out == listed
    assert "--mode {redacted,unredacted}" in listed
