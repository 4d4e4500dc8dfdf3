//! `--plot`: one PNG per file.

use std::path::Path;

use forewarn_model::dataset::Dataset;

use super::replay::Decision;

pub fn plot_file(
    _out: &Path,
    _data: &Dataset,
    _labels: &[bool],
    _pred: &[bool],
    _decisions: &[Decision],
    _skip: usize,
) -> anyhow::Result<()> {
    anyhow::bail!("--plot is not implemented yet")
}
