"""MLflow's ``/invocations`` body, parsed the way ``mlflow.pyfunc.scoring_server`` does
without a schema (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``,
CSV, Parquet), and its ``{"predictions": ...}`` answer.
"""

from __future__ import annotations

import base64
import datetime
import json
import sys
from dataclasses import dataclass
from io import BytesIO, StringIO
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pydantic

from modelyard.errors import ModelyardError

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

from modelyard.serving.tensors import (
    Array,
    ProtocolError,
    UnsupportedMediaError,
    _error,
)

# -- MLflow /invocations -----------------------------------------------------------------

_CONTENT_TYPES: Final = ("text/csv", "application/json", "application/vnd.apache.parquet")
_FORMATS: Final = ("dataframe_split", "dataframe_records", "instances", "inputs")
_LLM_KEYS: Final = ("messages", "prompt", "input")  # MLflow's unified LLM payloads
_REQUIRED_INPUT_FORMAT: Final = (
    "The input must be a JSON dictionary with exactly one of the input fields "
    "{'dataframe_split', 'dataframe_records', 'instances', 'inputs'}"
)


@dataclass(frozen=True)
class InvocationsInput:
    """A decoded ``/invocations`` body.

    ``data`` is what MLflow would hand to ``predict``: a DataFrame, an array, a dict of
    arrays, a list of dicts of arrays, or, for a unified LLM payload (``messages``,
    ``prompt``, ``input``), the JSON object itself. ``params`` go to
    ``predict(..., params=)``. ``unwrapped`` answers must skip the ``predictions`` key.
    """

    data: pd.DataFrame | Array | dict[str, Any] | list[dict[str, Array]]
    params: dict[str, Any] | None
    unwrapped: bool = False


def _mlflow_array(value: Any, key: str) -> Array:
    # mlflow.utils.proto_json_utils.convert_data_type without a spec: numpy's own words.
    try:
        return np.array(value)
    except Exception as exc:
        raise _error(str(exc), field=key) from exc


def _tf_serving_input(key: str, value: Any) -> Any:
    # mlflow.utils.proto_json_utils.parse_tf_serving_input without a schema.
    if isinstance(value, dict):
        return {name: _mlflow_array(item, key) for name, item in value.items()}
    if not isinstance(value, list):
        return _mlflow_array(value, key)
    if key == "inputs" or not (value and isinstance(value[0], dict)):
        if all(isinstance(item, dict) for item in value):
            return [{n: _mlflow_array(v, key) for n, v in item.items()} for item in value]
        return _mlflow_array(value, key)
    stacked: dict[str, list[Array]] = {}
    try:
        for row in value:
            for name, item in row.items():
                stacked.setdefault(name, []).append(_mlflow_array(item, key))
        columns = {name: np.array(items) for name, items in stacked.items()}
    except ProtocolError:
        raise
    except Exception as exc:  # a row that is not an object, rows numpy cannot stack
        raise _error(
            f"Ensure that the input is a valid JSON-formatted string.\nError: {exc!r}", field=key
        ) from exc
    if len({len(column) for column in columns.values()}) > 1:
        raise _error("The length of values for each input/column name are not the same", field=key)
    return columns


def _dataframe(value: Any, orient: str) -> pd.DataFrame:
    # mlflow.utils.proto_json_utils.dataframe_from_parsed_json without a schema.
    import pandas as pd

    field = f"dataframe_{orient}"
    if orient == "records" and not isinstance(value, list):
        got = "dictionary" if isinstance(value, dict) else f"type {type(value)}"
        raise _error(f"Dataframe records format must be a list of records. Got {got}.", field=field)
    if orient == "split":
        if not isinstance(value, dict):
            got = "list" if isinstance(value, list) else f"type {type(value)}"
            raise _error(f"Dataframe split format must be a dictionary. Got {got}.", field=field)
        if "data" not in value or set(value) - {"columns", "data", "index"}:
            raise _error(
                "Dataframe split format must have 'data' field and optionally 'columns' "
                f"and 'index' fields. Got {set(value)}.",
                field=field,
            )
    try:
        if orient == "records":
            return pd.DataFrame(data=value)
        return pd.DataFrame(
            index=value.get("index"), columns=value.get("columns"), data=value["data"]
        )
    except Exception as exc:
        raise _error(
            f"Provided {field} field is not a valid dataframe representation in '{orient}' "
            f"format. Error: '{exc}'",
            field=field,
        ) from exc


def _invocations_json(body: bytes) -> InvocationsInput:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _error(
            "request body is not JSON. Ensure that input is a valid JSON formatted string. "
            f"Error: '{exc!r}'",
            field="$",
        ) from exc
    if not isinstance(doc, dict):
        got = "a list" if isinstance(doc, list) else f"unexpected input type '{type(doc)}'"
        raise _error(f"{_REQUIRED_INPUT_FORMAT}. Received {got}.", field="$")
    if any(key in doc for key in _LLM_KEYS):
        return InvocationsInput(doc, {}, unwrapped=True)
    params = doc.get("params")
    if params is not None and not isinstance(params, dict):
        raise _error('"params" must be a JSON object', field="params")
    keys = [key for key in _FORMATS if key in doc]
    if len(keys) != 1:
        raise _error(
            f"{_REQUIRED_INPUT_FORMAT}. Received dictionary with input fields: {list(doc)}.",
            field="$",
        )
    key = keys[0]
    if key in ("instances", "inputs"):
        return InvocationsInput(_tf_serving_input(key, doc[key]), params)
    return InvocationsInput(_dataframe(doc[key], key.removeprefix("dataframe_")), params)


def _tabular(body: bytes, mime: str) -> pd.DataFrame:
    import pandas as pd

    csv = mime == "text/csv"
    try:
        source = StringIO(body.decode("utf-8")) if csv else BytesIO(body)
    except UnicodeDecodeError as exc:
        raise _error(
            f"Ensure that input is a valid UTF-8 encoded string. Error: '{exc!r}'", field="$"
        ) from exc
    try:
        return pd.read_csv(source) if csv else pd.read_parquet(source)
    except Exception as exc:
        raise _error(
            "Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid "
            f"{'CSV' if csv else 'Parquet'}-formatted Pandas DataFrame produced using the "
            f"`pandas.DataFrame.{'to_csv' if csv else 'to_parquet'}()` method. Error: '{exc}'",
            field="$",
        ) from exc


def decode_invocations(body: bytes, content_type: str) -> InvocationsInput:
    """Decode an MLflow ``/invocations`` body as ``mlflow.pyfunc.scoring_server`` does.

    JSON bodies carry exactly one of ``dataframe_split``, ``dataframe_records``,
    ``instances`` and ``inputs`` (plus optional ``params``), or are a unified LLM payload;
    ``text/csv`` and ``application/vnd.apache.parquet`` bodies are one DataFrame. No
    schema is applied: the server enforces the model's signature.

    Raises:
        UnsupportedMediaError: Another content type, a charset other than UTF-8, or
            unknown content type parameters.
        ProtocolError: A body that does not parse, with MLflow's messages.
    """
    mime, *options = (part.strip() for part in content_type.split(";"))
    mime = mime.lower()
    parameters = {
        key.strip().lower(): value.strip().strip('"')
        for key, _, value in (option.partition("=") for option in options if option)
    }
    if parameters.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaError(
            "The scoring server only supports UTF-8", details={"content_type": content_type}
        )
    if unknown := sorted(set(parameters) - {"charset"}):
        raise UnsupportedMediaError(
            f"Unrecognized content type parameters: {', '.join(unknown)}.",
            details={"content_type": content_type},
        )
    if mime == "application/json":
        return _invocations_json(body)
    if mime in _CONTENT_TYPES:
        return InvocationsInput(_tabular(body, mime), None)
    raise UnsupportedMediaError(
        "This predictor only supports the following content types: "
        f"Types: {list(_CONTENT_TYPES)}. Got '{content_type}'.",
        details={"content_type": content_type},
    )


def numeric_rows(body: bytes, content_type: str, columns: list[str]) -> Array | None:
    """The rows of a plain JSON ``dataframe_split`` or ``dataframe_records`` body of
    numbers, as a float64 array in ``columns``' order, without a DataFrame; ``None`` for
    anything else (other formats, params, text, missing columns), which then takes the
    general path and its messages."""
    if content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    try:
        data = json.loads(body)
        if not isinstance(data, dict) or len(data) != 1:
            return None
        if (split := data.get("dataframe_split")) is not None:
            if not isinstance(split, dict) or set(split) - {"columns", "data", "index"}:
                return None
            given = split.get("columns")
            if not isinstance(given, list) or not set(columns) <= set(given):
                return None
            values = np.asarray(split["data"], dtype=np.float64)
            if values.ndim != 2 or values.shape[1] != len(given):
                return None
            if given == columns:
                return values
            position = {name: i for i, name in enumerate(given)}
            return values[:, [position[name] for name in columns]]
        records = data.get("dataframe_records")
        if isinstance(records, list) and records and all(isinstance(r, dict) for r in records):
            return np.asarray([[r[name] for name in columns] for r in records], dtype=np.float64)
    except (ValueError, TypeError, KeyError):
        return None
    return None


class _PredictionsEncoder(json.JSONEncoder):
    """What ``mlflow.utils.proto_json_utils.NumpyEncoder`` does, without importing MLflow."""

    def default(self, o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, bytes | bytearray):
            return base64.encodebytes(o).decode("ascii")
        if isinstance(o, datetime.date | datetime.time):  # pandas.Timestamp included
            return o.isoformat()
        if isinstance(o, pydantic.BaseModel):
            return o.model_dump()
        return super().default(o)


def encode_predictions(predictions: Any, *, unwrapped: bool = False) -> bytes:
    """Encode a model's output as MLflow's scoring server does: ``{"predictions": ...}``.

    DataFrames go as records, Series as records of one column, arrays as nested lists,
    bytes as base64, dates in ISO format. ``unwrapped`` (unified LLM payloads) drops the
    ``predictions`` key.

    Raises:
        ModelyardError: The predictions cannot be written as JSON
            (``serving/unsupported_output``).
    """
    payload: Any = predictions
    if isinstance(predictions, np.ndarray):
        payload = predictions.tolist()
    elif (pd := sys.modules.get("pandas")) is not None:  # a DataFrame implies pandas is loaded
        if isinstance(predictions, pd.DataFrame):
            payload = predictions.to_dict(orient="records")
        elif isinstance(predictions, pd.Series):
            payload = pd.DataFrame(predictions).to_dict(orient="records")
    try:
        text = json.dumps(
            payload if unwrapped else {"predictions": payload}, cls=_PredictionsEncoder
        )
    except (TypeError, ValueError) as exc:
        raise ModelyardError(
            f"the model's predictions cannot be written as JSON: {exc}",
            code="serving/unsupported_output",
        ) from exc
    return text.encode("utf-8")
