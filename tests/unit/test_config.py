"""Configuration: TOML file, environment overrides, validation naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "hypoxnode.example.toml"


def test_defaults_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYPOXNODE_CONFIG", raising=False)
    config = load_config()
    assert config.node.ae_title == "HYPOXNODE"
    assert config.node.port == 11112
    assert config.study.stable_seconds == 30
    assert config.quant.hypoxic_thresholds is None  # the tracer profile decides
    assert config.destinations == []


def test_example_config_is_valid_and_documents_every_key() -> None:
    config = load_config(EXAMPLE)
    text = EXAMPLE.read_text()
    for section in ("node", "study", "quant", "output", "export", "log", "http"):
        model = getattr(config, section)
        for key in type(model).model_fields:
            assert f"{key} =" in text or f"# {key} =" in text, f"[{section}] {key} undocumented"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[node]\nport = 104\nae_title = "FROMFILE"\n'
                    '[[destinations]]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 4242\n')
    monkeypatch.setenv("HYPOXNODE_NODE__PORT", "2222")
    monkeypatch.setenv("HYPOXNODE_QUANT__HYPOXIC_THRESHOLDS", "[2.5, 1.2]")
    config = load_config(path)
    assert config.node.port == 2222
    assert config.node.ae_title == "FROMFILE"  # the rest of [node] still comes from the file
    assert config.quant.hypoxic_thresholds == [1.2, 2.5]
    assert config.destinations[0].port == 4242


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ('[node]\nport = "x"\n', {}, "node.port"),
        ('[node]\nae_title = "ABCDEFGHIJKLMNOPQ"\n', {}, "node.ae_title"),
        ('[node]\nae_titel = "X"\n', {}, "node.ae_titel"),
        ("[quant]\nhypoxic_thresholds = []\n", {}, "quant.hypoxic_thresholds"),
        ("", {"HYPOXNODE_NODE__PORT": "70000"}, "HYPOXNODE_NODE__PORT"),
        ('[[destinations]]\nae_title = "P"\nhost = "h"\n', {}, "destinations.0.port"),
        ('[http]\nhost = "0.0.0.0"\n', {}, "http.token is required"),
    ],
)
def test_errors_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, env: dict[str, str],
    expected: str,
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_config(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_noise_floor_setting_reaches_the_detector(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text("[quant]\nlesion_noise_sds = 3.0\n")
    settings = load_config(path).quant.to_settings()
    assert settings.lesion_noise_sds == 3.0
    assert settings.for_tracer(None).lesion_noise_sds == 3.0
    assert load_config().quant.to_settings().for_tracer(None).lesion_noise_sds == 5.0


def test_proxy_from_names_the_balancers() -> None:
    node = load_config(None, node={"proxy_from": ["10.9.0.0/24", "::1"]}).node
    assert node.from_balancer("10.9.0.4") and node.from_balancer("::ffff:10.9.0.4")
    assert node.from_balancer("::1")
    assert not node.from_balancer("10.9.1.4")
    assert not load_config(None).node.from_balancer("127.0.0.1")  # no balancer configured
    with pytest.raises(ConfigError, match="not an IP address"):
        load_config(None, node={"proxy_from": ["haproxy.local"]})
