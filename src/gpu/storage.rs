//! How the GPU backend stores the two per-step histories that dominate its memory traffic:
//! the hidden states h [T+1, B, d] and the target offsets dv = v − h [T+1, B, d].
//!
//! Arithmetic is f32 everywhere. [`Storage::F16`] only rounds these two histories to IEEE
//! half precision where a kernel writes them and widens them back where a kernel reads
//! them: half the bytes of the largest buffers, for a relative rounding error of about
//! f16's unit roundoff 2⁻¹¹ ≈ 4.9e-4 on each stored value. The recursions themselves
//! (forward pass, target sweep) keep their running vector in f32 workgroup memory and
//! never read back what they stored.
//!
//! The kernels receive the choice as the pipeline-overridable constant `HIST_F16` (a WGSL
//! `override`), so each kernel has one source and, where it touches a history, two
//! pipelines. F16 packs two neighbouring values into one `u32` word and pads each row of d
//! values to an even length: a row belongs to one workgroup, so no word is shared by two
//! workgroups, and inside a workgroup one invocation writes both halves of a word after a
//! barrier. The conversions are WGSL's `f16` type on devices with `SHADER_F16`, integer
//! code elsewhere ([`F16Conversions`]); the words are the same either way.
//!
//! Small offsets: dv scales with the target step γ_h (the published pixel-MNIST setting
//! has γ_h = 1e-4), which would put it among f16's subnormals (below 6.1e-5) or flush it
//! to zero. F16 therefore stores dv multiplied by a power of two close to 1/γ_h
//! ([`Storage::dv_scale`]): exact in binary floating point, it only moves the exponent.

use half::f16;
use serde::{Deserialize, Serialize};

use crate::config::{TargetMode, TpConfig};
use crate::plan::Device;

/// Element type of the GPU backend's histories h and v − h (`--storage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// 32-bit floats, like the arithmetic (the default).
    #[default]
    F32,
    /// 16-bit floats, two to a 32-bit word: half the memory and traffic of the
    /// histories, relative error about 2⁻¹¹ on each stored value.
    F16,
}

impl Storage {
    /// The plan's view of a GPU storing its histories this way.
    pub fn device(self) -> Device {
        Device::Gpu {
            f16_histories: self == Storage::F16,
        }
    }

    /// Both storages, f32 first.
    pub const ALL: [Storage; 2] = [Storage::F32, Storage::F16];

    /// `f32` or `f16`, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::F16 => "f16",
        }
    }

    /// Unit roundoff of the stored values (2⁻²⁴ for f32, 2⁻¹¹ for f16): round to nearest
    /// stores each value with a relative error at most this.
    pub fn unit_roundoff(self) -> f64 {
        match self {
            Storage::F32 => f64::from(f32::EPSILON) / 2.0,
            Storage::F16 => f64::from(f16::EPSILON) / 2.0,
        }
    }

    /// Bytes of one stored value.
    pub fn bytes(self) -> usize {
        match self {
            Storage::F32 => 4,
            Storage::F16 => 2,
        }
    }

    /// Elements one history row of d values occupies: f16 rows are padded to even length
    /// (the shaders' `hist_stride`).
    pub fn row_len(self, d: usize) -> usize {
        match self {
            Storage::F32 => d,
            Storage::F16 => d.next_multiple_of(2),
        }
    }

    /// The pipeline-overridable constants selecting this storage in the shaders.
    pub fn pipeline_constants(self) -> &'static [(&'static str, f64)] {
        match self {
            Storage::F32 => &[("HIST_F16", 0.0)],
            Storage::F16 => &[("HIST_F16", 1.0)],
        }
    }

    /// The power of two dv is stored multiplied by. F32 stores dv as it is. F16 stores
    /// 2^k·dv with 2^k the power of two nearest 1/γ_h (k in 0..=20), in the modes whose
    /// offsets are proportional to γ_h to first order (linearized, difference): the top
    /// offset −γ_h·g_T then keeps the magnitude of the loss gradient g_T, well inside
    /// f16's normal range. Plain targets are absolute, not small: they keep scale 1.
    pub fn dv_scale(self, tp: &TpConfig) -> f32 {
        let proportional = matches!(
            tp.target_mode,
            TargetMode::Linearized | TargetMode::Difference
        );
        if self == Storage::F32 || !proportional || tp.lr_target <= 0.0 {
            return 1.0;
        }
        let k = (-tp.lr_target.log2()).round().clamp(0.0, 20.0);
        2f32.powi(k as i32)
    }
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How f16 storage converts between f32 and binary16 in the shaders (`--f16-conversions`).
/// Both store the same words; the native conversion is one instruction where the integer
/// code is about fifteen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum F16Conversions {
    /// WGSL's `f16` type where the adapter has wgpu's `SHADER_F16` (the device is then
    /// opened with it), else `integer`. WGSL lets the driver round either way between two
    /// f16 values.
    #[default]
    Native,
    /// Integer code on every adapter: round to nearest even, overflow to ±∞.
    Integer,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_pad_to_even_in_f16_only() {
        assert_eq!(Storage::F32.row_len(7), 7);
        assert_eq!(Storage::F16.row_len(7), 8);
        assert_eq!(Storage::F16.row_len(8), 8);
        assert_eq!(Storage::F16.row_len(1), 2);
    }

    #[test]
    fn dv_scale_is_a_power_of_two_near_one_over_the_target_step() {
        let tp = |lr_target, target_mode| TpConfig {
            lr_target,
            target_mode,
            ..TpConfig::default()
        };
        let lin = TargetMode::Linearized;
        assert_eq!(Storage::F32.dv_scale(&tp(1e-4, lin)), 1.0);
        assert_eq!(Storage::F16.dv_scale(&tp(1e-4, lin)), 8192.0);
        assert_eq!(Storage::F16.dv_scale(&tp(0.1, lin)), 8.0);
        assert_eq!(Storage::F16.dv_scale(&tp(0.5, lin)), 2.0);
        assert_eq!(Storage::F16.dv_scale(&tp(4.0, lin)), 1.0);
        assert_eq!(Storage::F16.dv_scale(&tp(0.0, lin)), 1.0);
        assert_eq!(Storage::F16.dv_scale(&tp(1e-12, lin)), 2f32.powi(20));
        assert_eq!(
            Storage::F16.dv_scale(&tp(1e-4, TargetMode::Difference)),
            8192.0
        );
        assert_eq!(Storage::F16.dv_scale(&tp(1e-4, TargetMode::Plain)), 1.0);
    }

    #[test]
    fn unit_roundoffs() {
        assert_eq!(Storage::F16.unit_roundoff(), 2f64.powi(-11));
        assert_eq!(Storage::F32.unit_roundoff(), 2f64.powi(-24));
    }
}
