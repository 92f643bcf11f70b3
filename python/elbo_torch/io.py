"""Files of `elbo export`: a PyTorch state dict in safetensors whose metadata holds the run's
`config.json` (`elbo_config`) and `model.json` (`elbo_model`)."""

import json

from safetensors import safe_open
from safetensors.torch import save_file

from .models import Hvae, LatentVdm, Ncsn, Vae, Vdm, VdmFamily

# flow and edm are VDMs with other settings (their sections are VDM sections, their weights a
# VDM's under `vdm.`).
KINDS = {
    "vae": Vae, "hvae": Hvae, "vdm": Vdm, "ncsn": Ncsn,
    "flow": VdmFamily, "edm": VdmFamily, "latent-vdm": LatentVdm,
}


def build(config, model_file):
    """An untrained model of a run's configuration and `model.json` (both as dicts)."""
    kind = config["model"]
    if kind not in KINDS:
        raise NotImplementedError(f"model {kind}: elbo_torch has {', '.join(KINDS)}")
    return KINDS[kind](config[kind], model_file["spec"])


def load(path):
    """(model, config, model_file) from an `elbo export` file; the weights loaded strictly (every
    name and shape must match)."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("parity.")}
    if "elbo_config" not in meta or "elbo_model" not in meta:
        raise ValueError(f"{path}: no elbo_config/elbo_model metadata (not written by `elbo export`)")
    config, model_file = json.loads(meta["elbo_config"]), json.loads(meta["elbo_model"])
    model = build(config, model_file)
    model.load_state_dict(tensors, strict=True)
    return model, config, model_file


def save(model, config, model_file, path):
    """Write `model`'s weights for `elbo import` (config and model_file: the dicts `load` gave)."""
    state = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    save_file(state, path, metadata={
        "format": "pt",
        "elbo_config": json.dumps(config),
        "elbo_model": json.dumps(model_file),
    })


def names_and_shapes(model):
    """[(name, shape)] of a model's parameters, sorted: what `elbo export --names` prints."""
    return sorted([k, list(v.shape)] for k, v in model.state_dict().items())
