"""`SuperNetwork`: an fx GraphModule of elastic ops and SkipBlocks, driven by a `SearchSpace`.

Rules:
  1. ``SuperNetwork(graph_module, space, bindings, meta)`` checks the bindings against the modules
     and the space (every path resolves to the right kind of module, map sizes match channel
     counts, every dimension drives something, ``out_spatial`` covers every conv/linear) and
     raises one ValueError listing every problem. It starts in the maximal configuration.
  2. ``activate(config)`` validates (free for configs made or validated by ``space``) and sets
     integers: op selections (a Selector cache returns the same index tensor for the same
     widths), conv kernels, ``SkipBlock.active``. It re-traces nothing. It also works as a
     context manager that restores the previous configuration on exit.
  3. ``forward`` runs ``graph_module`` under the active configuration. In the maximal one every
     op calls its original module, so outputs equal the original model's bit for bit.
  4. ``extract(config=None)`` returns a plain fx GraphModule (see `extract.py`) whose output
     equals ``activate(config); self(x)`` in eval mode, sharing no storage with the supernet.
  5. ``macs(config)`` and ``params(config)`` are analytic (see `cost.py`); ``params`` equals the
     parameter count of ``extract(config)``.
  6. ``save(path)`` writes one torch file of data and tensors only (format 2: magic, format
     version, the module tree and its fx graphs as data (see `serialize.py`), space and bindings
     as dicts, meta as JSON-able data, current config). ``SuperNetwork.load`` reads it with
     ``torch.load(weights_only=True)``, so loading a file never runs code from it, and raises
     `SupernetFileError` for a truncated, foreign or newer-format file, or for a file holding
     pickled code (format 1, or a crafted file), which it refuses unless ``trusted=True``.
     ``save(path, trusted_format=True)`` writes format 1 (the pickled graph module), for
     networks with parts the data format cannot hold; only ``load(..., trusted=True)`` reads it.
  7. Moving the network (``.to(device)``) re-activates the current config so cached index
     tensors live on the new device.
  8. Every GraphModule of the network runs the forward of `fastgraph.accelerate` (cheaper
     submodule lookups, same calls). Copies, unpickled networks and networks whose top-level
     graph module was recompiled (saving does that) are accelerated again on their next forward.
  9. ``space`` gets the dimension dependencies of `dependencies.derive_dependencies` (a width
     or kernel dimension used only inside one stage's SkipBlocks matters only when they are kept).

Example:
    >>> import torch, torch.fx as fx
    >>> from runtime.elastic import Dimension, SearchSpace, Bindings, OpBinding, Segment, wrap
    >>> gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)))
    >>> for name in ("0", "1"):
    ...     gm._modules[name] = wrap(gm._modules[name])
    >>> space = SearchSpace([Dimension("hidden", "width", (8, 4))])
    >>> bindings = Bindings(ops=[OpBinding("0", out_map=[Segment("hidden", 8)]),
    ...                          OpBinding("1", in_map=[Segment("hidden", 8)])],
    ...                     out_spatial={"0": {None: 1}, "1": {None: 1}})
    >>> net = SuperNetwork(gm, space, bindings)
    >>> net.macs({"hidden": 4}), net.params({"hidden": 4})
    (24, 30)
    >>> with net.activate({"hidden": 4}):
    ...     net(torch.randn(1, 4)).shape
    torch.Size([1, 2])
    >>> net.config["hidden"]
    8
"""
from __future__ import annotations

import json
import os
import pickle
from typing import IO, Any, Mapping

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from runtime.elastic.bindings import Bindings
from runtime.elastic.blocks import SkipBlock
from runtime.elastic.cost import CostModel
from runtime.elastic.dependencies import derive_dependencies
from runtime.elastic.extract import extract_graph_module
from runtime.elastic.fastgraph import accelerate_all, is_handled
from runtime.elastic.plan import Plan
from runtime.elastic.serialize import NotSerializableError, module_from_data, module_to_data
from runtime.elastic.space import SearchSpace, SubnetConfig

__all__ = ["SuperNetwork", "SupernetFileError", "SkipBlock", "MAGIC", "FORMAT_VERSION"]

MAGIC = "runtime.elastic.SuperNetwork"
FORMAT_VERSION = 2
_KEYS = ("magic", "format_version", "graph_module", "space", "bindings", "meta", "state_dict", "config")
_KEYS_V2 = ("magic", "format_version", "graph_module", "space", "bindings", "meta", "config")


class SupernetFileError(ValueError):
    """A file that is not a readable super-network of a supported format version."""


class _Activation:
    """Returned by `SuperNetwork.activate`; as a context manager it restores the previous config."""

    __slots__ = ("_net", "_previous", "config")

    def __init__(self, net: "SuperNetwork", previous: SubnetConfig, config: SubnetConfig):
        self._net, self._previous, self.config = net, previous, config

    def __enter__(self) -> "SuperNetwork":
        return self._net

    def __exit__(self, *exc: Any) -> None:
        self._net._set(self._previous)


class SuperNetwork(nn.Module):
    """A weight-sharing super-network (see module docstring)."""

    def __init__(self, graph_module: fx.GraphModule, space: SearchSpace, bindings: Bindings,
                 meta: Mapping[str, Any] | None = None):
        super().__init__()
        self.graph_module = graph_module
        self.space = derive_dependencies(space, bindings)  # Rule 9
        self.bindings = bindings
        self.meta = dict(meta or {})
        self._plan = Plan(graph_module, space, bindings)  # Rule 1
        self._cost = CostModel(self._plan.items, self._plan.selectors_by_path,
                               self._plan.kernel_dims, bindings.spatial_map())
        self._device = _first_device(graph_module)
        self._config = space.max_config()
        self._set(self._config)
        accelerate_all(graph_module)  # Rule 8

    @property
    def config(self) -> SubnetConfig:
        return self._config

    def activate(self, config: Mapping[str, int]) -> _Activation:
        """Set the active sub-network (Rule 2); usable as ``with net.activate(c): ...``."""
        config = self.space.validate(config)
        previous = self._config
        self._set(config)
        return _Activation(self, previous, config)

    def _set(self, config: SubnetConfig) -> None:
        plan, device = self._plan, self._device
        for selector, targets in plan.assignments:
            sel = selector.select(config, device)
            for op, attr in targets:
                op.__dict__[attr] = sel  # plain attribute: never a parameter/buffer/module
        for op, dim, full in plan.kernels:
            k = config[dim]
            op.__dict__["kernel"] = None if k == full else k
        for dim, blocks in plan.depths:
            depth = config[dim]
            for i, block in enumerate(blocks):
                block.__dict__["active"] = i < depth
        self._config = config

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        gm = self._modules["graph_module"]  # no nn.Module.__getattr__ on the hot path
        if not is_handled(gm):  # Rule 8
            accelerate_all(gm)
        return gm(*args, **kwargs)  # Rule 3

    def max_config(self) -> SubnetConfig:
        return self.space.max_config()

    def min_config(self) -> SubnetConfig:
        return self.space.min_config()

    def sample(self, seed: int | np.random.Generator | None = None) -> SubnetConfig:
        return self.space.sample(seed)

    def extract(self, config: Mapping[str, int] | None = None) -> fx.GraphModule:
        """A plain, standalone GraphModule for ``config`` (default: the active one) (Rule 4)."""
        with self.activate(self._config if config is None else config), torch.no_grad():
            return extract_graph_module(self.graph_module, class_name="ExtractedSubnet")

    def _inactive(self, config: SubnetConfig) -> set[str]:
        return {p for dim, paths in self._plan.depth_paths for p in paths[config[dim]:]}

    def macs(self, config: Mapping[str, int] | None = None) -> int:
        """Analytic MACs at batch 1 (Rule 5)."""
        config = self._config if config is None else self.space.validate(config)
        res_dim = self.bindings.resolution
        return self._cost.macs(config, self._inactive(config), config[res_dim] if res_dim else None)

    def params(self, config: Mapping[str, int] | None = None) -> int:
        """Parameter count of ``extract(config)`` (Rule 5)."""
        config = self._config if config is None else self.space.validate(config)
        return self._cost.params(config, self._inactive(config))

    def _apply(self, fn, recurse: bool = True):
        result = super()._apply(fn, recurse)
        self._device = _first_device(self.graph_module)  # Rule 7
        self._set(self._config)
        return result

    def save(self, path: str | os.PathLike | IO[bytes], *, trusted_format: bool = False) -> None:
        """Write everything needed to rebuild this network without the original model (Rule 6).

        A path is written atomically (a temporary file renamed into place), so an interrupted
        save never leaves a truncated checkpoint behind.
        """
        payload = self._payload(trusted_format)
        if not isinstance(path, (str, os.PathLike)):
            return _save(payload, path)
        tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
        try:
            _save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _payload(self, trusted_format: bool) -> dict[str, Any]:
        common = {"magic": MAGIC, "space": self.space.to_dict(), "bindings": self.bindings.to_dict(),
                  "config": dict(self._config)}
        if trusted_format:
            return {**common, "format_version": 1, "graph_module": self.graph_module,
                    "meta": self.meta, "state_dict": self.state_dict()}
        try:
            meta = json.loads(json.dumps(self.meta))
        except (TypeError, ValueError) as exc:
            raise NotSerializableError(f"cannot save the super-network: meta must be JSON-able data "
                                       f"({exc})") from exc
        with self.activate(self.space.max_config()):  # selections at max are plain None
            module = module_to_data(self.graph_module)
        return {**common, "format_version": FORMAT_VERSION, "graph_module": module, "meta": meta}

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: Any = None, *,
             trusted: bool = False) -> "SuperNetwork":
        """Rebuild a saved network without running code from the file (Rule 6).

        ``trusted=True`` also reads format-1 files, which unpickle code: only for files you made.
        """
        payload = _read(path, map_location, trusted)
        if payload["format_version"] == 1:
            gm, state = payload["graph_module"], payload["state_dict"]
        else:
            try:
                gm, state = module_from_data(payload["graph_module"]), None
            except (NotSerializableError, ImportError, AttributeError, KeyError, TypeError) as exc:
                raise SupernetFileError(f"cannot rebuild the super-network in {os.fspath(path)!r}: "
                                        f"{exc}") from exc
        net = cls(gm, SearchSpace.from_dict(payload["space"]),
                  Bindings.from_dict(payload["bindings"]), payload["meta"])
        if state is not None:
            missing, unexpected = net.load_state_dict(state, strict=False)
            # unpickling re-traces a GraphModule's code, which folds calls without graph inputs
            # (an exported graph's arange) into new `_tensor_constant` buffers: computed, not state
            missing = [k for k in missing if not k.rpartition(".")[2].startswith("_tensor_constant")]
            if missing or unexpected:
                raise SupernetFileError(f"supernet file {os.fspath(path)!r} does not match its "
                                        f"graph: missing {missing[:5]}, unexpected {unexpected[:5]}")
        net.activate(payload["config"])
        return net


def _save(payload: dict[str, Any], target: Any) -> None:
    try:
        torch.save(payload, target)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ValueError(f"cannot pickle the super-network ({exc}). Hint: every module class, the "
                         "fx tracer class and everything in meta must be importable at module level "
                         "(no local classes or lambdas).") from exc


def _first_device(module: nn.Module) -> torch.device | None:
    for p in module.parameters():
        return p.device
    return None


def _read(path: str | os.PathLike, map_location: Any, trusted: bool) -> dict[str, Any]:
    name = os.fspath(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc).lower() and "unsupported global" not in str(exc).lower():
            raise SupernetFileError(f"cannot read supernet file {name!r}: truncated or corrupt "
                                    f"({type(exc).__name__}: {exc})") from exc
        if not trusted:
            raise SupernetFileError(
                f"{name!r} holds pickled code (a format-1 super-network file, or a file crafted to "
                "run code when loaded), so it was refused without unpickling it. If you made this "
                "file yourself, load it with SuperNetwork.load(path, trusted=True) and save it again "
                "to get the code-free format.") from None
        payload = _read_trusted(name, map_location)
    except Exception as exc:  # zip errors of a truncated or corrupt file have many types
        raise SupernetFileError(f"cannot read supernet file {name!r}: truncated or "
                                f"corrupt ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("magic") != MAGIC:
        got = f"dict with keys {sorted(map(str, payload))[:8]}" if isinstance(payload, dict) \
            else type(payload).__name__
        raise SupernetFileError(f"not a supernet file: {name!r} holds a {got}; expected "
                                f"a dict with keys {list(_KEYS)} written by SuperNetwork.save")
    version = payload.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise SupernetFileError(f"unsupported supernet format version {version!r} in "
                                f"{name!r}; this runtime reads versions 1 and {FORMAT_VERSION}")
    if version == 1 and not trusted:
        raise SupernetFileError(f"{name!r} is a format-1 file (pickled code); refused. Load it "
                                "with trusted=True only if you made it.")
    keys = _KEYS if version == 1 else _KEYS_V2
    missing = [k for k in keys if k not in payload]
    if missing:
        raise SupernetFileError(f"supernet file {name!r} lacks keys {missing}")
    return payload


def _read_trusted(name: str, map_location: Any) -> dict[str, Any]:
    try:
        return torch.load(name, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise SupernetFileError(f"cannot read supernet file {name!r}: truncated or corrupt "
                                f"({type(exc).__name__}: {exc})") from exc
