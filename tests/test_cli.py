"""The command line teaches its use and runs the README's main job."""

import json

import pytest

from cmcr.cli import build_parser, main
from cmcr.data.store import write_store


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    assert "connect" in capsys.readouterr().out


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out.lower()


def test_store_info_prints_the_manifest(tmp_path, capsys):
    import numpy as np

    rows = np.eye(4, 8, dtype=np.float32)
    write_store(tmp_path / "s", rows, ids=list("abcd"), space="clip", modality="text",
                dtype="float16")
    assert main(["store", "info", str(tmp_path / "s"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info | {"path": None} == info | {
        "path": None, "space": "clip", "modality": "text", "rows": 4, "dim": 8,
        "dtype": "float16", "normalized": True}
    assert info["first_ids"] == ["a", "b", "c"]


def test_store_info_on_a_missing_path_is_a_clear_error(tmp_path, capsys):
    assert main(["store", "info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and "Traceback" not in err


def test_example_runs_offline_and_beats_the_baselines(tmp_path, capsys):
    assert main(["example", "--out", str(tmp_path), "--quiet", "--epochs", "8"]) == 0
    assert "audio -> image" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())["audio_to_image"]
    assert metrics["cmcr"]["R@1"] > metrics["linear_map"]["R@1"] > metrics["chance"]["R@1"]
    assert (tmp_path / "model" / "model.safetensors").is_file()


def _all_parsers(parser, prefix="cmcr"):
    import argparse

    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _all_parsers(child, f"{prefix} {name}")


def test_every_option_of_every_command_has_help():
    import argparse

    from cmcr.cli import build_parser

    missing = [f"{where} {action.option_strings[-1]}"
               for where, parser in _all_parsers(build_parser())
               for action in parser._actions
               if action.option_strings and action.help != argparse.SUPPRESS
               and not (action.help or "").strip()]
    assert not missing, missing


@pytest.mark.parametrize("command", [[], ["demo"], ["connect"], ["serve"], ["embed"], ["inspect"]])
def test_help_does_not_import_torch(command):
    """`cmcr --help` and every command's --help answer without loading torch (it costs seconds)."""
    import subprocess
    import sys

    code = ("import sys\nfrom cmcr.cli import main\n"
            "try:\n    main(sys.argv[1:] + ['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'faiss', 'starlette', 'ray') "
            "if m in sys.modules]\nassert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: cmcr" in result.stdout


def test_the_public_api_loads_on_first_use():
    import cmcr

    assert {"ConnectedModel", "connect", "load_space", "Index", "open_store"} <= set(cmcr.__all__)
    assert cmcr.ConnectedModel.__name__ == "ConnectedModel"
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        cmcr.nothing_here
