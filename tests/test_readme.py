"""The README stays true: its example prints what it says, its memory_stats() keys are the code's, and every
`pyscall stream` command and option it shows is one the CLI accepts."""
import re
import shlex
from pathlib import Path

import pyscall
from pyscall.app.cli import _parser, parse_args

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_example_prints_what_the_readme_says(capsys):
    section = README[README.index("## Example"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    printed = re.search(r"It prints:\n\n```text\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md example", "exec"), {})
    assert capsys.readouterr().out == printed


def test_memory_stats_keys_are_the_codes():
    block = README[README.index("emb.memory_stats()        #"):README.index("emb.to_dense()")]
    named = set(re.findall(r"\b[a-z]+(?:_[a-z]+)+\b", block)) | ({"fragmentation"} & set(block.split()))
    named.discard("memory_stats")
    assert named == set(pyscall.Embedding(3, 4).memory_stats())


def test_every_stream_command_and_option_in_the_readme_parses():
    commands = [line.split("#")[0] for line in README.splitlines() if line.startswith("pyscall stream")]
    commands += [line.split("&& ")[1] for line in README.splitlines() if "&& pyscall stream" in line]
    assert len(commands) >= 8
    for command in commands:
        parse_args(shlex.split(command)[1:])  # argparse exits on an unknown option or a bad value
    stream = _parser()._subparsers._group_actions[0].choices["stream"]
    known = {o for action in stream._actions for o in action.option_strings}
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", README[:README.index("## Example")]))
    assert mentioned <= known, sorted(mentioned - known)
