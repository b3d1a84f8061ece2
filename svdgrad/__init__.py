"""svdgrad: differentiable eigh and matrix functions (sqrt, inverse sqrt, log, powers) with interchangeable backward methods."""

from ._api import eigh, gram_inv_sqrtm, gram_sqrtm, inv_sqrtm, logm, matrix_function, powm, sqrtm
from ._spectral import functions
from ._errors import ConvergenceWarning, SvdgradError
from ._methods import (
    Exact,
    Method,
    Mpa,
    Mtp,
    NewtonSchulz,
    PowerIteration,
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
    "inv_sqrtm",
    "logm",
    "powm",
    "matrix_function",
    "gram_sqrtm",
    "gram_inv_sqrtm",
    "functions",
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
    "Mpa",
    "Mtp",
    "PowerIteration",
    "ConvergenceWarning",
]
__version__ = "0.1.0"
