"""Attention for long sequences on CPU in reduced precision: query chunks, bf16 GEMMs, float32 softmax.

SAM 2's memory attention attends 4096 queries to up to ~29 k memory keys with one head of width 256. On CPU,
``scaled_dot_product_attention``'s flash kernel runs that shape at a fraction of the machine's bf16 matmul
rate. The same product written as a loop over query chunks, each chunk one fused graph (``q @ k.T`` as a bf16
GEMM, the exponentials in float32, cast to bf16 for ``p @ v`` as a bf16 GEMM, the normalisation applied
to the output) compiled by ``torch.compile``, runs it 2-3x faster (BENCHMARKS.md). The softmax arithmetic
is float32, as in SDPA's kernel; the exponentials are rounded to bf16 before the second GEMM (SDPA keeps
them in float32), which moves outputs by about one bf16 ulp.

:func:`rope` applies the memory attentions' rotary encoding the same way (float32 arithmetic, rounded back to
the input's dtype) in one compiled pass instead of five eager ones; same bits.

Compilation happens once per process on first use (seconds; torch caches the generated code on disk). Where
``torch.compile`` cannot run (no C++ compiler, an unsupported platform) the first call warns once and every
call falls back to ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

QUERY_CHUNK = 256  # queries per fused graph: (256, ~29 k) float32 scores stay within the L3 cache's reach
MIN_SCORES = 1 << 22  # smaller attentions (queries x keys) skip the compiled kernel: not worth its first-use compile

_compiled_functions: dict = {}  # function -> its compiled version (any shapes), built on first use
_unavailable: str | None = None  # why compilation failed, once it has


def _chunk(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """One query chunk of one head: (c, d) x (N, d)^T -> exp in float32 -> (c, N) x (N, dv) -> (c, dv).

    The softmax's division is applied to the (c, dv) output instead of the (c, N) probabilities (as flash
    attention does): one pass less over the scores. Two-dimensional on purpose: a batched ``matmul`` over a
    transposed key view makes the compiled graph copy the keys for every chunk; ``mm`` with ``key.t()`` reads
    them in place. The scale enters inside the exponential, after the row maximum of the unscaled scores
    (``scale > 0``): scaling first makes the compiled maximum guard against a negative or non-finite scale, a
    third of the elementwise work on these shapes.
    """
    scores = torch.mm(query, key.t()).float()  # (c, N) float32
    weights = torch.exp((scores - scores.amax(dim=-1, keepdim=True)) * scale)  # (c, N) in (0, 1]
    mixed = torch.mm(weights.to(value.dtype), value).float()  # (c, dv)
    return (mixed / weights.sum(dim=-1, keepdim=True)).to(value.dtype)  # (c, dv)


def _chunk_with_narrow_keys(
    query: torch.Tensor,
    key: torch.Tensor,
    narrow_query: torch.Tensor,
    narrow_key: torch.Tensor,
    narrow_bias: torch.Tensor,
    value: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """:func:`_chunk` over two sets of keys, the second given at a narrower width (see :func:`attention`):
    (c, d) x (N1, d)^T and (c, d2) x (N2, d2)^T + (c, 1) bias -> one softmax over N1 + N2 -> (c, N1 + N2) x
    (N1 + N2, dv) -> (c, dv). ``value`` holds the first set's rows, then the second's."""
    scores = torch.mm(query, key.t()).float()  # (c, N1) float32
    narrow = torch.mm(narrow_query, narrow_key.t()).float() + narrow_bias  # (c, N2) float32
    peak = torch.maximum(scores.amax(dim=-1, keepdim=True), narrow.amax(dim=-1, keepdim=True))  # (c, 1)
    weights = torch.cat([torch.exp((scores - peak) * scale), torch.exp((narrow - peak) * scale)], dim=-1)
    mixed = torch.mm(weights.to(value.dtype), value).float()  # (c, dv)
    return (mixed / weights.sum(dim=-1, keepdim=True)).to(value.dtype)  # (c, dv)


_QKV = (True, False, False)  # of (query, key, value): which tensors :func:`_heads` slices by query rows


def _heads(kernel, tensors: tuple, per_query: tuple, scale: float, chunk: int) -> torch.Tensor:
    """Run ``kernel(*tensors, scale)`` over every leading index (batch, head) of ``tensors[0]`` (the queries) and
    every ``chunk`` query rows: the tensors marked in ``per_query`` are sliced by query rows, the others (keys,
    values) are passed whole; (..., L, dv) out."""
    lead = tensors[0].shape[:-2]
    flat = [t.expand(*lead, *t.shape[-2:]).reshape(-1, *t.shape[-2:]) for t in tensors]  # each (BH, rows, width)
    rows = flat[0].shape[1]
    out = []
    for index in range(flat[0].shape[0]):
        head = [t[index] if sliced else t[index].contiguous() for t, sliced in zip(flat, per_query)]
        parts = [
            kernel(*(t[i : i + chunk] if sliced else t for t, sliced in zip(head, per_query)), scale)
            for i in range(0, rows, chunk)
        ]
        out.append(torch.cat(parts))
    out = torch.stack(out)  # (BH, L, dv)
    return out.reshape(*lead, rows, out.shape[-1])  # (..., L, dv)


def _compiled_function(function):
    """``function`` compiled for any shapes, once per process (torch caches the generated code on disk)."""
    compiled = _compiled_functions.get(function)
    if compiled is None:
        compiled = _compiled_functions[function] = torch.compile(function, dynamic=True, fullgraph=True)
    return compiled


def _kernel():
    return _compiled_function(_chunk)


def _compile_failed(error: Exception) -> None:
    """Remember that compilation fails here and say so once; every later call takes the eager path."""
    global _unavailable
    _unavailable = f"{type(error).__name__}: {error}"
    warnings.warn(
        f"segvlm's compiled CPU paths (the attention kernel, the fused elementwise passes) could not be compiled "
        f"({_unavailable.splitlines()[0][:200]}); using torch's eager operations and scaled_dot_product_attention "
        "instead (slower, same results). torch.compile needs a C++ compiler on CPU (e.g. `apt install g++`).",
        RuntimeWarning,
        stacklevel=3,
    )


# -- rotary position encoding ----------------------------------------------------------------------------------
def rotate_pairwise(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) over the last dimension: RoPE's rotation partner."""
    x = x.view(*x.shape[:-1], -1, 2)  # (..., D/2, 2)
    first, second = x.unbind(dim=-1)
    return torch.stack((-second, first), dim=-1).flatten(start_dim=-2)  # (..., D)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE of (..., L, D) ``x`` with (L, D) ``cos``/``sin`` (SAM 2's pairwise rotation), in ``x``'s dtype."""
    return x * cos + rotate_pairwise(x) * sin


def _rope_rounded(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return apply_rope(x.float(), cos, sin).to(x.dtype)


def fused(function, x: torch.Tensor, *args):
    """``function(x, *args)`` (elementwise maths and reductions, no products) as one compiled pass where ``x`` takes
    the compiled path (CPU, bf16/fp16, compilable here), else eagerly: the same function, each intermediate kept
    in float32 instead of rounded to ``x``'s dtype between passes."""
    if usable(x):
        return one_pass(function, x, *args)
    return function(x, *args)


def compilable() -> bool:
    """Whether compiled code may run now: ``torch.compile`` has not failed here, and no dispatch mode (a flop counter,
    a profiler mode) is active, which compiled code would bypass."""
    return _unavailable is None and _get_current_dispatch_mode() is None


def one_pass(function, *args):
    """``function(*args)`` compiled (once per function, any shapes), or run eagerly where ``torch.compile`` cannot
    run here (said once, then never tried again) or a dispatch mode (a flop counter, a profiler mode) is active."""
    if compilable():
        try:
            return _compiled_function(function)(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure means: use the eager ops
            _compile_failed(error)
    return function(*args)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE of reduced-precision ``x`` computed in float32 and rounded back to ``x``'s dtype, as transformers
    does it; on CPU one compiled pass (the same bits as the eager ops, which take five passes and three float32
    temporaries: about 8x slower on a (4096, 256) map)."""
    return fused(_rope_rounded, x, cos, sin)


def reduced(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` is a reduced precision (bf16, fp16): where the approximate fast paths run."""
    return dtype in (torch.bfloat16, torch.float16)


def usable(query: torch.Tensor) -> bool:
    """Whether :func:`attention` takes the chunked path for ``query`` (CPU, bf16/fp16, compilable here)."""
    return query.device.type == "cpu" and reduced(query.dtype) and _unavailable is None


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    chunk: int = QUERY_CHUNK,
    min_scores: int | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale) v for (..., L, d) queries, (..., N, d) keys and (..., N, dv) values.

    ``dv`` may differ from ``d`` (SAM 2's memory values enter before their projection, 64 wide). Returns
    (..., L, dv) in the value dtype. Off the compiled path (float32, GPU, no compiler, fewer than
    ``min_scores`` query-key pairs, default :data:`MIN_SCORES`) this is exactly
    ``scaled_dot_product_attention`` when ``dv == d``.
    """
    threshold = MIN_SCORES if min_scores is None else min_scores
    if usable(query) and scale > 0 and query.shape[-2] * key.shape[-2] >= threshold:
        if _get_current_dispatch_mode() is not None:  # a flop counter or profiler mode: compiled code cannot run
            return _heads(_chunk, (query, key, value), _QKV, scale, chunk)
        try:
            return _heads(_kernel(), (query, key, value), _QKV, scale, chunk)
        except Exception as error:  # noqa: BLE001 - any compiler failure means: use the portable kernel
            _compile_failed(error)
    if value.shape[-1] == query.shape[-1]:
        return F.scaled_dot_product_attention(query, key, value, scale=scale)
    return _heads(_chunk, (query, key, value), _QKV, scale, chunk)


@dataclass
class NarrowKeys:
    """A second set of keys given as the narrow features they are projected from: ``k = m W^T + b`` with (N2, d2)
    features ``m``, d2 < d. Their scores are computed at the features' width, ``q . k = (q W) . m + q . b``
    (exact arithmetic; other rounding): a (d / d2)-fold saving on their share of ``q k^T``, less the (L, d) x
    (d, d2) product ``q W``, a net saving once N2 > d d2 / (d - d2) (85 keys for EdgeTAM's 256 and 64).

    EdgeTAM's memory cross-attention leaves half of its keys without RoPE (each memory frame's 256 1-D perceiver
    latents, and the object pointers): those are 64-wide features under a 64 -> 256 key projection.
    """

    query: torch.Tensor  # (..., L, d2): the queries times the key projection, q W
    key: torch.Tensor  # (..., N2, d2): the features the keys are projected from
    bias: torch.Tensor  # (..., L, 1) float32: the queries times the projection's bias, q . b

    @classmethod
    def project(cls, query: torch.Tensor, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        """For (..., heads, L, d) ``query``, (..., 1 or heads, N2, d2) ``features`` and a key projection of
        (heads * d, d2) ``weight`` and (heads * d,) ``bias``."""
        heads, width = query.shape[-3], query.shape[-1]
        weight = weight.view(heads, width, -1)  # (heads, d, d2)
        narrow_query = torch.matmul(query, weight)  # (..., heads, L, d2)
        narrow_bias = torch.matmul(query.float(), bias.float().view(heads, width, 1))  # (..., heads, L, 1)
        return cls(narrow_query, features, narrow_bias)


def attention_with_narrow_keys(
    query: torch.Tensor,
    key: torch.Tensor,
    narrow: NarrowKeys,
    value: torch.Tensor,
    scale: float,
    chunk: int = QUERY_CHUNK,
) -> torch.Tensor:
    """softmax over [q k^T, q n.key^T...] of (..., L, d) ``query`` against (..., N1, d) ``key`` and the
    :class:`NarrowKeys` ``narrow`` (N2 more keys), times (..., N1 + N2, dv) ``value`` (the first set's rows, then
    the second's); (..., L, dv) out in the value dtype. Compiled like :func:`attention` (CPU, bf16/fp16); eager
    where compilation is unavailable or a dispatch mode is active."""
    tensors = (query, key, narrow.query, narrow.key, narrow.bias, value)
    per_query = (True, False, True, False, True, False)
    if usable(query) and compilable():
        try:
            return _heads(_compiled_function(_chunk_with_narrow_keys), tensors, per_query, scale, chunk)
        except Exception as error:  # noqa: BLE001 - any compiler failure means: the eager maths
            _compile_failed(error)
    return _heads(_chunk_with_narrow_keys, tensors, per_query, scale, chunk)
