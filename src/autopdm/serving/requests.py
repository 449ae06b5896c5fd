"""Request types of the HTTP API: pydantic annotations that reject bad input with a 400 naming the field."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Optional, Union

import pandas as pd
from pydantic import AfterValidator, Field, StringConstraints

from autopdm.pipeline.features import CATEGORICAL

def _check_date(v: Optional[str]) -> Optional[str]:
    if v is not None:
        try:
            date.fromisoformat(v)
        except ValueError:
            raise ValueError(f"not a calendar date: {v!r}") from None
    return v


IsoDate = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$"), AfterValidator(_check_date)]
VehicleIds = Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
                       Field(min_length=1, max_length=1000)]
Scalar = Union[float, str, None]  # ints and booleans arrive as floats; a short union keeps validation fast
_CATEGORICAL = frozenset(CATEGORICAL)
NUMERIC_FEATURES: set[str] = set()  # filled by the service once the models are loaded
FEATURE_ORDER: list[str] = []       # the column order of compact (array) rows


def set_model_features(names) -> None:
    NUMERIC_FEATURES.clear()
    NUMERIC_FEATURES.update(set(names) - _CATEGORICAL)
    FEATURE_ORDER[:] = list(names)


def _check_array_row(row: list) -> list:
    if FEATURE_ORDER and len(row) != len(FEATURE_ORDER):
        raise ValueError(f"an array row needs {len(FEATURE_ORDER)} values in the order of /model_info "
                         f"feature_order, got {len(row)}")
    return row


def _check_row(row: dict) -> dict:
    """Model features must be numbers (or null = missing); other keys are ignored."""
    if str in set(map(type, row.values())):  # C-speed screen; the loop runs only for rows with text
        for k, v in row.items():
            if v.__class__ is str and k in NUMERIC_FEATURES:
                raise ValueError(f"{k}: expected a number or null, got a string")
    return row


FeatureRow = Union[Annotated[dict[str, Scalar], AfterValidator(_check_row)],
                   Annotated[list[Optional[float]], AfterValidator(_check_array_row)]]
FeatureRows = Annotated[list[FeatureRow], Field(min_length=1, max_length=10_000)]
Record = Annotated[dict[Annotated[str, StringConstraints(max_length=100)], Scalar], Field(max_length=100)]
BatchId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
Records = Annotated[list[Record], Field(max_length=500_000)]


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()
