# The previous default recipe of `elbo train` on images, written out as flags (L_simple on the
# cosine table, γ_0 = −10.1, plain U-Net input; its own default was 3,200 steps). Sourced by
# bench/weighted_study.sh and bench/default_pair.sh.
# shellcheck disable=SC2034
PREVIOUS_DEFAULT="--set vdm.objective=simple --set vdm.elbo_weight=0 --set vdm.schedule.kind=cosine --set vdm.schedule.gamma_max=5 --set vdm.unet.fourier=false"
