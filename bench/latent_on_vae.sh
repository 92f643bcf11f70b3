#!/bin/bash
# A latent VDM on a trained VAE's latent against the VAE alone and the joint latent VDM (mnist10k, binarised).
set -e
E=${ELBO:-target/release/elbo}
O=${OUT:-bench/out/latent_on_vae}
rm -rf $O; mkdir -p $O
$E -q train --model vae --set vae.latent=32 --max-minutes 2 --steps 1000000 --out $O/vae > $O/vae.txt
$E -q train --model latent-vdm --set latent-vdm.vae_run=$O/vae --max-minutes 2 --steps 1000000 --out $O/on_vae > $O/on_vae.txt
$E -q train --model latent-vdm --max-minutes 4 --steps 1000000 --out $O/joint > $O/joint.txt
for r in vae on_vae joint; do echo "== $r"; grep -E "NLL bound|reconstruction|prior|entropy|diffusion|−ELBO|L_" $O/$r.txt | head -12; done
