"""Configuration from ``HANGGUARD_*`` variables: defaults, units, and errors at the getter."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from hangguard import Config, ConfigError, load_config
from hangguard import _config as config
from hangguard._config import (
    ENV_BUDGETS,
    ENV_CANCEL_EVENTS,
    ENV_CANCEL_GRACE,
    ENV_DEFAULT_BUDGET,
    ENV_JOIN_TIMEOUT,
    ENV_LOOP_BLOCK_THRESHOLD,
    ENV_MCP_CONNECT_TIMEOUT,
    ENV_MCP_TIMEOUT,
    ENV_RETRY_ATTEMPTS,
    ENV_SERIAL,
    ENV_VARS,
    parse_duration,
)

# Each variable with its getter and its documented default.
GETTERS: list[tuple[str, Callable[[], object], object]] = [
    (ENV_DEFAULT_BUDGET, config.default_budget, config.DEFAULT_OP_BUDGET),
    (ENV_BUDGETS, config.budgets, {}),
    (ENV_JOIN_TIMEOUT, config.join_timeout, math.inf),
    (ENV_MCP_TIMEOUT, config.mcp_timeout, 30.0),
    (ENV_MCP_CONNECT_TIMEOUT, config.mcp_connect_timeout, 10.0),
    ("HANGGUARD_MCP_BREAKER", config.mcp_breaker, None),
    (ENV_RETRY_ATTEMPTS, config.retry_attempts, 3),
    (ENV_CANCEL_GRACE, config.cancel_grace, 1.0),
    (ENV_CANCEL_EVENTS, config.cancel_events, 16),
    (ENV_SERIAL, config.serial, False),
    (ENV_LOOP_BLOCK_THRESHOLD, config.loop_block_threshold, None),
    (config.ENV_PS, config.ps, None),
    (config.ENV_SNAPSHOT_AFTER, config.snapshot_after, 10.0),
    (config.ENV_RECORD_ON_SIGTERM, config.record_on_sigterm, True),
]

DURATION_VARS = [
    (ENV_DEFAULT_BUDGET, config.default_budget),
    (ENV_JOIN_TIMEOUT, config.join_timeout),
    (ENV_MCP_TIMEOUT, config.mcp_timeout),
    (ENV_MCP_CONNECT_TIMEOUT, config.mcp_connect_timeout),
    (ENV_CANCEL_GRACE, config.cancel_grace),
]

# Bad values for every variable: each must fail at its getter, naming it.
BAD_VALUES: list[tuple[str, Callable[[], object], str]] = [
    (ENV_DEFAULT_BUDGET, config.default_budget, "soon"),
    (ENV_DEFAULT_BUDGET, config.default_budget, "-5"),
    (ENV_DEFAULT_BUDGET, config.default_budget, "0"),
    (ENV_BUDGETS, config.budgets, "SearchOp=0"),
    (ENV_JOIN_TIMEOUT, config.join_timeout, "0s"),
    (ENV_MCP_TIMEOUT, config.mcp_timeout, "-1"),
    (ENV_CANCEL_GRACE, config.cancel_grace, "-1"),
    (ENV_DEFAULT_BUDGET, config.default_budget, "10 days"),
    (ENV_DEFAULT_BUDGET, config.default_budget, "nan"),
    (ENV_DEFAULT_BUDGET, config.default_budget, "1e400"),
    (ENV_BUDGETS, config.budgets, "SearchOp"),
    (ENV_BUDGETS, config.budgets, "SearchOp=fast"),
    (ENV_BUDGETS, config.budgets, "=30"),
    (ENV_BUDGETS, config.budgets, "SearchOp=1,SearchOp=2"),
    (ENV_JOIN_TIMEOUT, config.join_timeout, "1.2.3"),
    (ENV_MCP_TIMEOUT, config.mcp_timeout, "30x"),
    (ENV_MCP_CONNECT_TIMEOUT, config.mcp_connect_timeout, "ten"),
    (ENV_RETRY_ATTEMPTS, config.retry_attempts, "0"),
    (ENV_RETRY_ATTEMPTS, config.retry_attempts, "-1"),
    (ENV_RETRY_ATTEMPTS, config.retry_attempts, "2.5"),
    (ENV_RETRY_ATTEMPTS, config.retry_attempts, "many"),
    (ENV_CANCEL_GRACE, config.cancel_grace, "none"),
    (ENV_CANCEL_GRACE, config.cancel_grace, "1 sec"),
    (ENV_CANCEL_EVENTS, config.cancel_events, "-1"),
    (ENV_CANCEL_EVENTS, config.cancel_events, "some"),
    (ENV_CANCEL_EVENTS, config.cancel_events, "2.5"),
    (ENV_SERIAL, config.serial, "maybe"),
    (ENV_SERIAL, config.serial, "2"),
    (ENV_LOOP_BLOCK_THRESHOLD, config.loop_block_threshold, "0"),
    (ENV_LOOP_BLOCK_THRESHOLD, config.loop_block_threshold, "fast"),
    (config.ENV_PS, config.ps, "sometimes"),
    (config.ENV_SNAPSHOT_AFTER, config.snapshot_after, "0"),
    (config.ENV_SNAPSHOT_AFTER, config.snapshot_after, "soon"),
    (config.ENV_RECORD_ON_SIGTERM, config.record_on_sigterm, "perhaps"),
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def test_env_vars_table_lists_every_variable() -> None:
    assert set(ENV_VARS) == {name for name, _, _ in GETTERS}
    for name, (default, meaning) in ENV_VARS.items():
        assert name.startswith("HANGGUARD_")
        assert default
        assert meaning


@pytest.mark.parametrize(("name", "getter", "default"), GETTERS, ids=[g[0] for g in GETTERS])
def test_defaults(name: str, getter: Callable[[], object], default: object) -> None:
    assert getter() == default


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2.5", 2.5),
        (".5", 0.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        (" 45 s ", 45.0),
        ("1e2", 100.0),
        ("1.5e1ms", 0.015),
    ],
)
@pytest.mark.parametrize(("name", "getter"), DURATION_VARS, ids=[d[0] for d in DURATION_VARS])
def test_durations_with_units(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    getter: Callable[[], float],
    text: str,
    seconds: float,
) -> None:
    monkeypatch.setenv(name, text)
    assert getter() == pytest.approx(seconds)


@pytest.mark.parametrize("word", ["none", "None", "OFF", "inf", "infinite", ""])
@pytest.mark.parametrize(
    ("name", "getter"),
    [d for d in DURATION_VARS if d[0] != ENV_CANCEL_GRACE],
    ids=[d[0] for d in DURATION_VARS if d[0] != ENV_CANCEL_GRACE],
)
def test_none_words_mean_no_limit(
    monkeypatch: pytest.MonkeyPatch, name: str, getter: Callable[[], float], word: str
) -> None:
    monkeypatch.setenv(name, word)
    assert math.isinf(getter())


@pytest.mark.parametrize(("name", "getter", "value"), BAD_VALUES)
def test_bad_value_fails_at_the_getter_naming_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, name: str, getter: Callable[[], object], value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        getter()
    assert info.value.name == name
    assert info.value.value == value
    assert name in str(info.value)
    assert repr(value) in str(info.value)
    # Also a ValueError, for callers that only know the builtin.
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("name", "getter", "value"), BAD_VALUES)
def test_bad_value_fails_load_config(
    monkeypatch: pytest.MonkeyPatch, name: str, getter: Callable[[], object], value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert info.value.name == name


def test_bad_value_does_not_break_unrelated_getters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MCP_TIMEOUT, "garbage")
    assert config.join_timeout() == math.inf
    assert config.retry_attempts() == 3
    with pytest.raises(ConfigError):
        config.mcp_timeout()


def test_value_is_read_on_each_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MCP_TIMEOUT, "5")
    assert config.mcp_timeout() == 5.0
    monkeypatch.setenv(ENV_MCP_TIMEOUT, "7s")
    assert config.mcp_timeout() == 7.0
    monkeypatch.setenv(ENV_MCP_TIMEOUT, "bad")
    with pytest.raises(ConfigError):
        config.mcp_timeout()
    monkeypatch.delenv(ENV_MCP_TIMEOUT)
    assert config.mcp_timeout() == 30.0


@pytest.mark.parametrize("text", ["1", "5", " 10 "])
def test_retry_attempts_valid(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(ENV_RETRY_ATTEMPTS, text)
    assert config.retry_attempts() == int(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_serial_values(monkeypatch: pytest.MonkeyPatch, text: str, expected: bool) -> None:
    monkeypatch.setenv(ENV_SERIAL, text)
    assert config.serial() is expected


def test_cancel_grace_zero_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CANCEL_GRACE, "0")
    assert config.cancel_grace() == 0.0


# --- HANGGUARD_BUDGETS --------------------------------------------------------------------


def test_budgets_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        ENV_BUDGETS, "CompanySegmentFactorOp=120, SearchOp=30s,Fetch=500ms,Slow=none"
    )
    got = config.budgets()
    assert dict(got) == {
        "CompanySegmentFactorOp": 120.0,
        "SearchOp": 30.0,
        "Fetch": 0.5,
        "Slow": math.inf,
    }
    with pytest.raises(TypeError):
        got["New"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", {}), (" ", {}), (",", {}), ("A=1,,B=2,", {"A": 1.0, "B": 2.0})],
)
def test_budgets_tolerates_empty_entries(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: dict[str, float]
) -> None:
    monkeypatch.setenv(ENV_BUDGETS, text)
    assert dict(config.budgets()) == expected


def test_budgets_bad_entry_names_the_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BUDGETS, "SearchOp=30,FetchOp=soon")
    with pytest.raises(ConfigError, match=r"FetchOp") as info:
        config.budgets()
    assert info.value.name == ENV_BUDGETS


def test_op_budget_prefers_the_op_entry_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DEFAULT_BUDGET, "60")
    monkeypatch.setenv(ENV_BUDGETS, "SearchOp=5")
    assert config.op_budget("SearchOp") == 5.0
    assert config.op_budget("OtherOp") == 60.0


def test_op_budget_entry_none_beats_a_finite_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DEFAULT_BUDGET, "60")
    monkeypatch.setenv(ENV_BUDGETS, "LongOp=none")
    assert math.isinf(config.op_budget("LongOp"))


def test_op_budget_unset_is_the_finite_default() -> None:
    assert config.op_budget("AnyOp") == config.DEFAULT_OP_BUDGET
    assert not math.isinf(config.DEFAULT_OP_BUDGET)


def test_op_budget_bad_default_fails_only_when_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DEFAULT_BUDGET, "bad")
    monkeypatch.setenv(ENV_BUDGETS, "SearchOp=5")
    # The op's own entry answers without looking at the default.
    assert config.op_budget("SearchOp") == 5.0
    with pytest.raises(ConfigError) as info:
        config.op_budget("OtherOp")
    assert info.value.name == ENV_DEFAULT_BUDGET


# --- parse_duration and load_config --------------------------------------------------------


def test_parse_duration_names_the_given_name() -> None:
    with pytest.raises(ConfigError, match="MY_VAR") as info:
        parse_duration("abc", name="MY_VAR")
    assert info.value.name == "MY_VAR"


def test_parse_duration_disallowing_none() -> None:
    with pytest.raises(ConfigError, match="X"):
        parse_duration("none", name="X", allow_none=False)
    assert parse_duration("3", name="X", allow_none=False) == 3.0


def test_load_config_defaults() -> None:
    assert load_config() == Config()


def test_load_config_reads_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DEFAULT_BUDGET, "90")
    monkeypatch.setenv(ENV_BUDGETS, "SearchOp=30")
    monkeypatch.setenv(ENV_JOIN_TIMEOUT, "2m")
    monkeypatch.setenv(ENV_MCP_TIMEOUT, "45")
    monkeypatch.setenv(ENV_MCP_CONNECT_TIMEOUT, "3s")
    monkeypatch.setenv(ENV_RETRY_ATTEMPTS, "5")
    monkeypatch.setenv(ENV_CANCEL_GRACE, "250ms")
    monkeypatch.setenv(ENV_CANCEL_EVENTS, "0")
    monkeypatch.setenv(ENV_SERIAL, "1")
    cfg = load_config()
    assert cfg.default_budget == 90.0
    assert dict(cfg.budgets) == {"SearchOp": 30.0}
    assert cfg.join_timeout == 120.0
    assert cfg.mcp_timeout == 45.0
    assert cfg.mcp_connect_timeout == 3.0
    assert cfg.retry_attempts == 5
    assert cfg.cancel_grace == 0.25
    assert cfg.cancel_events == 0
    assert cfg.serial is True


def test_import_succeeds_with_garbage_in_every_variable() -> None:
    # A fresh interpreter, so the import really runs with the bad environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANGGUARD_")}
    env.update({name: "\x01garbage=,=" for name in ENV_VARS})
    code = textwrap.dedent(
        """
        import hangguard
        from hangguard import _config
        try:
            _config.mcp_timeout()
        except hangguard.ConfigError as exc:
            print("getter:", exc.name)
        print("imported")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "imported" in proc.stdout
    assert f"getter: {ENV_MCP_TIMEOUT}" in proc.stdout


@pytest.mark.parametrize("text", ["0", "0s", "-1", "-2m", "soon", "1e400", "2.5", "500ms"])
def test_a_flag_and_its_variable_accept_the_same_values_in_the_same_words(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    from hangguard._cli._app import _duration

    monkeypatch.setenv(ENV_MCP_TIMEOUT, text)
    flag = _duration("--timeout")
    try:
        from_env: object = config.mcp_timeout()
    except ConfigError as exc:
        from_env = str(exc).replace(ENV_MCP_TIMEOUT, "X").replace(" ('none' for no limit)", "")
        from_env = from_env.replace(", or 'none'", "")
    try:
        from_flag: object = flag(text)
    except argparse.ArgumentTypeError as exc:
        from_flag = str(exc).replace("--timeout", "X")
    assert from_env == from_flag


def test_zero_and_negative_durations_say_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    for text in ("0", "-1"):
        monkeypatch.setenv(ENV_DEFAULT_BUDGET, text)
        with pytest.raises(ConfigError, match=r"must be > 0 \('none' for no limit\)"):
            config.default_budget()
    monkeypatch.setenv(ENV_CANCEL_GRACE, "-1")
    with pytest.raises(ConfigError, match="must be >= 0"):
        config.cancel_grace()


def test_a_bad_boolean_names_every_accepted_word(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SERIAL, "2")
    with pytest.raises(ConfigError, match="1 or 0 \\(or true/false, yes/no, on/off\\)"):
        config.serial()


def test_one_table_drives_the_getters_config_and_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variable is in the table once, fills one Config field, and Config's defaults
    are what the getters return with the variable unset (no default written twice)."""
    import dataclasses

    from hangguard import _config as cfg

    fields = {f.name for f in dataclasses.fields(cfg.Config)}
    assert sorted(v.field for v in cfg.TABLE) == sorted(fields)
    assert len({v.name for v in cfg.TABLE}) == len(cfg.TABLE)
    for var in cfg.TABLE:
        monkeypatch.delenv(var.name, raising=False)
    assert cfg.load_config() == cfg.Config()


# --- HANGGUARD_BUDGETS entries that name no op ----------------------------------------------


def _budget_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if ENV_BUDGETS in r.getMessage()]


def test_a_misspelled_budget_entry_is_reported_once_with_the_close_match(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import uuid

    import hangguard
    from hangguard.testing import BaseAsyncOp

    tag = uuid.uuid4().hex[:8]  # a value of the variable no other test has checked
    name = f"CompanySegmentFactorOp{tag}"

    @hangguard.guarded_op(name)
    class Op(BaseAsyncOp):
        async def async_execute(self) -> int:
            return 1

    monkeypatch.setenv(ENV_BUDGETS, f"CompanySegmentFactrOp{tag}=1,Empty{tag}=")
    with caplog.at_level("WARNING", logger="hangguard"):
        assert asyncio.run(Op().async_call()) == 1
        assert asyncio.run(Op().async_call()) == 1
    warnings = _budget_warnings(caplog)
    assert len([w for w in warnings if f"'CompanySegmentFactrOp{tag}'" in w]) == 1, warnings
    assert f"did you mean {name}?" in warnings[0]
    # The empty entry: both unmatched and "no limit", said once each.
    assert [w for w in warnings if f"'Empty{tag}='" in w] == [
        f"{ENV_BUDGETS} entry 'Empty{tag}=' is empty, which means no limit for Empty{tag} "
        f"(write 'Empty{tag}=none' to say so, or give a duration)"
    ]
    assert len(warnings) == 3, warnings


def test_budget_entries_that_match_say_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import uuid

    import hangguard

    tag = uuid.uuid4().hex[:8]

    @hangguard.traced(name=f"fetch{tag}")
    async def fetch() -> int:
        return 2

    monkeypatch.setenv(ENV_BUDGETS, f"fetch{tag}=5")
    with caplog.at_level("WARNING", logger="hangguard"):
        assert asyncio.run(fetch()) == 2
    assert _budget_warnings(caplog) == []


def test_doctor_import_lists_the_entries_that_match_no_op(tmp_path: Path) -> None:
    module = tmp_path / "doctor_ops_mod.py"
    module.write_text(
        textwrap.dedent(
            """
            import hangguard
            from hangguard.testing import BaseAsyncOp

            @hangguard.guarded_op
            class CompanySegmentFactorOp(BaseAsyncOp):
                async def async_execute(self):
                    return 1

            class SearchOp(CompanySegmentFactorOp):  # a subclass runs under its own name
                pass
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANGGUARD_", "OTEL_"))}

    def doctor(budgets: str) -> list[dict[str, str]]:
        done = subprocess.run(
            [sys.executable, "-m", "hangguard", "doctor", "--import", "doctor_ops_mod", "--json"],
            cwd=tmp_path,
            env={**env, ENV_BUDGETS: budgets},
            capture_output=True,
            text=True,
            timeout=60,
        )
        checks: list[dict[str, str]] = json.loads(done.stdout)["checks"]
        return [c for c in checks if c["name"] == "budgets"]

    (typo,) = doctor("CompanySegmentFactrOp=1,SearchOp=30")
    assert typo["status"] == "warn"
    assert "'CompanySegmentFactrOp'" in typo["summary"]
    assert "did you mean CompanySegmentFactorOp?" in typo["summary"]
    (fine,) = doctor("CompanySegmentFactorOp=1,SearchOp=30")
    assert fine["status"] == "ok", fine
