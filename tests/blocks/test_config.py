"""Config files for real deployments: secrets named, not stored; validation of the example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.blocks.system import Secret

from blocks.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.aws.json"


@pytest.mark.usefixtures("prefect_harness")
def test_example_config_resolves_prefect_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "xraylake-external-id": "ext-123",
        "xraylake-hmac-current": "k-new",
        "xraylake-hmac-previous": "k-old",
    }.items():
        Secret(value=value).save(name, overwrite=True)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    config = load_config(EXAMPLE)
    assert config.aws_endpoint_url is None
    assert config.roster.external_id.get_secret_value() == "ext-123"
    assert [k.get_secret_value() for k in config.signing_keys] == ["k-new", "k-old"]
    assert config.roster.accounts[0].account_id == "012345678901"
    assert config.opensearch.auth == "sigv4"
    assert "ext-123" not in repr(config) and "k-new" not in repr(config)


def test_missing_config_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XRAYLAKE_CONFIG", raising=False)
    monkeypatch.setenv("XRAYLAKE_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="xraylake sandbox up"):
        load_config()


def test_account_ids_must_be_12_digit_strings(tmp_path: Path) -> None:
    data = json.loads(EXAMPLE.read_text())
    data["roster"]["accounts"][0]["account_id"] = 12345678901  # a number that lost its leading zero
    data.pop("signing_key_secrets")
    data["roster"].pop("external_id_secret")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="12 digits"):
        load_config(path)


@pytest.mark.slow  # ~30 s on a loaded machine: six block types registered, six blocks saved
@pytest.mark.usefixtures("prefect_harness")
def test_config_saved_as_blocks_drives_runs_and_an_edit_changes_the_next_run(fresh_config) -> None:  # type: ignore[no-untyped-def]
    """`xraylake setup` saves the configuration as blocks; a flow given `config_block` loads their
    current values, so editing the Roster block (as in the UI, here through the API) changes the
    next run."""
    import uuid

    from blocks import Roster
    from blocks.config import ConfigBlock, block_source, load_config_block, save_config_blocks
    from flows.sweep import sweep

    name = f"test-{uuid.uuid4().hex[:8]}"
    saved = save_config_blocks(fresh_config, name)
    assert set(saved) >= {f"xraylake-config/{name}", f"xraylake-roster/{name}", f"secret/{name}-signing-key-1"}
    loaded = load_config_block(name)
    assert loaded.roster.accounts == fresh_config.roster.accounts
    assert loaded.signing_keys == fresh_config.signing_keys  # through the Secret blocks
    assert loaded.roster.external_id.get_secret_value() == fresh_config.roster.external_id.get_secret_value()
    assert ConfigBlock.load(name).signing_key_secrets == [f"{name}-signing-key-1"]  # names, not values

    first, *rest = fresh_config.roster.accounts
    state = sweep(accounts=[first.account_id], lag_seconds=0, config_block=name, return_state=True)
    assert state.is_completed(), state.message

    roster = Roster.load(name)  # what the Blocks page edits
    roster.accounts = rest
    roster.save(name, overwrite=True)
    state = sweep(accounts=[first.account_id], lag_seconds=0, config_block=name, return_state=True)
    assert state.is_failed()
    assert f"UnknownAccountError: account '{first.account_id}' is not in the roster" in str(state.message)
    assert load_config_block(name).roster.accounts == rest
    with pytest.raises(ConfigError, match="no xraylake Config block named 'nope'.*xraylake setup --from-config"):
        load_config_block("nope")
    assert block_source(name) == f"prefect-block:{name}"


def test_an_unknown_account_in_a_large_roster_is_one_short_line() -> None:
    from blocks import MemberAccount, Roster, UnknownAccountError

    roster = Roster(accounts=[MemberAccount(account_id=f"{n:012d}", name=f"a{n}") for n in range(1, 1001)])
    with pytest.raises(UnknownAccountError) as refused:
        roster.get("999999999999")
    message = str(refused.value)
    assert message.startswith("account '999999999999' is not in the roster (known: 000000000001, ")
    assert message.endswith("000000000010 and 990 more)") and len(message) < 250


def test_a_service_map_bucket_outside_the_choices_is_refused_by_name() -> None:
    from pydantic import ValidationError

    from blocks import OpenSearchTarget
    from blocks.config import problems

    with pytest.raises(ValidationError) as error:
        OpenSearchTarget(service_map_bucket_seconds=120)  # type: ignore[arg-type]
    assert problems(error.value) == "service_map_bucket_seconds: Input should be 60, 300 or 3600"
    assert OpenSearchTarget.model_validate({"service_map_bucket_seconds": 300}).service_map_bucket_seconds == 300
    assert OpenSearchTarget().service_map_bucket_seconds == 60
