"""The README's Python API snippet runs verbatim."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippet_runs_verbatim(capsys):
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - the documented example, as written
    assert namespace["logits"].shape == (2, 2)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("tensor([[") and float(printed[-1]) > 1  # counts, then a speedup above 1
    assert type(namespace["model"].bert.encoder).__name__ == "BertEncoder"  # unpatched at the end


def test_readme_result_tables_are_the_committed_results():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_tables", README.parent / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = README.read_text(encoding="utf-8")
    assert module.render(text) == text, "README tables differ from results/; run benchmarks/readme_tables.py"
