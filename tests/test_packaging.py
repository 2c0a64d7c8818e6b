"""The wheel, the light ``import protozoo``, the CLI's --version and recipes by name."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import protozoo
from protozoo.cli import main
from train.__main__ import RECIPES_DIR, resolve_recipe

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "protozoo", "train", "hub_cards")  # what the wheel is built from


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built offline with the installed setuptools from a copy of the sources."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp)]
    subprocess.run([*cmd, str(src)], check=True)
    (path,) = tmp.glob("protozoo-*.whl")
    return path


def test_wheel_installs_only_protozoo_with_its_modules_and_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"protozoo", f"protozoo-{protozoo.__version__}.dist-info"}
    expected = {f"protozoo/{p.relative_to(ROOT / 'protozoo')}" for p in (ROOT / "protozoo").rglob("*.py")}
    expected |= {f"protozoo/train/{p.relative_to(ROOT / 'train')}" for p in (ROOT / "train").rglob("*.py")}
    expected |= {f"protozoo/train/configs/{p.name}" for p in RECIPES_DIR.glob("*.yaml")}
    expected |= {f"protozoo/hub_cards/{p.name}" for p in (ROOT / "hub_cards").iterdir() if p.is_file()}
    expected |= {f"protozoo/{p.relative_to(ROOT / 'protozoo')}" for p in (ROOT / "protozoo/zoo").rglob("*.*")}
    assert not expected - set(names), "missing from the wheel (add the subpackage to pyproject.toml)"


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_ignores_a_users_train_py(wheel: Path, tmp_path: Path) -> None:
    # --system-site-packages lends torch & co.; --no-deps keeps pip offline. The venv's own protozoo
    # must win over the editable install of the system site-packages, so PYTHONPATH goes too.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)]
    subprocess.run(pip, check=True, env=env)
    user = tmp_path / "project"
    user.mkdir()
    (user / "train.py").write_text("raise SystemExit('the user train.py was imported')\n")

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=user, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = "import protozoo, protozoo.card as c, protozoo.train.__main__ as m;"
    where += "print(protozoo.__file__, c.CARDS_DIR, m.resolve_recipe('default'), sep='\\n')"
    for line in run(str(python), "-c", where).splitlines():
        assert Path(line).resolve().is_relative_to(venv.resolve()), line
    assert "dp-resnet18-fmnist" in run(str(bin_dir / "protozoo"), "list")
    assert "usage: python -m protozoo.train" in run(str(python), "-m", "protozoo.train", "--help")
    assert run(str(bin_dir / "protozoo"), "--version").strip() == f"protozoo {protozoo.__version__}"


def test_import_protozoo_and_the_cli_stay_light() -> None:
    heavy = "{'torch', 'timm', 'matplotlib', 'gradio'}"
    code = f"import sys, protozoo, protozoo.cli; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert protozoo.ProtoModel.__module__ == "protozoo.model"  # the lazy names still resolve
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        protozoo.nope  # noqa: B018


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"protozoo {protozoo.__version__}"


@pytest.mark.parametrize(
    "name", ["default", "default.yaml", "train/configs/default.yaml", "dp-vit-tiny-fmnist"]
)
def test_recipes_resolve_by_name_from_anywhere(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe(name) == RECIPES_DIR / f"{Path(name).stem}.yaml"


def test_a_local_recipe_file_wins_and_an_unknown_name_lists_the_recipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("default.yaml").write_text("max_steps: 3\n")
    assert resolve_recipe("default.yaml") == Path("default.yaml")
    with pytest.raises(FileNotFoundError, match=r"Recipe 'nope' not found: .* shipped recipes \[.*'default'"):
        resolve_recipe("nope")


def test_protozoo_train_reports_an_unknown_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", "nope"])
    assert exit_info.value.code == 2
    assert "Recipe 'nope' not found" in capsys.readouterr().err
