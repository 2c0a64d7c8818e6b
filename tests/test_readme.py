"""The README as a user meets it: its snippet runs, its zoo table is current, its commands are CI's."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from protozoo import registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
spec = importlib.util.spec_from_file_location("readme_zoo_table", ROOT / "scripts" / "readme_zoo_table.py")
assert spec is not None and spec.loader is not None
zoo_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zoo_table)


def test_the_first_python_snippet_runs_as_pasted(tmp_path: Path) -> None:
    snippet = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    (tmp_path / "snippet.py").write_text(snippet)
    done = subprocess.run(
        [sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "features (1, 512)" in done.stdout
    top = re.search(r"top prototypes \[([\d, ]+)\] \[([\d., ]+)\]", done.stdout)
    assert top and len(top.group(1).split(",")) == 5
    assert re.search(r"0\.025\s+\d+\s+[01]\.\d{3}", done.stdout)  # the collapse report's table


def test_the_zoo_table_is_the_generated_one(tmp_path: Path) -> None:
    assert zoo_table.with_table(README) == README, "run python scripts/readme_zoo_table.py"
    table = zoo_table.zoo_table()
    assert table.count("\n| `") == len(registry.ZOO) and "protozoo/dp-resnet18-fmnist" in table
    assert "`vit_tiny_patch16_224` (7 px patches at 28 px)" in table  # timm's name and its model_args
    stale = tmp_path / "README.md"
    stale.write_text(README.replace(table.splitlines()[2], "| made up |"))
    assert zoo_table.main(["--readme", str(stale), "--check"]) == 1
    assert zoo_table.main(["--readme", str(stale)]) == 0
    assert stale.read_text() == README


def test_a_readme_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="no zoo-table block: add the lines"):
        zoo_table.with_table("# readme\n")


def test_the_two_fresh_machine_commands_are_what_ci_runs() -> None:
    assert "bash scripts/setup.sh && python -m train --config default\n" in README
    assert "bash scripts/setup.sh && bash scripts/test.sh\n" in README
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-2:] == ["bash scripts/setup.sh", "bash scripts/test.sh"]
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "apt-get install" in setup and 'pip install -q -e ".[all,dev,bench]"' in setup  # lightly too


def test_the_test_command_fails_when_pytest_collects_nothing() -> None:
    done = subprocess.run(
        ["bash", "scripts/test.sh", "tests/test_readme.py", "-k", "no_test_has_this_name"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 5 and "collected no tests: failing" in done.stderr


def test_documents_speak_of_the_project_only() -> None:
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "hub_cards").glob("*.*")]
    docs += [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "protozoo" / "zoo").glob("*/README.md")]
    words = re.compile(r"\bsessions?\b|\bbriefs?\b|\bthe issue\b|\bissue \d+", re.I)
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in docs for m in words.finditer(p.read_text())]
    assert not found
