//! `elbo export DIR` and `elbo import FILE`: a run's weights as a PyTorch state dict in
//! safetensors (PyTorch names and layouts, the run's config in the metadata), and back. The work
//! is `elbo::interop`.

use std::path::PathBuf;

use clap::Args;
use elbo::run::RunDir;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run directory written by `elbo train`.
    pub dir: PathBuf,
    /// Output file (default: DIR/export.safetensors). Load it in Python with
    /// `elbo_torch.load(FILE)` (python/elbo_torch in the repository), or with
    /// `safetensors.torch.load_file` as a plain state dict.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also store N test examples, the noise of one ELBO draw and elbo's per-example terms from
    /// it (tensors `parity.*`), for the PyTorch parity check `bench/parity.py`.
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, value_name = "N", default_value_t = 0)]
    pub parity: usize,
    /// Print the PyTorch names and shapes of the run's parameters as JSON instead of writing.
    #[arg(long)]
    pub names: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A safetensors file written by `elbo export` or `elbo_torch.save`.
    pub file: PathBuf,
    /// The new run directory (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn export(a: ExportArgs) -> anyhow::Result<i32> {
    let dir = RunDir::new(&a.dir);
    if a.names {
        dir.check()?;
        let names = elbo::interop::torch_names_and_shapes(&dir.config()?, &dir)?;
        println!("{}", serde_json::to_string(&names)?);
        return Ok(0);
    }
    let out = a.out.unwrap_or_else(|| dir.file("export.safetensors"));
    let n = elbo::interop::export(&dir, &out, a.parity)?;
    eprintln!("{n} tensors with PyTorch names and layouts, the run's config in the metadata");
    println!("{}", out.display());
    Ok(0)
}

pub fn import(a: ImportArgs) -> anyhow::Result<i32> {
    let dir = RunDir::new(&a.out);
    let n = elbo::interop::import(&a.file, &dir)?;
    eprintln!(
        "{n} tensors imported; evaluate with `elbo eval {}` or sample with `elbo sample {}`",
        a.out.display(),
        a.out.display()
    );
    println!("{}", a.out.display());
    Ok(0)
}
