#!/usr/bin/env python3
"""Write the parameter names and shapes of elbo_torch's modules for the configurations of some
exported runs, as python/elbo_torch/names/NAME.json ({config, model_file, names}); the Rust test
`tests/interop.rs` checks that elbo's export gives exactly these names and shapes.

    bench/.venv/bin/python python/write_names.py NAME=FILE.safetensors ...
"""

import json
import os
import sys

from safetensors import safe_open

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import elbo_torch  # noqa: E402

for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    config, model_file = json.loads(meta["elbo_config"]), json.loads(meta["elbo_model"])
    model = elbo_torch.build(config, model_file)
    out = {"config": config, "model_file": model_file, "names": elbo_torch.names_and_shapes(model)}
    with open(os.path.join(HERE, "elbo_torch", "names", f"{name}.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(name, len(out["names"]), "parameters")
