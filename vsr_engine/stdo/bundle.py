"""The STDO bundle: one file with everything the client needs.

Byte layout (all integers little-endian)::

    offset 0   8 bytes   magic  b"VSRSTDO\\x00"
    offset 8   u16       format version (1)
    offset 10  u16       reserved, 0
    offset 12  u32       N = manifest length
    offset 16  N bytes   manifest: UTF-8 JSON (sorted keys, compact)
    16 + N     ...       member payloads, back to back, in manifest order
    end - 32   32 bytes  SHA-256 of every byte before it

The manifest lists each member as ``{"name", "offset" (from the end of the manifest), "size", "sha256"}``:

- ``lr_video``: the encoded LR video (mp4: x264 + the source's audio copied), exactly as the client decodes it;
- ``model/<i>``: safetensors bytes of model i's fp16 state dict (WDSR keys ``...weight_g``/``...weight_v``);
- ``chunk_map``: zlib of the uint8 array (frames, gh, gw) of chunk ids (``manifest["chunk_map"]`` has shape/dtype);
  ``manifest["chunk_models"][c]`` is the model index of chunk c (all 0 for JSTDO).

The rest of the manifest: ``scale``, ``frames``, ``grid`` (LR size, grid, margin, cell sizes), ``fps``,
``time_base``, ``arch`` (model name + config), ``chunks``, ``joint``, ``label``, ``thresholds``, ``fit``
(training settings), ``lr_video`` (codec settings), ``created_by``.

:meth:`Bundle.load` checks, in order: size, magic, version, the whole-file SHA-256, the manifest, each member's
range and SHA-256, then the content (chunk-map shape and ids, model keys and shapes). Any failure raises one
:class:`BundleError` that says what is wrong; a bundle that loads re-serialises to the same bytes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import zlib
from typing import Dict, List, Union

import numpy as np
import torch

MAGIC = b"VSRSTDO\x00"
VERSION = 1
FORMAT = "vsr_engine.stdo.bundle"
_HEAD = struct.Struct("<8sHHI")


class BundleError(ValueError):
    """A file that is not a valid STDO bundle (foreign, truncated, corrupted, or from an unsupported version)."""


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _st_save(state: Dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save
    return save({k: v.contiguous() for k, v in state.items()})


def _st_load(b: bytes) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load
    return load(b)


@dataclasses.dataclass
class Bundle:
    manifest: Dict
    lr_video: bytes
    models: List[Dict[str, torch.Tensor]]      # fp16 state dicts
    chunk_map: np.ndarray                       # (frames, gh, gw) uint8

    # ---- convenience -----------------------------------------------------------------------------------------
    @property
    def scale(self) -> int:
        return int(self.manifest["scale"])

    @property
    def grid(self):
        from .patches import PatchGrid
        return PatchGrid.from_dict(self.manifest["grid"])

    def model_bytes(self) -> int:
        return sum(len(_st_save(sd)) for sd in self.models)

    def model_param_bytes(self) -> int:
        return sum(int(v.numel()) * v.element_size() for sd in self.models for v in sd.values())

    def sizes(self) -> Dict[str, int]:
        data = self.to_bytes()
        man = json.loads(data[_HEAD.size:_HEAD.size + _HEAD.unpack_from(data)[3]])
        out = {"total": len(data)}
        for m in man["members"]:
            key = "models" if m["name"].startswith("model/") else m["name"]
            out[key] = out.get(key, 0) + m["size"]
        return out

    def build_models(self, device="cpu", dtype=torch.float32):
        from .models import load_for_inference
        return [load_for_inference(self.manifest["arch"], sd, device, dtype) for sd in self.models]

    # ---- serialisation ---------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        cm = np.ascontiguousarray(self.chunk_map, dtype=np.uint8)
        payloads = [("lr_video", bytes(self.lr_video))]
        payloads += [(f"model/{i}", _st_save(sd)) for i, sd in enumerate(self.models)]
        payloads.append(("chunk_map", zlib.compress(cm.tobytes(), 9)))
        members, off = [], 0
        for name, b in payloads:
            members.append({"name": name, "offset": off, "size": len(b), "sha256": _sha(b)})
            off += len(b)
        man = dict(self.manifest)
        man.update({"format": FORMAT, "version": VERSION, "members": members, "n_models": len(self.models),
                    "chunk_map": {"shape": list(cm.shape), "dtype": "uint8", "compression": "zlib"}})
        mb = json.dumps(man, sort_keys=True, separators=(",", ":")).encode("utf-8")
        body = _HEAD.pack(MAGIC, VERSION, 0, len(mb)) + mb + b"".join(b for _, b in payloads)
        return body + hashlib.sha256(body).digest()

    def save(self, path: Union[str, os.PathLike]) -> int:
        data = self.to_bytes()
        tmp = os.fspath(path) + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)   # never a half-written bundle at ``path``
        return len(data)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Bundle":
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BundleError(f"{path}: cannot read STDO bundle ({e.strerror})") from None
        return cls.from_bytes(data, path)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> "Bundle":
        def bad(why):
            return BundleError(f"{name}: not a valid STDO bundle: {why}")

        data = bytes(data)
        if len(data) < _HEAD.size + 32:
            raise bad(f"only {len(data)} bytes (truncated or not a bundle)")
        magic, version, _, n = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise bad(f"wrong magic {magic!r} (expected {MAGIC!r}); this is some other kind of file")
        if version != VERSION:
            raise bad(f"format version {version}, this vsr_engine reads version {VERSION}")
        body, digest = data[:-32], data[-32:]
        if hashlib.sha256(body).digest() != digest:
            raise bad("checksum mismatch (the file is truncated or corrupted)")
        if _HEAD.size + n > len(body):
            raise bad("manifest runs past the end of the file")
        try:
            man = json.loads(body[_HEAD.size:_HEAD.size + n].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise bad(f"manifest is not valid JSON ({e})") from None
        if not isinstance(man, dict) or man.get("format") != FORMAT or man.get("version") != VERSION:
            raise bad("manifest does not describe an STDO bundle")
        base = _HEAD.size + n
        parts = {}
        end = base
        try:
            for m in man["members"]:
                lo, hi = base + int(m["offset"]), base + int(m["offset"]) + int(m["size"])
                if lo < base or hi > len(body):
                    raise bad(f"member {m['name']!r} lies outside the file")
                b = body[lo:hi]
                if _sha(b) != m["sha256"]:
                    raise bad(f"member {m['name']!r} fails its SHA-256 check")
                parts[m["name"]] = b
                end = max(end, hi)
            if end != len(body):
                raise bad(f"{len(body) - end} unexplained bytes after the members")
            for key in ("scale", "frames", "grid", "arch", "chunks", "chunk_models", "fps", "time_base"):
                if key not in man:
                    raise bad(f"manifest lacks {key!r}")
            n_models = int(man["n_models"])
            cm_info = man["chunk_map"]
            shape = tuple(int(x) for x in cm_info["shape"])
            raw = zlib.decompress(parts["chunk_map"])
            if len(raw) != int(np.prod(shape)):
                raise bad(f"chunk map has {len(raw)} entries, expected {shape}")
            cm = np.frombuffer(raw, np.uint8).reshape(shape).copy()
            g = man["grid"]
            if shape != (int(man["frames"]), int(g["gh"]), int(g["gw"])):
                raise bad(f"chunk map shape {shape} does not match frames x grid")
            k = int(man["chunks"])
            if cm.size and int(cm.max()) >= k:
                raise bad(f"chunk map holds chunk id {int(cm.max())} >= {k} chunks")
            cmods = [int(x) for x in man["chunk_models"]]
            if len(cmods) != k or any(not 0 <= x < n_models for x in cmods):
                raise bad("chunk_models does not map every chunk to a model")
            models = [_st_load(parts[f"model/{i}"]) for i in range(n_models)]
            lr_video = parts["lr_video"]
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError, zlib.error, RuntimeError) as e:
            raise bad(f"malformed content ({type(e).__name__}: {e})") from None
        b = cls(manifest={k: v for k, v in man.items()
                          if k not in ("format", "version", "members", "n_models", "chunk_map")},
                lr_video=lr_video, models=models, chunk_map=cm)
        try:  # model keys and shapes must fit the declared architecture
            from .models import from_spec
            ref = from_spec(man["arch"]).state_dict()
            for i, sd in enumerate(models):
                if set(sd) != set(ref):
                    raise bad(f"model {i} keys do not match {man['arch']['name']} "
                              f"(missing {sorted(set(ref) - set(sd))[:3]}, unexpected {sorted(set(sd) - set(ref))[:3]})")
                for key, v in sd.items():
                    if tuple(v.shape) != tuple(ref[key].shape):
                        raise bad(f"model {i} tensor {key} has shape {tuple(v.shape)}, expected {tuple(ref[key].shape)}")
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"unusable architecture {man.get('arch')!r} ({e})") from None
        return b


def load(path) -> Bundle:
    return Bundle.load(path)
