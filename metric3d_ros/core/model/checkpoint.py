"""Reading Metric3D checkpoints safely and loading them strictly, key for key.

- :func:`read_checkpoint` reads a ``.pth`` file with ``torch.load(weights_only=True)``: only tensors and plain
  containers are unpickled, never arbitrary objects.
- :func:`normalize_state_dict` unwraps ``{'model_state_dict': ...}`` (the official files),
  ``{'state_dict': ...}``, ``{'model': ...}`` or a bare state dict, and strips DataParallel ``module.``
  prefixes.
- :func:`validate_state_dict` checks a state dict against a :class:`StateLayout` (the network's own
  ``state_dict`` layout) and lists every missing, unexpected, mis-shaped or non-tensor key in one error.
  ``depth_model.encoder.mask_token`` (unused at inference) may be missing; nothing else may. Upstream
  registers one LayerNorm under two names (``...norm3.*`` and ``...downsample.1.*``); the official files hold
  both, and both must hold the same values. A checkpoint holding only one of the two names (as written by
  tools that drop shared tensors, e.g. safetensors) loads with ``fill_aliases=True``.
- :func:`detect_variant` tells ViT-S / ViT-L / ViT-giant2 apart from the tensors (embedding width and
  block count); :func:`load_into` refuses a checkpoint of another variant with a message saying what to set.
"""
from __future__ import annotations

import difflib
import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn

from metric3d_ros.core.model.specs import VARIANTS, get_spec

MASK_TOKEN_KEY = 'depth_model.encoder.mask_token'
_WRAPPER_KEYS = ('model_state_dict', 'state_dict', 'model')
_DDP_PREFIX = 'module.'
_MAX_LISTED = 40
_BLOCK_KEY = re.compile(r'^depth_model\.encoder\.blocks\.(\d+)\.(\d+)\.')
_EMBED_KEYS = ('depth_model.encoder.cls_token', 'depth_model.encoder.pos_embed',
               'depth_model.encoder.patch_embed.proj.weight')


def _official_files() -> str:
    return ', '.join(spec.checkpoint_file for spec in VARIANTS.values())


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read, or does not fit the network. ``missing_keys``, ``unexpected_keys`` and
    ``mismatched_keys`` (key, expected shape, found shape) hold the offending keys when there are any."""

    def __init__(
        self,
        message: str,
        missing_keys: tuple[str, ...] = (),
        unexpected_keys: tuple[str, ...] = (),
        mismatched_keys: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (),
    ) -> None:
        super().__init__(message)
        self.missing_keys = missing_keys
        self.unexpected_keys = unexpected_keys
        self.mismatched_keys = mismatched_keys


@dataclass(frozen=True)
class StateLayout:
    """The state-dict layout a checkpoint must fit.

    ``shapes``: every key of the network's ``state_dict`` with its shape, in order. ``aliases``: a key that
    names the same tensor as an earlier key -> that earlier key. ``optional``: keys that may be missing
    (the network keeps its own values). ``integer_keys``: keys holding integer tensors (all others must be
    floating point).
    """

    shapes: Mapping[str, tuple[int, ...]]
    aliases: Mapping[str, str] = field(default_factory=dict)
    optional: frozenset[str] = frozenset({MASK_TOKEN_KEY})
    integer_keys: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, 'shapes', MappingProxyType(dict(self.shapes)))
        object.__setattr__(self, 'aliases', MappingProxyType(dict(self.aliases)))
        bad = sorted(k for k, to in self.aliases.items() if k not in self.shapes or to not in self.shapes)
        if bad:
            raise ValueError(f'aliases name keys that are not in the layout: {bad}')

    @classmethod
    def from_module(cls, module: nn.Module, optional: Iterable[str] = (MASK_TOKEN_KEY,)) -> StateLayout:
        """The layout of ``module.state_dict()``; names sharing one tensor become aliases of the first name.
        Works on modules built on the meta device too."""
        first_name: dict[int, str] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        aliases: dict[str, str] = {}
        integer_keys = set()
        for key, value in module.state_dict(keep_vars=True).items():
            shapes[key] = tuple(value.shape)
            if not (value.is_floating_point() or value.is_complex()):
                integer_keys.add(key)
            if id(value) in first_name:
                aliases[key] = first_name[id(value)]
            else:
                first_name[id(value)] = key
        return cls(shapes, aliases, frozenset(k for k in optional if k in shapes), frozenset(integer_keys))

    @classmethod
    def from_manifest_rows(
        cls,
        rows: Iterable[tuple[str, tuple[int, ...], str | None]],
        optional: Iterable[str] = (MASK_TOKEN_KEY,),
    ) -> StateLayout:
        """A layout from ``(key, shape, alias_of)`` rows, as in the shared ``keys_vit_*.tsv`` manifests."""
        rows = list(rows)
        shapes = {key: tuple(shape) for key, shape, _ in rows}
        aliases = {key: alias for key, _, alias in rows if alias}
        return cls(shapes, aliases, frozenset(k for k in optional if k in shapes))


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict stored in a ``.pth`` file (see :func:`normalize_state_dict`), read onto the CPU with
    ``weights_only=True`` (memory-mapped when the file is in the zip format). Raises CheckpointError naming
    the file and the cause when it is missing, truncated, corrupt or holds arbitrary pickled objects."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f'checkpoint {file} does not exist or is not a file: pass the path of a '
                              f'Metric3D .pth file ({_official_files()})')
    try:
        obj = torch.load(file, map_location='cpu', weights_only=True, mmap=zipfile.is_zipfile(file))
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if 'weights only' not in text.lower() and 'weights_only' not in text.lower():
            raise CheckpointError(f'cannot read checkpoint {file}: {text} (the file is corrupt or not a '
                                  'PyTorch checkpoint; download it again)') from exc
        lines = text.splitlines() or ['']
        detail = next((line.strip() for line in lines if 'Unpickler error' in line), lines[0])
        raise CheckpointError(
            f'checkpoint {file} holds pickled objects other than tensors, and it is read with '
            f'torch.load(weights_only=True), which never unpickles arbitrary objects ({detail}). Official '
            "Metric3D files hold only tensors; if you trust this file, re-save its state dict: "
            "torch.save({'model_state_dict': state_dict}, path)") from exc
    except Exception as exc:  # noqa: BLE001 (torch raises RuntimeError, EOFError, KeyError, ... on bad files)
        raise CheckpointError(
            f'cannot read checkpoint {file} ({file.stat().st_size:,} bytes): {type(exc).__name__}: '
            f'{_first_line(exc)} (the file is truncated, corrupt or not a PyTorch checkpoint; download it '
            'again)') from exc
    return normalize_state_dict(obj, source=str(file))


def normalize_state_dict(obj: object, source: str = 'state dict') -> dict[str, torch.Tensor]:
    """The bare state dict inside ``obj``: ``obj['model_state_dict']`` (official files),
    ``obj['state_dict']``, ``obj['model']``, or ``obj`` itself; ``module.`` prefixes (DataParallel) are
    stripped. Raises CheckpointError when it holds anything but tensors."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{source} holds a {type(obj).__name__}, not a state dict: expected '
                              "{'model_state_dict': {name: tensor}} or {name: tensor}")
    for wrapper in _WRAPPER_KEYS:
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            obj, source = inner, f"{source}['{wrapper}']"
            break
    not_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(
            f'{source} is not a state dict of tensors: {_listing(not_tensors)} hold other values; expected '
            "{'model_state_dict': {name: tensor}} or {name: tensor}")
    state = {str(k): v for k, v in obj.items()}
    while state and all(k.startswith(_DDP_PREFIX) for k in state):
        state = {k[len(_DDP_PREFIX):]: v for k, v in state.items()}
    return state


def validate_state_dict(
    state: Mapping[str, torch.Tensor],
    layout: StateLayout,
    fill_aliases: bool = False,
    source: str = 'checkpoint',
) -> dict[str, torch.Tensor]:
    """``state`` checked against ``layout``; returns it with alias names filled in when ``fill_aliases``.

    Raises CheckpointError listing every missing key (with its expected shape), unexpected key (with the
    closest missing name), mis-shaped key (expected vs found), non-float tensor in a float slot, and alias
    pair holding different values. Only ``layout.optional`` keys may be missing.
    """
    state = dict(state)
    alias_partner = dict(layout.aliases)
    alias_partner.update({target: key for key, target in layout.aliases.items()})
    if fill_aliases:
        for key, partner in alias_partner.items():
            if key not in state and partner in state:
                state[key] = state[partner]
    missing = [k for k in layout.shapes if k not in state and k not in layout.optional]
    unexpected = [k for k in state if k not in layout.shapes]
    mismatched = [(k, layout.shapes[k], tuple(v.shape)) for k, v in state.items()
                  if k in layout.shapes and tuple(v.shape) != layout.shapes[k]]
    wrong_type = [f'{k} ({v.dtype})' for k, v in state.items() if k in layout.shapes
                  and k not in layout.integer_keys and not (v.is_floating_point() or v.is_complex())]
    conflicts = [f'{k} and {target}' for k, target in layout.aliases.items()
                 if k in state and target in state and state[k].shape == state[target].shape
                 and not torch.equal(state[k], state[target])]
    if not (missing or unexpected or mismatched or wrong_type or conflicts):
        return state
    sections = []
    if missing:
        lines = []
        for k in missing:
            hint = ''
            partner = alias_partner.get(k)
            if partner is not None and partner in state:
                hint = f'; same tensor as {partner}, which is present: pass fill_aliases=True to accept that'
            lines.append(f'{k} (expected shape {layout.shapes[k]}{hint})')
        sections.append(('missing keys', lines))
    if unexpected:
        lines = []
        for i, k in enumerate(unexpected):
            guess = difflib.get_close_matches(k, missing, n=1, cutoff=0.6) if i < _MAX_LISTED else []
            suffix = f', did you mean {guess[0]}?' if guess else ''
            lines.append(f'{k} (shape {tuple(state[k].shape)}{suffix})')
        sections.append(('unexpected keys', lines))
    if mismatched:
        sections.append(('mis-shaped keys', [f'{k}: expected {e}, found {f}' for k, e, f in mismatched]))
    if wrong_type:
        sections.append(('keys that must be floating point', wrong_type))
    if conflicts:
        sections.append(('alias names of one tensor holding different values', conflicts))
    body = '\n'.join(f'  {title} ({len(lines)}):\n' + _listing_lines(lines) for title, lines in sections)
    optional = ', '.join(sorted(layout.optional)) or 'none'
    raise CheckpointError(
        f'{source} does not fit the network (only {optional} may be missing):\n{body}',
        missing_keys=tuple(missing), unexpected_keys=tuple(unexpected), mismatched_keys=tuple(mismatched))


def detect_variant(state: Mapping[str, torch.Tensor], source: str = 'checkpoint') -> str:
    """The variant's name (``specs.VARIANTS``), from the embedding width and the number of encoder blocks."""
    embed_key = next((k for k in _EMBED_KEYS if k in state), None)
    if embed_key is None:
        raise CheckpointError(
            f'{source} is not a Metric3D v2 ViT checkpoint: it has none of {", ".join(_EMBED_KEYS)}; use '
            f'{_official_files()} (the ConvNeXt Metric3D files are not supported)')
    shape = tuple(state[embed_key].shape)
    embed_dim = shape[0] if embed_key.endswith('proj.weight') else shape[-1]
    blocks = {m.groups() for m in map(_BLOCK_KEY.match, state) if m}
    for name, spec in VARIANTS.items():
        if spec.encoder.embed_dim == embed_dim and spec.encoder.depth == len(blocks):
            return name
    known = '; '.join(f'{name} ({spec.display_name}): width {spec.encoder.embed_dim}, '
                      f'{spec.encoder.depth} blocks' for name, spec in VARIANTS.items())
    raise CheckpointError(
        f'cannot tell the Metric3D variant of {source}: {embed_key} has shape {shape} (width {embed_dim}) '
        f'and there are {len(blocks)} encoder blocks; known: {known}. The checkpoint is incomplete or from '
        'another model; use an official metric_depth_vit_*_800k.pth file')


def describe_variant(variant: str) -> str:
    """'ViT-L (metric_depth_vit_large_800k.pth)' for 'large'."""
    spec = VARIANTS.get(variant)
    return f'{spec.display_name} ({spec.checkpoint_file})' if spec else variant


def check_variant(detected: str, configured: str | None, source: str = 'checkpoint') -> None:
    """Raise CheckpointError when a configured variant differs from the one detected in the checkpoint."""
    if configured is None:
        return
    try:
        wanted = get_spec(configured)
    except ValueError as exc:
        raise CheckpointError(f'{exc} ({source} is {describe_variant(detected)})') from exc
    if wanted.name == detected:
        return
    other = f' or use {wanted.checkpoint_file}'
    raise CheckpointError(
        f'{source} is {describe_variant(detected)} but variant={configured!r} was configured: set variant to '
        f'{detected!r} (or leave it unset to detect it){other}')


def load_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    variant: str | None = None,
    fill_aliases: bool = False,
    source: str = 'checkpoint',
    assign: bool = False,
) -> nn.Module:
    """Copy ``state`` into ``model`` strictly (see :func:`validate_state_dict`); returns ``model``.

    ``variant``, when given, must be the variant detected in ``state``; the model's own layout must be of
    the same variant too. Optional keys absent from ``state`` keep the model's values (zeros when the model
    is on the meta device). ``assign=True`` makes the checkpoint tensors the model's parameters instead of
    copying them (``load_state_dict(assign=True)``; for a model built on the meta device, so that the
    weights are held once); they are converted to the model's dtypes where those differ.
    """
    state = normalize_state_dict(state, source=source)
    detected = detect_variant(state, source=source)
    check_variant(detected, variant, source=source)
    try:
        built_as = detect_variant(model.state_dict(), source='the network')
    except CheckpointError:
        built_as = None  # not a Metric3D layout: the key check below reports the differences
    if built_as is not None and built_as != detected:
        raise CheckpointError(f'{source} is {describe_variant(detected)} but the network was built as '
                              f'{describe_variant(built_as)}: build it with variant={detected!r}')
    layout = StateLayout.from_module(model)
    full = validate_state_dict(state, layout, fill_aliases=fill_aliases, source=source)
    if assign:
        current = model.state_dict()
        for key in layout.optional - full.keys():
            full[key] = torch.zeros_like(current[key], device='cpu') if current[key].is_meta else current[key]
        for key, value in full.items():
            if value.dtype != current[key].dtype:
                full[key] = value.to(current[key].dtype)
    result = model.load_state_dict(full, strict=False, assign=assign)
    left_out = sorted(set(result.missing_keys) - layout.optional) + sorted(result.unexpected_keys)
    if left_out:  # validate_state_dict guarantees this cannot happen; never load silently incomplete
        raise CheckpointError(f'{source}: load_state_dict did not fill {left_out}')
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def _listing(keys: list[str]) -> str:
    shown = ', '.join(keys[:_MAX_LISTED])
    return shown + (f' ... and {len(keys) - _MAX_LISTED} more' if len(keys) > _MAX_LISTED else '')


def _listing_lines(lines: list[str]) -> str:
    shown = [f'    {line}' for line in lines[:_MAX_LISTED]]
    if len(lines) > _MAX_LISTED:
        shown.append(f'    ... and {len(lines) - _MAX_LISTED} more')
    return '\n'.join(shown)
