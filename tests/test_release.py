"""The distribution files stay in step with the code: `bundle/manifest.json` and `server.json` are
what the code generates, list what the server offers, and name only flags and variables the CLI
and `Settings` read."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

import rar_tools
from rar_tools.api import RarTools
from rar_tools.cli import build_parser, command_settings
from rar_tools.release.bundle import MANIFEST_FILE, REGISTRY_FILE, generated_files
from rar_tools.release.launch import REGISTRY_NAME
from rar_tools.server import create_server
from rar_tools.settings import Settings, default_data_dir

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(rar_tools.__file__).resolve().parent.parent


def committed(relative: Path) -> dict:
    return json.loads((ROOT / relative).read_text(encoding="utf-8"))


def registry_package() -> dict:
    return committed(REGISTRY_FILE)["packages"][0]


@pytest.mark.parametrize("relative", [MANIFEST_FILE, REGISTRY_FILE], ids=str)
def test_the_committed_file_is_what_the_code_generates(relative: Path) -> None:
    # After changing tools, prompts or settings: python -m rar_tools.release write
    assert (ROOT / relative).read_text(encoding="utf-8") == generated_files()[relative]


async def offered_by_server(settings: Settings) -> tuple[set[str], dict[str, list[str]]]:
    """The tools and prompts (with their arguments) the server registers, asked without starting it."""
    server = create_server(RarTools(settings))
    tools = {tool.name for tool in await server.list_tools()}
    prompts = await server.list_prompts()
    return tools, {p.name: [a.name for a in p.arguments or []] for p in prompts}


def test_the_manifest_lists_the_tools_and_prompts_the_server_offers(tmp_path: Path, clip_model: str) -> None:
    settings = Settings(data_dir=tmp_path, clip_model=clip_model, no_ranker=True)
    tools, prompts = anyio.run(offered_by_server, settings)
    manifest = committed(MANIFEST_FILE)
    assert {tool["name"] for tool in manifest["tools"]} == tools
    assert {prompt["name"]: prompt["arguments"] for prompt in manifest["prompts"]} == prompts


def test_every_version_is_the_package_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["dynamic"] == ["version"]  # read from rar_tools.__version__
    versions = {committed(MANIFEST_FILE)["version"], committed(REGISTRY_FILE)["version"], registry_package()["version"]}
    assert versions == {rar_tools.__version__}


def test_the_registry_entry_names_the_pypi_package_run_by_uvx() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    package = registry_package()
    assert (package["registryType"], package["identifier"], package["runtimeHint"]) == ("pypi", project["name"], "uvx")
    assert package["transport"] == {"type": "stdio"}
    assert "rar-tools" in project["scripts"]  # uvx runs the package's `rar-tools` command
    assert len(committed(REGISTRY_FILE)["description"]) <= 100  # the registry's limit


def test_the_readme_carries_the_registry_name_for_pypi_ownership() -> None:
    assert f"<!-- mcp-name: {REGISTRY_NAME} -->" in (ROOT / "README.md").read_text(encoding="utf-8")


def registry_argv(folders: list[Path]) -> list[str]:
    """The command line a registry client builds from `server.json`, with `folders` for the repeated one."""
    argv: list[str] = []
    for argument in registry_package()["packageArguments"]:
        argv += [argument["value"]] if "value" in argument else [str(folder) for folder in folders]
    return argv


def test_the_registry_arguments_are_the_serve_command_and_its_folders(tmp_path: Path) -> None:
    folders = [tmp_path / "pictures", tmp_path / "more"]
    for folder in folders:
        folder.mkdir()
    args = build_parser().parse_args(registry_argv(folders))
    assert args.command == "serve"
    assert command_settings(args).allow_dir == [folder.resolve() for folder in folders]


SAMPLES = {"boolean": "true", "number": "3", "filepath": "{tmp}/data", "string": "cpu"}


def test_every_registry_variable_sets_its_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    variables = registry_package()["environmentVariables"]
    for variable in variables:
        value = variable.get("choices", [SAMPLES[variable["format"]]])[0].format(tmp=tmp_path)
        monkeypatch.setenv(variable["name"], value)
    settings = command_settings(build_parser().parse_args(["serve"]))
    for variable in variables:
        field = variable["name"].removeprefix("RAR_TOOLS_").lower()
        assert field in Settings.model_fields
        assert Settings.model_fields[field].description in variable["description"]
        value = getattr(settings, field)
        expected = {"boolean": True, "filepath": tmp_path / "data"}.get(variable["format"], "cpu")
        assert value == expected, field


def test_the_registry_defaults_are_what_the_server_uses_without_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = registry_package()["environmentVariables"]
    for variable in variables:
        monkeypatch.delenv(variable["name"], raising=False)
    settings = command_settings(build_parser().parse_args(["serve"]))
    for variable in variables:
        value = getattr(settings, variable["name"].removeprefix("RAR_TOOLS_").lower())
        expected = str(value).lower() if isinstance(value, bool) else str(value)
        assert variable.get("default", str(default_data_dir())) == expected


def test_the_bundle_passes_the_registry_variables() -> None:
    bundle_env = committed(MANIFEST_FILE)["server"]["mcp_config"]["env"]
    assert set(bundle_env) == {variable["name"] for variable in registry_package()["environmentVariables"]}


def test_an_empty_variable_leaves_its_setting_at_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATA_DIR", "CLIP_MODEL", "DEVICE", "NO_RANKER"):
        monkeypatch.setenv(f"RAR_TOOLS_{name}", "")
    settings = Settings()
    assert settings.data_dir == default_data_dir()
    assert (settings.clip_model, settings.device, settings.no_ranker) == ("ViT-B-16", "auto", False)


def test_serve_folders_add_to_the_allowed_folders(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    args = build_parser().parse_args(
        ["serve", "--allow-dir", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c")]
    )
    assert command_settings(args).allow_dir == [tmp_path / "a", tmp_path / "b", tmp_path / "c"]


def test_a_missing_serve_folder_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rar_tools.cli import main

    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert f"allowed folder '{tmp_path / 'nowhere'}' does not exist" in capsys.readouterr().err
