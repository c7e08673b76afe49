"""Bridges to other frameworks: PyTorch checkpoints in (as teachers), students out.

    import_torch(checkpoint, workdir, model=..., num_classes=..., width=..., normalize=...)
    export_torch(workdir, "student.safetensors")

`torch_layout` holds the name/layout table shared by both directions. torch itself is only needed
to read `.pt`/`.pth` files; safetensors files need nothing beyond the core dependencies.
"""
from sa_mdrad_jax.interop.torch_export import export_torch, save_safetensors, state_dict_from_variables
from sa_mdrad_jax.interop.torch_import import (TorchCheckpointError, TorchMismatchError, import_torch,
                                               parse_normalize, read_state_dict, strip_module_prefix,
                                               unwrap_state_dict, variables_from_state_dict)

__all__ = ["TorchCheckpointError", "TorchMismatchError", "export_torch", "import_torch", "parse_normalize",
           "read_state_dict", "save_safetensors", "state_dict_from_variables", "strip_module_prefix",
           "unwrap_state_dict", "variables_from_state_dict"]
