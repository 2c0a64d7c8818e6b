"""Public mode, bounded Hub loads and the model LRU of the demo, against the test Hub on 127.0.0.1."""

from __future__ import annotations

import gc
import os
import socket
import time
import weakref
from pathlib import Path

import pytest
import torch
from hub_server import HubServer

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from protozoo import ProtoConfig, ProtoModel  # noqa: E402
from protozoo.cli import build_parser  # noqa: E402
from protozoo.demo import launch  # noqa: E402
from protozoo.demo.access import Access, ModelSource, Refused, is_loopback  # noqa: E402
from protozoo.demo.app import DemoApp  # noqa: E402
from protozoo.demo.constants import MAX_SESSIONS  # noqa: E402
from protozoo.demo.fetch import NEEDED, fetch_model  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
REFERENCE = 100


def tiny_model(seed: int) -> ProtoModel:
    torch.manual_seed(seed)
    return ProtoModel(ProtoConfig(num_prototypes=16, embed_dim=8, hidden_dim=16, method="carp_dec")).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("models")
    return [tiny_model(i).save_pretrained(root / f"m{i}") for i in range(MAX_SESSIONS + 2)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without(message: str, name: str) -> str:
    return message.replace(repr(name), "NAME")


# ---- the policy ----
def test_public_refusals_read_the_same_whether_a_path_exists_or_not(folders: list[Path]) -> None:
    access = Access(public=True, allow_models=["org/tiny"])
    names = ["/etc", "../../etc/passwd", "/etc/passwd", "/nonexistent", str(folders[0]), "org/other", "x"]
    messages = set()
    for name in names:
        with pytest.raises(Refused, match="is not a model this demo serves") as e:
            access.source(name, files=True)
        messages.add(without(str(e.value), name))
    assert messages == {
        "NAME is not a model this demo serves; load a zoo model or one of the Hub models org/tiny."
    }


@pytest.mark.parametrize(
    ("public", "allow_local", "name", "expected"),
    [
        (True, False, "dp-resnet18-fmnist", ModelSource("zoo", "dp-resnet18-fmnist")),
        (True, False, " org/tiny ", ModelSource("hub", "org/tiny")),
        (False, False, "org/other", ModelSource("hub", "org/other")),
        (False, False, "dp-resnet18-fmnsit", ModelSource("local", "dp-resnet18-fmnsit")),  # load explains
        (True, True, "FOLDER", "LOCAL"),
        (False, False, "FOLDER", "LOCAL"),
    ],
)
def test_sources(
    folders: list[Path], public: bool, allow_local: bool, name: str, expected: ModelSource | str
) -> None:
    if name == "FOLDER":
        name, expected = str(folders[0]), ModelSource("local", str(folders[0].resolve()))
    assert Access(public, ["org/tiny"], allow_local).source(name) == expected


def test_allow_local_still_refuses_missing_paths_alike(folders: list[Path]) -> None:
    access = Access(public=True, allow_local=True)
    with pytest.raises(Refused) as missing:
        access.source("/nonexistent")
    with pytest.raises(Refused) as a_file:
        access.source(str(folders[0] / "config.json"))  # a file, where a folder is needed
    assert without(str(missing.value), "/nonexistent") == without(
        str(a_file.value), str(folders[0] / "config.json")
    )
    assert "or a model folder this server can read" in str(missing.value)


def test_allow_models_takes_hub_ids() -> None:
    with pytest.raises(ValueError, match=r"allow_models takes Hub ids 'org/name', got '/srv/model'"):
        Access(public=True, allow_models=["/srv/model"])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("10.0.0.2", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_cli_flags() -> None:
    args = build_parser().parse_args(
        ["demo", "--host", "0.0.0.0", "--allow-models", "org/a", "org/b", "--allow-local"]
    )
    assert (args.public, args.allow_models, args.allow_local) == (None, ["org/a", "org/b"], True)
    assert build_parser().parse_args(["demo", "--no-public"]).public is False


# ---- bounded Hub loads ----
def test_fetch_checks_sizes_before_downloading(hub: HubServer, folders: list[Path]) -> None:
    tiny_model(0).push_to_hub("org/tiny")
    size = sum(len(hub.files("org/tiny")[f]) for f in NEEDED)
    with pytest.raises(ValueError, match=rf"'org/tiny' holds {size / 1e6:.1f} MB of model files; this demo"):
        fetch_model("org/tiny", max_bytes=size - 1)
    assert not [path for _, path, _ in hub.requests if "/resolve/" in path]  # nothing downloaded
    folder = fetch_model("org/tiny", max_bytes=size)
    assert sorted(p.name for p in folder.iterdir()) == sorted(NEEDED)  # not README.md
    assert {path.rsplit("/", 1)[1] for _, path, _ in hub.requests if "/resolve/" in path} == set(NEEDED)


def test_fetch_refuses_what_is_not_a_model(hub: HubServer) -> None:
    from huggingface_hub import HfApi

    HfApi().create_repo("org/notes")
    HfApi().upload_file(path_or_fileobj=b"notes", path_in_repo="notes.txt", repo_id="org/notes")
    with pytest.raises(
        ValueError, match="'org/notes' has no config.json, model.safetensors, head.safetensors"
    ):
        fetch_model("org/notes")
    with pytest.raises(FileNotFoundError, match="Hub repo 'org/none' not found"):
        fetch_model("org/none")


def test_fetch_stops_at_the_time_limit(hub: HubServer) -> None:
    tiny_model(0).push_to_hub("org/slow")
    hub.delay = 20.0  # every file download stalls
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="Loading 'org/slow' took longer than 2 s, so it was stopped"):
        fetch_model("org/slow", timeout=2.0)
    assert time.monotonic() - start < 15.0


# ---- the model LRU ----
def test_switching_models_keeps_a_bounded_lru(tmp_path: Path, folders: list[Path]) -> None:
    app = DemoApp("torch", REFERENCE, tmp_path, Access(public=False))
    sources = [ModelSource("local", str(f.resolve())) for f in folders]
    models = []
    for source in sources * 2:
        models.append(weakref.ref(app.session(source).encoder.model))
        assert len(app.sessions) <= MAX_SESSIONS
    assert list(app.sessions) == [s.name for s in sources[-MAX_SESSIONS:]]
    gc.collect()
    assert sum(m() is not None for m in models) == MAX_SESSIONS  # the dropped ones are freed


# ---- a public server, end to end ----
def test_public_demo_serves_only_what_is_allowed(hub: HubServer, folders: list[Path], tmp_path: Path) -> None:
    tiny_model(1).push_to_hub("org/tiny")
    tiny_model(2).push_to_hub("org/other")
    demo = launch(
        str(folders[0]),
        port=free_port(),
        reference_size=REFERENCE,
        cache_dir=tmp_path / "cache",
        public=True,
        allow_models=["org/tiny"],
        block=False,
    )
    try:
        client = Client(demo.local_url, verbose=False, download_files=False)
        messages = set()
        for name in ["/etc", "../../etc/passwd", "/nonexistent", str(folders[1]), "org/other"]:
            with pytest.raises(AppError, match="is not a model this demo serves") as e:
                client.predict(name, api_name="/load_model")
            messages.add(without(str(e.value), name))
            with pytest.raises(AppError, match="is not a model this demo serves") as e:
                client.predict(name, api_name="/compare")
            messages.add(without(str(e.value), name))
        assert len(messages) == 1, messages
        assert "org/tiny" in client.predict("org/tiny", api_name="/load_model")[0]
        _, table = client.predict("org/tiny", api_name="/compare")
        assert table["headers"][-1].startswith("org/tiny (compared): among live (live ")
        status = client.predict(str(folders[0].resolve()), api_name="/load_model")[0]  # the starting model
        assert str(folders[0].resolve()) in status
    finally:
        demo.close()


# ---- the package's own structure ----
def test_demo_modules_share_public_names_only_and_import_no_circle() -> None:
    import ast

    import protozoo.demo

    folder = Path(protozoo.demo.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        graph[path.stem] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("protozoo.demo."):
                graph[path.stem].add(node.module.removeprefix("protozoo.demo."))
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private names {private} from {node.module}"

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(m == target or (m not in seen and reaches(m, target, seen | {m})) for m in graph[start])

    assert not [m for m in graph if reaches(m, m, {m})], graph
