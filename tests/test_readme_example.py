"""The README's example runs as written (docs that drift from the code fail here)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    text = README.read_text()
    section = text[text.index("## Example"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md example", "exec"), {})
    used, fragmentation = capsys.readouterr().out.split()
    assert int(used) > 0 and 0 <= float(fragmentation) <= 1
