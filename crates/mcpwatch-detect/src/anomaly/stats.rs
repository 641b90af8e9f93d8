//! Online statistics in O(1) memory: an exponentially weighted mean and variance.

/// Exponentially weighted moving mean and variance (West's incremental form).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ewma {
    /// The weighted mean.
    #[serde(with = "crate::state::f64_bits")]
    pub mean: f64,
    /// The weighted variance.
    #[serde(with = "crate::state::f64_bits")]
    pub var: f64,
}

impl Ewma {
    /// Starts at `x` with no variance.
    pub fn start(x: f64) -> Self {
        Self { mean: x, var: 0.0 }
    }

    /// Folds in `x` with weight `alpha` (0..1; higher forgets faster).
    pub fn update(&mut self, x: f64, alpha: f64) {
        let d = x - self.mean;
        self.mean += alpha * d;
        self.var = (1.0 - alpha) * (self.var + alpha * d * d);
    }

    /// Standard deviation, at least `floor`.
    pub fn sd(&self, floor: f64) -> f64 {
        self.var.sqrt().max(floor)
    }
}
