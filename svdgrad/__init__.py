"""svdgrad: differentiable eigh and matrix square root with interchangeable backward methods."""

from ._api import eigh, sqrtm
from ._errors import SvdgradError
from ._methods import (
    Exact,
    Method,
    NewtonSchulz,
    Ordinary,
    Pade,
    Taylor,
    TopN,
    Truncated,
    get_method,
    method_spec,
    methods,
)

__all__ = [
    "sqrtm",
    "eigh",
    "methods",
    "get_method",
    "method_spec",
    "SvdgradError",
    "Method",
    "Exact",
    "Ordinary",
    "Truncated",
    "TopN",
    "Taylor",
    "Pade",
    "NewtonSchulz",
]
__version__ = "0.1.0"
