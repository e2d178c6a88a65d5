"""One object that says where everything is: from saved Prefect blocks, a config file or the sandbox.

`xraylake <command>` with no configuration runs against the sandbox (`xraylake sandbox up`
writes `$XRAYLAKE_HOME/sandbox.json`); `XRAYLAKE_CONFIG=path.json` points the same commands at
real AWS and a real OpenSearch cluster. On a Prefect server the same configuration lives as
named blocks (`save_config_blocks`, run by `xraylake setup`): a `xraylake Config` block that
references one `xraylake Roster`, `xraylake Trace Queue`, `xraylake Archive Store` and
`xraylake OpenSearch Target` block, with the signing keys as `Secret` blocks. Flows load it by
name (`config_block`), so editing a block in the UI changes the next run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import orjson
from prefect.blocks.core import Block
from pydantic import BaseModel, Field, SecretStr, ValidationError

from blocks import ArchiveStore, OpenSearchTarget, Roster, TraceQueue


class LakeCatalog(Block):
    """Where the lake's Iceberg tables (`traces`, `segments`) are catalogued.

    `sql`: a SQLite catalog file (default `$XRAYLAKE_HOME/lake/<bucket>.db`) for the sandbox and
    single-machine use; `glue`: the AWS Glue Data Catalog (production; Athena, Spark, Trino and EMR
    read the same tables). Table data and metadata live in the archive bucket under `table_prefix`.
    """

    _block_type_name = "xraylake Lake Catalog"

    kind: Literal["sql", "glue"] = "sql"
    namespace: str = Field(default="xraylake", description="Glue database / SQL catalog namespace.")
    sql_uri: str | None = Field(
        default=None, description="SQLAlchemy URI of the SQL catalog; empty = the default file."
    )
    glue_catalog_id: str | None = Field(default=None, description="Glue catalog (account) id; empty = the caller's.")
    table_prefix: str = Field(default="iceberg", description="Key prefix of the tables in the archive bucket.")


class ConfigError(ValueError):
    """No usable configuration: no sandbox running and no config file, or one that cannot be read,
    is not JSON or is not a valid configuration. The message is one line naming the problem."""


class Config(BaseModel):
    region: str = "us-east-1"
    log_account_id: str
    aws_endpoint_url: str | None = Field(
        default=None, description="Set for the sandbox; None means the real AWS endpoints."
    )
    service_endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="Per-service overrides, e.g. {'xray': <strict X-Ray front>} in the sandbox.",
    )
    roster: Roster
    queue: TraceQueue
    archive: ArchiveStore
    opensearch: OpenSearchTarget
    lake: LakeCatalog = Field(default_factory=LakeCatalog, description="The Iceberg catalog of the Parquet lake.")
    redact_at_source: bool = Field(
        default=True,
        description="Collectors mask secrets in segment documents and execution input/output before "
        "sending (nothing secret crosses SQS or lands in the archive); False keeps the originals.",
    )
    signing_keys: list[SecretStr] = Field(
        default_factory=list,
        description="HMAC keys; the first signs, all verify (rotation overlap).",
    )

    def apply_environment(self) -> None:
        """Point every boto3 client (prefect-aws' assume-role STS call included) at the endpoint.

        prefect-aws 0.7.12 ignores `aws_client_parameters.endpoint_url` for its STS call, while
        the standard AWS_ENDPOINT_URL setting reaches every client, so the sandbox sets that.
        """
        os.environ.setdefault("AWS_DEFAULT_REGION", self.region)
        if self.aws_endpoint_url:
            os.environ["AWS_ENDPOINT_URL"] = self.aws_endpoint_url
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        for service, url in self.service_endpoints.items():
            os.environ[f"AWS_ENDPOINT_URL_{service.upper()}"] = url

    def to_json(self) -> bytes:
        data = self.model_dump(mode="json")
        # Secrets are written only to the sandbox state file (0600), never logged.
        data["roster"]["external_id"] = self.roster.external_id.get_secret_value()
        if self.roster.organizations is not None:
            data["roster"]["organizations"]["external_id"] = self.roster.organizations.external_id.get_secret_value()
        data["signing_keys"] = [k.get_secret_value() for k in self.signing_keys]
        return orjson.dumps(data, option=orjson.OPT_INDENT_2)


def _secret(name: str) -> str:
    """The value of a Prefect Secret block (real deployments keep keys there, not in files)."""
    from prefect.blocks.system import Secret

    block: Any = Secret.load(name)  # sync call outside an event loop: returns the block, not a coroutine
    return str(block.get())


def resolve_secrets(data: dict[str, Any]) -> dict[str, Any]:
    """Replace `*_secret` references by the Prefect Secret values they name.

    `signing_key_secrets: [current, previous]`, `roster.external_id_secret` and
    `opensearch.password_secret` let a config file name secrets instead of holding them.
    """
    if not isinstance(data, dict):
        return data  # validation names what is wrong
    data = dict(data)
    names = data.pop("signing_key_secrets", None)
    if names:
        data["signing_keys"] = [_secret(n) for n in names]
    for section, field, target in (
        ("roster", "external_id_secret", "external_id"),
        ("opensearch", "password_secret", "password"),
    ):
        if not isinstance(data.get(section) or {}, dict):
            continue
        block = dict(data.get(section) or {})
        name = block.pop(field, None)
        if name:
            block[target] = _secret(name)
            data[section] = block
    return data


def xraylake_home() -> Path:
    return Path(os.environ.get("XRAYLAKE_HOME", Path.home() / ".xraylake"))


def sandbox_state_path(home: Path | None = None) -> Path:
    return (home or xraylake_home()) / "sandbox.json"


BLOCK_SOURCE = "prefect-block:"
DEFAULT_BLOCK = "xraylake"


class ConfigBlock(Block):
    """Where everything is, as a Prefect block: the other xraylake blocks by reference, the
    signing keys by the names of their Secret blocks."""

    _block_type_name = "xraylake Config"
    _block_type_slug = "xraylake-config"
    _description = (
        "xraylake's configuration; its roster, queue, archive and OpenSearch blocks are editable on their own."
    )

    region: str = "us-east-1"
    log_account_id: str
    aws_endpoint_url: str | None = Field(default=None, description="Set for the sandbox; empty = real AWS.")
    service_endpoints: dict[str, str] = Field(default_factory=dict, description="Per-service endpoint overrides.")
    roster: Roster
    queue: TraceQueue
    archive: ArchiveStore
    opensearch: OpenSearchTarget
    redact_at_source: bool = True
    signing_key_secrets: list[str] = Field(
        default_factory=list, description="Names of Secret blocks holding the HMAC keys; the first signs, all verify."
    )


def block_source(name: str) -> str:
    """The `load_config` source naming a saved config block."""
    return f"{BLOCK_SOURCE}{name}"


def save_config_blocks(config: Config, name: str = DEFAULT_BLOCK) -> dict[str, str]:
    """Register the block types and save `config` as blocks named `name` (created or updated):
    returns block slug → document name, for what to show."""
    from prefect.blocks.system import Secret

    for block_type in (Roster, TraceQueue, ArchiveStore, OpenSearchTarget, ConfigBlock, Secret):
        block_type.register_type_and_schema()
    saved: dict[str, str] = {}
    secret_names = []
    for number, key in enumerate(config.signing_keys, start=1):
        secret_name = f"{name}-signing-key-{number}"
        Secret(value=key.get_secret_value()).save(secret_name, overwrite=True)
        secret_names.append(secret_name)
        saved[f"secret/{secret_name}"] = secret_name
    parts: dict[str, Any] = {}
    for field, block_type in (
        ("roster", Roster),
        ("queue", TraceQueue),
        ("archive", ArchiveStore),
        ("opensearch", OpenSearchTarget),
    ):
        part = block_type.model_validate(getattr(config, field).model_dump())
        part.save(name, overwrite=True)
        parts[field] = part
        saved[f"{block_type.get_block_type_slug()}/{name}"] = name
    block = ConfigBlock(
        region=config.region,
        log_account_id=config.log_account_id,
        aws_endpoint_url=config.aws_endpoint_url,
        service_endpoints=config.service_endpoints,
        redact_at_source=config.redact_at_source,
        signing_key_secrets=secret_names,
        **parts,
    )
    block.save(name, overwrite=True)
    saved[f"{ConfigBlock.get_block_type_slug()}/{name}"] = name
    return saved


def load_config_block(name: str) -> Config:
    """The configuration saved as blocks named `name` (their current values)."""
    try:
        block: Any = ConfigBlock.load(name)  # sync call outside an event loop: the block itself
    except ValueError as error:
        raise ConfigError(
            f"no xraylake Config block named {name!r} on the Prefect server ({error}); "
            "create it with `xraylake setup --from-config FILE` (or `xraylake serve --local`)"
        ) from None
    data = {
        "region": block.region,
        "log_account_id": block.log_account_id,
        "aws_endpoint_url": block.aws_endpoint_url,
        "service_endpoints": block.service_endpoints,
        "roster": block.roster,
        "queue": block.queue,
        "archive": block.archive,
        "opensearch": block.opensearch,
        "redact_at_source": block.redact_at_source,
    }
    try:
        data["signing_keys"] = [_secret(n) for n in block.signing_key_secrets]
        config = Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"config block {name!r} is invalid: {problems(error)}") from None
    except ValueError as error:  # a Secret block it names does not exist
        raise ConfigError(f"config block {name!r}: {error}") from None
    config.apply_environment()
    return config


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Explicit path (or `prefect-block:<name>`, see `block_source`), else $XRAYLAKE_CONFIG,
    else the running sandbox's state file."""
    if isinstance(path, str) and path.startswith(BLOCK_SOURCE):
        return load_config_block(path.removeprefix(BLOCK_SOURCE))
    candidate = path or os.environ.get("XRAYLAKE_CONFIG")
    source = Path(candidate) if candidate else sandbox_state_path()
    if not source.exists():
        raise ConfigError(
            f"no configuration at {source}: run `xraylake sandbox up` for the local stack, "
            "or set XRAYLAKE_CONFIG to a config file for real AWS"
        )
    try:
        data = orjson.loads(source.read_bytes())
    except OSError as error:
        raise ConfigError(f"cannot read the configuration {source}: {error.strerror or error}") from None
    except orjson.JSONDecodeError as error:
        raise ConfigError(f"configuration {source} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"configuration {source} is not a JSON object")
    try:
        config = Config.model_validate(resolve_secrets(data.get("config", data)))
    except ValidationError as error:
        raise ConfigError(f"configuration {source} is invalid: {problems(error)}") from None
    except ValueError as error:  # e.g. a Prefect Secret it names does not exist
        raise ConfigError(f"configuration {source}: {error}") from None
    config.apply_environment()
    return config


def problems(error: ValidationError) -> str:
    """A pydantic error as one line: `where: what` for each problem, `; ` between them."""
    parts = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        what = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {what}" if where else what)
    return "; ".join(parts)
