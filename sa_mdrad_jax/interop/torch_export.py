"""Zoo variables and Orbax workdirs -> PyTorch state dicts in safetensors.

    state_dict = export_torch("workdir/sa_mdrad", "student.safetensors")

    # PyTorch side: the matching CIFAR definition (see torch_layout for the naming)
    net.load_state_dict(safetensors.torch.load_file("student.safetensors"), strict=True)
    net.eval()   # and feed it inputs normalised with the mean/std in the file's metadata

BatchNorm `var` is written as `running_var` unchanged (eval outputs agree, see `torch_import`);
every BatchNorm gets `num_batches_tracked` = 0 (int64), the buffer PyTorch's modules declare; it
only matters to BatchNorm layers built with momentum=None, which none of these definitions are.
The file's metadata holds the model config (name, width, num_classes, normalize, image_shape)
as JSON under "sa_mdrad_model", plus "format": "pt".
"""
from __future__ import annotations

import json

import numpy as np
from flax import traverse_util

from sa_mdrad_jax import checkpoints, models, paths
from sa_mdrad_jax.interop import torch_layout
from sa_mdrad_jax.interop.torch_import import TorchMismatchError


def state_dict_from_variables(model, variables, image_shape: tuple[int, ...] = (32, 32, 3)) -> dict[str, np.ndarray]:
    """{PyTorch key: host array} for `model`'s {'params', 'batch_stats'}."""
    flat = traverse_util.flatten_dict({"params": dict(variables["params"]),
                                       "batch_stats": dict(variables.get("batch_stats", {}))})
    entries = torch_layout.layout(model, image_shape=image_shape)
    wanted = {(e.collection, *e.path): e for e in entries if e.kind != torch_layout.COUNTER}
    missing = sorted("/".join(p) for p in set(wanted) - set(flat))
    extra = sorted("/".join(p) for p in set(flat) - set(wanted))
    wrong = sorted(f"{'/'.join(p)}: {tuple(np.shape(flat[p]))} vs {e.flax_shape}" for p, e in wanted.items()
                   if p in flat and tuple(np.shape(flat[p])) != e.flax_shape)
    if missing or extra or wrong:
        raise TorchMismatchError(f"The variables do not fit {type(model).__name__} (width {model.width}, "
                                 f"{model.num_classes} classes): missing {missing[:20]}, unexpected "
                                 f"{extra[:20]}, wrong shapes {wrong[:20]}. Nothing was written.")
    out = {}
    for e in entries:
        if e.kind == torch_layout.COUNTER:
            out[e.torch_key] = np.zeros((), np.int64)
        else:
            out[e.torch_key] = torch_layout.to_torch(e.kind, np.asarray(flat[(e.collection, *e.path)], np.float32))
    return out


def save_safetensors(state_dict: dict[str, np.ndarray], out: str, metadata: dict[str, str] | None = None) -> None:
    """Writes `state_dict` to `out` (a local path or a URL) atomically (`paths.write_bytes`), so a
    failed export never leaves a partial file behind."""
    from safetensors.numpy import save
    data = save(state_dict, metadata={"format": "pt", **(metadata or {})})   # serialised first: errors write nothing
    paths.write_bytes(paths.absolute(out), data)


def export_torch(workdir: str, out: str, *, step: int | None = None, best: bool = False) -> dict[str, np.ndarray]:
    """Writes the model of `workdir` (latest, `step`, or best checkpoint) as a PyTorch state dict
    in safetensors at `out`; returns the state dict."""
    if not out.endswith(".safetensors"):
        raise ValueError(f"--out must name a .safetensors file, got {out!r} (load it in PyTorch with "
                         "safetensors.torch.load_file).")
    model_cfg, variables, meta = checkpoints.load_variables(workdir, step, best=best)
    model = models.get_model(**model_cfg)
    image_shape = tuple(meta["image_shape"])
    state_dict = state_dict_from_variables(model, variables, image_shape)
    norm = models.resolve_normalize(model_cfg.get("normalize"))
    info = {**checkpoints.model_signature(model_cfg), "image_shape": list(image_shape),
            "normalize_mean_std": [list(v) for v in norm] if norm else None, "step": meta.get("step")}
    save_safetensors(state_dict, out, {"sa_mdrad_model": json.dumps(info)})
    return state_dict
