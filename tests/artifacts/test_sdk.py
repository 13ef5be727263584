"""The SDK's artifact helpers (log_text/dict/figure/image, load_*) and the `keel artifacts` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from art_helpers import ArtifactServer

import keel
from keel.cli import main as cli_main
from keel.exceptions import InvalidArgument


@pytest.fixture()
def sdk(art_server: ArtifactServer) -> ArtifactServer:
    keel.set_tracking_uri(art_server.uri)
    return art_server


def test_log_and_load_text_and_dicts(sdk: ArtifactServer, run_id: str) -> None:
    keel.log_text("hello", "notes/readme.md", run_id=run_id)
    keel.log_dict({"lr": 0.1, "layers": [1, 2]}, "config.json", run_id=run_id)
    keel.log_dict({"lr": 0.1, "layers": [1, 2]}, "config.yaml", run_id=run_id)
    assert keel.artifacts.load_text(f"runs:/{run_id}/notes/readme.md") == "hello"
    assert keel.artifacts.load_dict(f"runs:/{run_id}/config.json") == {"lr": 0.1, "layers": [1, 2]}
    assert keel.artifacts.load_dict(f"runs:/{run_id}/config.yaml") == {"lr": 0.1, "layers": [1, 2]}
    assert "lr: 0.1" in keel.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    names = [f.path for f in keel.artifacts.list_artifacts(run_id=run_id)]
    assert sorted(names) == ["config.json", "config.yaml", "notes"]
    with pytest.raises(InvalidArgument):
        keel.artifacts.list_artifacts(artifact_uri=f"runs:/{run_id}", run_id=run_id)


def test_log_image_and_figure(sdk: ArtifactServer, run_id: str, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    keel.log_image(np.zeros((8, 6, 3), dtype=np.uint8), "img/black.png", run_id=run_id)
    keel.log_image(np.full((4, 4), 0.5), "img/gray.png", run_id=run_id)
    with pytest.raises(InvalidArgument):
        keel.log_image(np.full((4, 4), 2.0), "img/bad.png", run_id=run_id)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    keel.log_figure(fig, "plots/curve.png", run_id=run_id)
    plt.close(fig)
    local = Path(keel.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path)))
    assert Image.open(local / "img" / "black.png").size == (6, 8)
    assert Image.open(local / "plots" / "curve.png").format == "PNG"
    assert not (local / "img" / "bad.png").exists()


def test_cli_upload_list_download_rm(sdk: ArtifactServer, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "a.txt").write_text("A")
    (tmp_path / "src" / "sub" / "b.txt").write_text("B")
    uri = ["--tracking-uri", sdk.uri]
    assert cli_main([*uri, "artifacts", "upload", str(tmp_path / "src"), "--run-id", run_id, "--artifact-path", "data"]) == 0
    assert "uploaded 2 file(s)" in capsys.readouterr().out
    assert cli_main([*uri, "artifacts", "list", "--run-id", run_id, "--artifact-path", "data", "--recursive", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(f["path"] for f in listed) == ["data/a.txt", "data/sub/b.txt"]
    assert cli_main([*uri, "artifacts", "download", "--artifact-uri", f"runs:/{run_id}/data", "--dst-path", str(tmp_path / "out")]) == 0
    assert Path(capsys.readouterr().out.strip(), "sub", "b.txt").read_text() == "B"
    assert cli_main([*uri, "artifacts", "rm", "--run-id", run_id, "--artifact-path", "data/sub"]) == 0
    assert "deleted 1 file(s)" in capsys.readouterr().out
    assert cli_main([*uri, "artifacts", "list", "--run-id", run_id, "--artifact-path", "../x"]) == 1
    assert "INVALID_ARTIFACT_PATH" in capsys.readouterr().err
