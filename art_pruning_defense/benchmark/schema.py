"""
Schemas of what the benchmark reads back: cell records (``cells/<key>.json``) and grid files. Written as JSON Schema
(draft 2020-12) and checked with ``jsonschema`` on every read: types, known keys only, finite numbers within their
ranges (percentages in [0, 100], AUROC in [0, 1]), bounded strings and lists. JSON's own text is parsed strictly
first (:func:`art_pruning_defense._integrity.strict_json_loads`: no ``NaN`` or ``Infinity``), since a JSON Schema
range check lets NaN through.

Framework-free: neither TensorFlow nor ART is imported here.
"""

from __future__ import annotations

import functools
from typing import Any

from art_pruning_defense.benchmark.config import (
    GRID_AXES,
    GRID_KEYS,
    MAX_RETUNE_POISONS,
    MAX_SEED,
    OPTIONAL_FIELDS,
    BenchmarkConfig,
)

#: Most characters of an input quoted in an error message.
MAX_QUOTED_CHARS = 200
#: Longest text (a defence name; a note or an error) kept in a record.
MAX_NAME_CHARS = 200
MAX_TEXT_CHARS = 20_000
#: Most rows in a record, points on a ROC curve, values on one grid axis.
MAX_ROWS = 1000
MAX_ROC_POINTS = 1000
MAX_AXIS_VALUES = 10_000

_NULL = {"type": "null"}
_PERCENT = {"anyOf": [_NULL, {"type": "number", "minimum": 0, "maximum": 100}]}
_SHARE = {"anyOf": [_NULL, {"type": "number", "minimum": 0, "maximum": 1}]}
_NON_NEGATIVE = {"type": "number", "minimum": 0}
_TEXT = {"anyOf": [_NULL, {"type": "string", "maxLength": MAX_TEXT_CHARS}]}
_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

#: Percent figures of a row, and figures in [0, 1].
PERCENT_KEYS = (
    "clean_accuracy",
    "attack_success_rate",
    "poison_detection_tpr",
    "poison_detection_fpr",
    "poisoned_flagged",
    "clean_flagged",
    "tpr_at_1pct_fpr",
)
SHARE_KEYS = ("auroc", "poison_detection_auroc")
#: The re-tuning attack's figures of a row (percent), one pair per k: ``asr_after_retune_k5``, ``clean_after_retune_k5``
#: (:mod:`~art_pruning_defense.benchmark.retune`).
RETUNE_KEY_PATTERN = "^(asr|clean)_after_retune_k[0-9]{1,7}$"

ROW_SCHEMA: dict = {
    "type": "object",
    "additionalProperties": False,
    "required": ["defence", *PERCENT_KEYS, *SHARE_KEYS, "seconds", "note", "error", "roc"],
    "properties": {
        "defence": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
        **{key: _PERCENT for key in PERCENT_KEYS},
        **{key: _SHARE for key in SHARE_KEYS},
        "seconds": _NON_NEGATIVE,
        "note": _TEXT,
        "error": _TEXT,
        "roc": {
            "anyOf": [
                _NULL,
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["fpr", "tpr"],
                    "properties": {
                        name: {
                            "type": "array",
                            "maxItems": MAX_ROC_POINTS,
                            "items": {"type": "number", "minimum": 0, "maximum": 1},
                        }
                        for name in ("fpr", "tpr")
                    },
                },
            ]
        },
        "peak_rss_mib": {"anyOf": [_NULL, _NON_NEGATIVE]},
        "retune_seconds": _NON_NEGATIVE,
    },
    "patternProperties": {RETUNE_KEY_PATTERN: _PERCENT},
}


def _config_schema() -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [name for name in BenchmarkConfig.__dataclass_fields__ if name not in OPTIONAL_FIELDS],
        "properties": {name: {} for name in BenchmarkConfig.__dataclass_fields__},
    }


def record_schema() -> dict:
    """
    :return: The JSON Schema of a cell record (see :func:`~art_pruning_defense.benchmark.runner.run_cell`).
    """
    count = {"type": "integer", "minimum": 0}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["key", "label", "hash", "inputs", "config", "resolved", "attack", "versions", "data", "rows"],
        "properties": {
            "key": {"type": "string", "maxLength": 250},
            "label": {"type": "string", "maxLength": 200},
            "hash": _HEX64,
            "inputs": {
                "type": "object",
                "additionalProperties": False,
                "required": ["data_sha256", "model_sha256"],
                "properties": {"data_sha256": {"anyOf": [_NULL, _HEX64]}, "model_sha256": {"anyOf": [_NULL, _HEX64]}},
            },
            "config": _config_schema(),
            "resolved": _config_schema(),
            "attack": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "options"],
                "properties": {
                    "name": {"type": "string", "maxLength": MAX_NAME_CHARS},
                    "options": {"type": "object", "maxProperties": 50},
                },
            },
            "versions": {
                "type": "object",
                "maxProperties": 20,
                "additionalProperties": {"type": "string", "maxLength": MAX_NAME_CHARS},
            },
            "data": {
                "type": "object",
                "additionalProperties": False,
                "properties": {key: count for key in ("train", "poisoned", "valid", "test", "test_triggered")},
            },
            "rows": {"type": "array", "minItems": 1, "maxItems": MAX_ROWS, "items": ROW_SCHEMA},
            "seconds": _NON_NEGATIVE,
            "peak_rss_mib": {
                "type": "object",
                "additionalProperties": False,
                "properties": {key: {"anyOf": [_NULL, _NON_NEGATIVE]} for key in ("data", "training", "defences")},
            },
            "model_cache": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"key": {"anyOf": [_NULL, _HEX64]}, "hit": {"type": "boolean"}},
            },
        },
    }


def _axis(items: dict) -> dict:
    return {"type": "array", "minItems": 1, "maxItems": MAX_AXIS_VALUES, "items": items}


def grid_file_schema() -> dict:
    """
    :return: The JSON Schema of a grid file's values (after TOML/YAML parsing): known keys, each of its type; the
             ranges and the cross-checks are :class:`~art_pruning_defense.benchmark.config.GridConfig`'s.
    """
    name = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS}
    path = {"type": "string", "minLength": 1, "maxLength": 4096}
    positive = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
    number = {"type": "number"}
    properties: dict[str, Any] = {
        "archs": _axis(name),
        "attacks": _axis(name),
        "poison_rates": _axis({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}),
        "seeds": _axis({"type": "integer", "minimum": 0, "maximum": MAX_SEED}),
        "model": path,
        "data": path,
        "trigger": name,
        "attack_options": {
            "type": "object",
            "maxProperties": 20,
            "additionalProperties": {"type": "object", "maxProperties": 50},
        },
        "target": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "n_valid": positive,
        "epochs": positive,
        "batch_size": positive,
        "augment": {"type": "boolean"},
        "flip": {"type": "boolean"},
        "predict_batch_size": positive,
        "defences": {"type": "array", "maxItems": 100, "items": name},
        "accuracy_drops": {"type": "array", "minItems": 1, "maxItems": 100, "items": number},
        "goodnet_drop": number,
        "fine_tune_epochs": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "neural_cleanse_steps": positive,
        "neural_cleanse_samples": positive,
        "neural_cleanse_patience": positive,
        "neural_cleanse_batch_size": positive,
        "neural_cleanse_learning_rate": number,
        "strip_num_samples": positive,
        "strip_false_acceptance_rate": number,
        "retune_poisons": {
            "type": "array",
            "maxItems": 100,
            "items": {"type": "integer", "minimum": 0, "maximum": MAX_RETUNE_POISONS},
        },
    }
    assert set(properties) == set(GRID_KEYS) and set(GRID_AXES) <= set(properties)
    return {"type": "object", "additionalProperties": False, "properties": properties}


@functools.lru_cache(maxsize=None)
def _validator(kind: str) -> Any:
    import jsonschema

    schema = record_schema() if kind == "record" else grid_file_schema()
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def quote(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """
    :return: ``repr(value)`` on one line, cut to ``limit`` characters (with ``…`` where it was cut).
    """
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message(error: Any) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "top level"
    validator = error.validator
    if validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        extra = sorted(str(key) for key in error.instance if key not in known)
        return f"{where}: unknown key(s) {quote(', '.join(extra))}"
    if validator == "required":
        missing = [key for key in error.validator_value if key not in error.instance]
        return f"{where}: missing key(s) {', '.join(missing)}"
    if validator in ("anyOf", "oneOf"):
        # The closest alternative's complaint (e.g. a number out of range, rather than "not null").
        best = [sub for sub in error.context if sub.validator != "type" or sub.validator_value != "null"]
        if best:
            return _message(best[0])
    expected = {
        "type": f"expected {error.validator_value}",
        "minimum": f"expected at least {error.validator_value}",
        "maximum": f"expected at most {error.validator_value}",
        "exclusiveMinimum": f"expected more than {error.validator_value}",
        "exclusiveMaximum": f"expected less than {error.validator_value}",
        "maxLength": f"expected at most {error.validator_value} characters",
        "minLength": f"expected at least {error.validator_value} characters",
        "maxItems": f"expected at most {error.validator_value} values",
        "minItems": f"expected at least {error.validator_value} value(s)",
        "maxProperties": f"expected at most {error.validator_value} keys",
        "pattern": "expected a 64-digit hexadecimal SHA-256",
    }.get(validator, f"fails {validator}")
    return f"{where}: {expected}, got {quote(error.instance, 80)}"


def validate(value: Any, kind: str, source: str) -> None:
    """
    :param value: A parsed cell record (``kind="record"``) or grid file (``kind="grid"``).
    :param kind: ``"record"`` or ``"grid"``.
    :param source: Where it comes from (a file name), put before the message.
    :raises ValueError: On the first error, in one line naming ``source``, the key and what was expected.
    """
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(value))
    if error is not None:
        raise ValueError(f"{source}: {_message(error)}.")
