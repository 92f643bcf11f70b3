//! Studies: questions answered by training, evaluating and sampling, each a client of the
//! library's public pieces (the run store, evaluation, the sampling driver). [`compare`]: the
//! models side by side on one budget; [`tour`]: the ELBO's argument, computed; [`samplers`]:
//! sample quality against network evaluations for every sampler; [`guidance`]: accuracy,
//! FD-classifier and diversity against the guidance weight.

pub mod compare;
pub mod guidance;
pub mod samplers;
pub mod tour;
