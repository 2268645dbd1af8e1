"""Configuration: one TOML file, every key overridable by an environment variable.

``HYPOXNODE_NODE__PORT=11112`` overrides ``[node] port``; nested keys are joined with ``__``.
Environment variables win over the file, the file wins over the defaults. The configuration
is validated when it is loaded; a bad value raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from service.config.follow_up import FollowUpConfig
from service.config.quant import QuantConfig
from service.config.routing import RoutingConfig

ENV_PREFIX = "HYPOXNODE_"
CONFIG_ENV = "HYPOXNODE_CONFIG"
AE_TITLE_MAX = 16


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the problem."""


def _check_ae_title(value: str) -> str:
    if not value or len(value) > AE_TITLE_MAX or "\\" in value or not value.isprintable():
        raise ValueError(f"must be 1-{AE_TITLE_MAX} printable characters without backslash")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


__all__ = [
    "ClusterConfig",
    "Config",
    "ConfigError",
    "Destination",
    "FollowUpConfig",
    "QuantConfig",
    "RetentionConfig",
    "TlsConfig",
    "load_config",
]


class NodeConfig(_Section):
    """``[node]``: how the DICOM listener presents itself and where it keeps data."""

    ae_title: str = "HYPOXNODE"
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    data_dir: Path = Path("./var")
    max_associations: int = Field(default=10, ge=1, le=200)
    """Most associations the node serves at once, over all its receiving processes."""
    receiver_processes: int = Field(default=0, ge=0, le=32)
    """Processes that receive C-STOREs; the node process accepts each connection and hands
    it to the least busy. 0: one per CPU core, at most 4. 1: the node process receives."""
    max_pdu_bytes: int = Field(default=262144, ge=0)
    network_timeout_s: float = Field(default=60.0, gt=0)
    association_request_timeout_s: float = Field(default=10.0, gt=0)
    """Time a connection has, in all, to deliver its A-ASSOCIATE-RQ once it started sending
    (a peer trickling bytes is cut off after this, not after ``network_timeout_s`` per read)."""
    association_grace_s: float = Field(default=2.0, gt=0)
    """A connection that has not delivered its A-ASSOCIATE-RQ this long after it was accepted
    stops counting against ``max_associations`` (it counts again if the request comes): idle
    or half-open connections from an allowed host cannot lock scanners out."""
    allowed_calling_ae_titles: list[str] = Field(default_factory=list)
    """Empty: any calling AE title is accepted (set it in production)."""
    allowed_calling_hosts: list[str] = Field(default_factory=list)
    """IP addresses or networks (CIDR) allowed to associate; empty: any host."""
    proxy_from: list[str] = Field(default_factory=list)
    """Load balancers (IP addresses or networks) in front of the node, sending the PROXY
    protocol v2 header (haproxy ``send-proxy-v2``). When set, every DICOM connection must come
    from one of them and start with the header, and the scanner's address in it is the one
    ``allowed_calling_hosts``, the audit trail and the logs see. Empty: no PROXY protocol."""
    min_free_mb: float = Field(default=0.0, ge=0)
    """Free-space floor of ``data_dir``, MB: below it C-STORE answers 0xA700. 0: no floor."""
    max_memory_mb: float = Field(default=1536.0, ge=512)
    """Peak memory the node may use, all its processes together, MB: a study whose
    quantification would need more (estimated from its headers) is refused with the reason
    (:mod:`service.pipeline.memory_budget`)."""

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae_title(v)))

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _check_allowed_titles(cls, value: list[str]) -> list[str]:
        for title in value:
            _check_ae_title(title)
        return value

    @field_validator("allowed_calling_hosts", "proxy_from")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.1.0.0/16)"
                ) from None
        return value

    @property
    def min_free_bytes(self) -> int:
        """The free-space floor in bytes."""
        return int(self.min_free_mb * 1024 * 1024)

    def host_allowed(self, address: str) -> bool:
        """Whether a peer at ``address`` may associate (always, without an allow-list)."""
        return not self.allowed_calling_hosts or _in_networks(address, self.allowed_calling_hosts)

    def from_balancer(self, address: str) -> bool:
        """Whether a connection from ``address`` comes from a load balancer of ``proxy_from``."""
        return _in_networks(address, self.proxy_from)


def _in_networks(address: str, networks: list[str]) -> bool:
    """Whether ``address`` (IPv4, IPv6, IPv4-mapped IPv6) lies in one of ``networks``."""
    try:
        peer = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return any(peer in ipaddress.ip_network(entry, strict=False) for entry in networks)


class TlsConfig(_Section):
    """``[tls]``: DICOM TLS on the listener (PS3.15 Annex B, BCP 195 profile)."""

    enabled: bool = False
    certificate_file: Path | None = None
    """The node's certificate chain (PEM)."""
    private_key_file: Path | None = None
    """The node's private key (PEM, unencrypted)."""
    ca_file: Path | None = None
    """CA certificates (PEM) that client certificates must chain to."""
    require_client_certificate: bool = False
    """Refuse peers without a client certificate signed by ``ca_file``."""

    @model_validator(mode="after")
    def _files_when_enabled(self) -> TlsConfig:
        if not self.enabled:
            return self
        for key in ("certificate_file", "private_key_file"):
            value = getattr(self, key)
            if value is None:
                raise ValueError(f"tls.{key} is required when tls.enabled is true")
            if not Path(value).expanduser().is_file():
                raise ValueError(f"tls.{key}: no such file {value}")
        if self.require_client_certificate and self.ca_file is None:
            raise ValueError("tls.ca_file is required when tls.require_client_certificate is true")
        if self.ca_file is not None and not Path(self.ca_file).expanduser().is_file():
            raise ValueError(f"tls.ca_file: no such file {self.ca_file}")
        return self


class RetentionConfig(_Section):
    """``[retention]``: purge studies whose results every destination received."""

    delivered_after_days: float | None = Field(default=None, ge=0)
    """Purge a study this many days after its last result was delivered. None: never."""
    check_interval_seconds: float = Field(default=3600.0, gt=0)


class ClusterConfig(_Section):
    """``[cluster]``: several nodes on one PostgreSQL index and one shared data folder;
    processing and delivery run as jobs any node takes (:mod:`service.pipeline.cluster_jobs`).
    """

    database_url: str = ""
    """libpq connection string or URL, e.g. ``postgresql:///hypoxnode?host=/var/run/postgresql``
    (a password belongs in ``~/.pgpass`` or ``PGPASSWORD``, not here). Empty: SQLite."""
    node_id: str = ""
    """This node's name among the nodes (jobs, partial files); empty: the host name."""
    stalled_after_s: float = Field(default=30.0, ge=1.0)
    """A node silent this long is taken for dead: its jobs run on another node."""

    @property
    def enabled(self) -> bool:
        """Whether the index lives in PostgreSQL."""
        return bool(self.database_url)

    @property
    def node_name(self) -> str:
        """``node_id``, or the host name."""
        return self.node_id or socket.gethostname()

    @property
    def tmp_name(self) -> str:
        """This node's own folder of ``tmp/`` when nodes share the data folder, else ``""``."""
        return self.node_name if self.enabled else ""


class StudyConfig(_Section):
    """``[study]``: when a study counts as complete."""

    stable_seconds: float = Field(default=30.0, ge=0)
    check_interval_seconds: float = Field(default=2.0, gt=0)


class OutputConfig(_Section):
    """``[output]``: series numbers and descriptions of the result objects."""

    seg_series_number: int = Field(default=9901, ge=1)
    sr_series_number: int = Field(default=9902, ge=1)
    summary_series_number: int = Field(default=9903, ge=1)
    hypoxic_seg_series_number: int = Field(default=9911, ge=1)
    """Series number of the first hypoxic SEG (lowest threshold); the next ones count up."""
    uid_prefix: str = "1.2.826.0.1.3680043.8.498."


class ExportConfig(_Section):
    """``[export]``: retry policy for sending results."""

    retry_initial_seconds: float = Field(default=30.0, gt=0)
    retry_max_seconds: float = Field(default=600.0, gt=0)
    give_up_after_seconds: float = Field(default=86400.0, gt=0)
    check_interval_seconds: float = Field(default=2.0, gt=0)
    attempt_deadline_seconds: float = Field(default=600.0, gt=0)
    """Total time one delivery attempt to one destination may take (association, every
    C-STORE, release); a peer still busy then is cut off and its exports retried. Each
    destination runs in its own thread, so a slow one delays only its own exports."""


class Destination(_Section):
    """``[[destinations]]``: a PACS that receives the results."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    name: str = ""
    deadline_seconds: float | None = Field(default=None, gt=0)
    """This destination's own ``[export] attempt_deadline_seconds``."""

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae_title(v)))

    @property
    def key(self) -> str:
        """Stable identifier of this destination in the index."""
        return self.name or self.ae_title


class HttpConfig(_Section):
    """``[http]``: the status page, JSON API, ``/healthz`` and ``/metrics``."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    token: str = ""
    """Bearer token; required when ``host`` is not a loopback address."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Host names (without port) a request's Host header may name, besides ``host``,
    ``localhost``, 127.0.0.1 and ::1 (against DNS rebinding). Empty and bound to a wildcard
    address (0.0.0.0, ::): any (the token protects it)."""
    max_connections: int = Field(default=100, ge=1)
    """Connections served at once; a request beyond them is answered 503 at once."""
    request_header_timeout_s: float = Field(default=10.0, gt=0)
    """Time a connection has to send a complete request head (from its opening, or from the
    end of its previous response); then it is closed (against slow-header floods)."""

    @property
    def is_loopback(self) -> bool:
        """Whether the interface is reachable from this machine only."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    @model_validator(mode="after")
    def _token_when_exposed(self) -> HttpConfig:
        if self.enabled and not self.is_loopback and not self.token:
            raise ValueError(
                f"http.token is required when the HTTP interface listens on {self.host}"
                " (beyond loopback); set it or bind to 127.0.0.1"
            )
        return self


class LogConfig(_Section):
    """``[log]``: logging level and format."""

    level: str = "INFO"
    json_lines: bool = False
    audit_file: Path | None = None
    """Also append the audit log (associations, exports, purges) to this file."""


class Config(BaseSettings):
    """The whole configuration of one hypoxnode instance."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    node: NodeConfig = Field(default_factory=NodeConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    quant: QuantConfig = Field(default_factory=QuantConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    follow_up: FollowUpConfig = Field(default_factory=FollowUpConfig)
    destinations: list[Destination] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)

    @model_validator(mode="after")
    def _routing_destinations(self) -> Config:
        self.routing.check_destinations([d.key for d in self.destinations])
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Priority: explicit arguments, then environment, then the TOML file."""
        toml_file = _TOML_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def data_dir(self) -> Path:
        """Absolute data directory."""
        return self.node.data_dir.expanduser().resolve()


# The TOML path is handed to ``settings_customise_sources`` for the duration of one load.
_TOML_FILE: dict[str, Path | None] = {"path": None}


def load_config(path: Path | str | None = None, **overrides: Any) -> Config:
    """Load and validate the configuration.

    Parameters
    ----------
    path
        TOML file. ``None``: the file named by ``$HYPOXNODE_CONFIG`` if set, else defaults only.
    **overrides
        Section values that win over everything (used by tests and the demo).

    Raises
    ------
    ConfigError
        The file is missing or unreadable, or a key has a bad value (the message names it).
    """
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    toml_path = Path(path) if path is not None else None
    if toml_path is not None and not toml_path.is_file():
        raise ConfigError(f"configuration file not found: {toml_path}")
    _TOML_FILE["path"] = toml_path
    try:
        return Config(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, toml_path)) from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"{toml_path}: {exc}") from None
    finally:
        _TOML_FILE["path"] = None


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        env = ENV_PREFIX + "__".join(str(p).upper() for p in err["loc"])
        problems.append(f"{key} (or ${env}): {err['msg']}")
    return f"invalid configuration{where}: " + "; ".join(problems)
