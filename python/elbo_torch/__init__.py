"""PyTorch twins of elbo's models: load what `elbo export` writes, compute the same per-example
ELBO terms, sample, and save for `elbo import`.

    import elbo_torch
    model, config, model_file = elbo_torch.load("runs/vdm-mnist10k-1/export.safetensors")
    terms = model.elbo(x)            # per-example terms, nats
    x = model.sample(16)             # a VDM's ancestral samples, data units
    elbo_torch.save(model, config, model_file, "tuned.safetensors")   # then `elbo import`
"""

from .io import build, load, names_and_shapes, save
from .models import Hvae, LatentVdm, Ncsn, Vae, Vdm, VdmFamily
from .nets import Mlp, MlpDenoiser, UNet

__all__ = ["build", "load", "save", "names_and_shapes", "Vae", "Hvae", "Vdm", "Ncsn", "LatentVdm", "Mlp", "MlpDenoiser", "UNet"]
