"""Quantization schemes and lossless codecs, each registered once as a class.

A scheme or codec is one module of this package named `scheme_<name>.py` or `codec_<name>.py`
holding one subclass of `Scheme` or `Codec`; defining the class registers it (no list to edit).
Config validation, the CLI's help, the size planner, packing and dispatch all read the registry:

    SCHEMES: name -> Scheme   what `quant.scheme` may name (quantize, layout of the streams,
                              size model for the planner, capabilities such as GPTQ and cap fitting)
    CODECS:  name -> Codec    what `quant.compressor` may name, besides `auto` (compress, bounded
                              decompress, the Python module it needs)

Modules are found by name (`pkgutil` over this package in the source tree; the list of bundled
modules in an exported train_gpt.py, pgolf.submit.bundle) the first time the registry is read.
ARCHITECTURE.md shows the steps to add one.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any, ClassVar

from pgolf.core.config import ConfigError, QuantConfig, RunConfig, validate
from pgolf.core.errors import PgolfError

PLUGIN_PREFIXES = ("scheme_", "codec_")
AUTO = "auto"  # quant.compressor: measure every codec in AUTO_ORDER, keep the smallest per stream
_SCHEMES: dict[str, Scheme] = {}
_CODECS: dict[str, Codec] = {}
_LOADED: list[bool] = []


class CodecError(PgolfError, ValueError):
    """Unknown codec name, or bytes the codec cannot decode."""


class Codec:
    """A lossless compressor at its strongest setting. Subclasses set `name` (and `module` when a
    third-party library is needed) and implement compress / decompress_limited."""

    name: ClassVar[str] = ""
    module: ClassVar[str | None] = None  # third-party import name (requirements), None for the stdlib
    in_auto: ClassVar[bool] = True  # measured by compressor=auto
    order: ClassVar[int] = 100  # position among the auto codecs (a size tie keeps the earlier)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.name:
            _CODECS[cls.name] = cls()

    def compress(self, data: bytes) -> bytes:
        raise NotImplementedError

    def decompress_limited(self, data: bytes, limit: int | None) -> tuple[bytes, bool]:
        """(output, unfinished): at most `limit` bytes decoded (all when None); `unfinished` when
        the stream did not end where it should (truncated, or output left beyond `limit`)."""
        raise NotImplementedError


class Scheme:
    """A post-training quantization scheme: state dict -> QuantizedState (restored generically by
    entry kind, pgolf.quant.state.dequantize), its streams in the artifact, and its size model."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for CLI help and docs
    fields: ClassVar[tuple[str, ...]] = ()  # the quant.* options it reads
    uses_hessians: ClassVar[bool] = False  # quant.gptq calibrates Hessians before quantize()
    fits_cap: ClassVar[bool] = False  # pgolf.quant.capfit can prune its codes to a byte target
    spreads_over_ranks: ClassVar[bool] = False  # finalize splits its tensors over the ranks and merges
    shape_term: ClassVar[bool] = False  # its size depends on the weights' shape (planner range)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.name:
            _SCHEMES[cls.name] = cls()

    def quantize(
        self,
        state: dict,
        groups: dict[str, str],
        qcfg: QuantConfig,
        hessians: dict | None = None,
        deadline: float | None = None,
    ) -> Any:
        """State dict -> a pgolf.quant.state.QuantizedState."""
        raise NotImplementedError

    def streams(self, qs: Any, qcfg: QuantConfig) -> tuple[dict, dict, list, dict[str, dict]]:
        """(stored arrays, entries, pgolf.quant.container.Stream list, layout probe sizes by label)."""
        raise NotImplementedError

    def tensor_bytes(self, group: str, shape: tuple[int, ...], qcfg: QuantConfig, beta: float | None) -> float:
        """Planner: predicted compressed bytes of one tensor."""
        raise NotImplementedError

    def tensor_width(self, group: str, shape: tuple[int, ...], qcfg: QuantConfig) -> str:
        """Planner: how the tensor is stored (int6, fp16, ...), for the size table."""
        raise NotImplementedError

    def planned_extra_bytes(self, model_cfg: Any, layout: dict, qcfg: QuantConfig, nbytes: dict[str, float]) -> int:
        """Planner: header bytes, after adding any per-group extras (LQER factors) to `nbytes`."""
        return 0


def plugin_modules() -> list[str]:
    """Full names of the scheme_*/codec_* modules: from the bundle's module list inside an exported
    train_gpt.py, else from this package's folder."""
    bundled = getattr(sys.modules.get("pgolf"), "__bundled_modules__", None)
    package = __name__.rsplit(".", 1)[0]
    if bundled is not None:
        names = [m.rsplit(".", 1)[1] for m in bundled if m.rsplit(".", 1)[0] == package]
    else:
        names = [m.name for m in pkgutil.iter_modules(sys.modules[package].__path__)]
    return sorted(f"{package}.{n}" for n in names if n.startswith(PLUGIN_PREFIXES))


def _load() -> None:
    if not _LOADED:
        for name in plugin_modules():
            importlib.import_module(name)
        _LOADED.append(True)


def schemes() -> dict[str, Scheme]:
    _load()
    return dict(_SCHEMES)


def codecs() -> dict[str, Codec]:
    _load()
    return dict(_CODECS)


def scheme_for(name: str) -> Scheme:
    found = schemes().get(name)
    if found is None:
        raise ConfigError(f"quant.scheme={name!r}: expected one of {', '.join(sorted(schemes()))}")
    return found


def codec_for(name: str) -> Codec:
    found = codecs().get(name)
    if found is None:
        raise CodecError(f"unknown codec {name!r}; expected one of {', '.join(sorted(codecs()))}")
    return found


def auto_codecs() -> tuple[str, ...]:
    """The codecs compressor=auto measures, in a fixed order (ties keep the first)."""
    return tuple(n for n, c in sorted(codecs().items(), key=lambda kv: (kv[1].order, kv[0])) if c.in_auto)


def check_quant(q: QuantConfig) -> None:
    """quant.scheme and quant.compressor name registered entries."""
    scheme_for(q.scheme)
    if q.compressor != AUTO and q.compressor not in codecs():
        names = "|".join(sorted(n for n in codecs() if n != "raw"))
        raise ConfigError(f"quant.compressor={q.compressor!r}: expected {names}|{AUTO}")


def validate_config(cfg: RunConfig) -> None:
    """pgolf.core.config.validate plus the names only the registry knows."""
    validate(cfg)
    check_quant(cfg.quant)
