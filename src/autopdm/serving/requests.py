"""Request types and checks of the HTTP API: everything a request can get wrong is found here,
before it joins other requests in a batch, and answered with a 4xx naming the field."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Optional, Union

import numpy as np
import pandas as pd
from pydantic import AfterValidator, Field, StringConstraints
from starlette.responses import JSONResponse

from autopdm.pipeline.features import CATEGORICAL

# as_of outside these days is refused: nothing is recorded before 1900 and date arithmetic on
# windows (as_of + 15 days) must stay far from the calendar's and pandas' limits
AS_OF_MIN, AS_OF_MAX = date(1900, 1, 1), date(2199, 12, 31)


class RequestError(Exception):
    """A bad request: answered with `status` and a message naming `field`, never a 500."""

    def __init__(self, field: str, msg: str, status: int = 400) -> None:
        super().__init__(f"{field}: {msg}")
        self.field, self.msg, self.status = field, msg, status

    def response(self) -> JSONResponse:
        return bad_input(self.field, self.msg, self.status)


def bad_input(field: str, msg: str, status: int = 400) -> JSONResponse:
    """An error shaped like BentoML's pydantic errors: {"error", "detail": [{"loc", "msg"}]}."""
    loc = [int(x) if x.isdigit() else x for x in field.split(".")]
    return JSONResponse({"error": f"invalid {field}: {msg}", "detail": [{"loc": loc, "msg": msg}]},
                        status_code=status)


def _check_date(v: Optional[str]) -> Optional[str]:
    if v is not None:
        try:
            d = date.fromisoformat(v)
        except ValueError:
            raise ValueError(f"not a calendar date: {v!r}") from None
        if not AS_OF_MIN <= d <= AS_OF_MAX:
            raise ValueError(f"must be between {AS_OF_MIN} and {AS_OF_MAX}, got {v}")
    return v


IsoDate = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$"), AfterValidator(_check_date)]
VehicleIds = Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
                       Field(min_length=1, max_length=1000)]
Scalar = Union[float, str, None]  # ints and booleans arrive as floats; a short union keeps validation fast
FeatureRow = Union[dict[str, Scalar], list[Optional[float]]]
FeatureRows = Annotated[list[FeatureRow], Field(min_length=1, max_length=10_000)]
Record = Annotated[dict[Annotated[str, StringConstraints(max_length=100)], Scalar], Field(max_length=100)]
BatchId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
Records = Annotated[list[Record], Field(max_length=500_000)]
_CATEGORICAL = frozenset(CATEGORICAL)


def rows_matrix(rows: list, order: list[str]) -> np.ndarray:
    """/predict rows → float matrix in `order` (the models' features). A row is an object
    {feature: value} (other keys ignored, missing → null) or an array of len(order) values.
    Raises RequestError naming the row and feature for text in a numeric feature, a non-finite
    number, an array of the wrong length, or an object that carries none of the features."""
    M = np.full((len(rows), len(order)), np.nan)
    arr = [i for i, r in enumerate(rows) if isinstance(r, list)]
    obj = [i for i, r in enumerate(rows) if not isinstance(r, list)]
    for i in arr:
        if len(rows[i]) != len(order):
            raise RequestError(f"rows.{i}", f"an array row needs {len(order)} values in the order of /model_info "
                                            f"feature_order, got {len(rows[i])}")
    if arr:
        M[arr] = np.array([rows[i] for i in arr], dtype=np.float64)
    if obj:
        known = frozenset(order)
        for i in obj:
            if known.isdisjoint(rows[i]):
                raise RequestError(f"rows.{i}", "none of the model features (see /model_info feature_order)")
        X = pd.DataFrame.from_records([rows[i] for i in obj], columns=order)
        for col in X.columns[X.dtypes == object]:
            text = X[col].map(lambda v: v.__class__ is str)
            if text.any() and col not in _CATEGORICAL:
                raise RequestError(f"rows.{obj[int(np.argmax(text.to_numpy()))]}.{col}", "expected a number or null, got a string")
            X[col] = pd.to_numeric(X[col], errors="coerce")  # a categorical code sent as text
        M[obj] = X.to_numpy(np.float64, na_value=np.nan)
    bad = np.isinf(M)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise RequestError(f"rows.{i}.{order[j]}", "not a finite number")
    return M


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()
