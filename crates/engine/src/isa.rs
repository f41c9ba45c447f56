//! The CPU features lookout's kernels dispatch on, detected once ([`Isa::detect`]) when an
//! operator is wired and stored in it, so that each kernel call chooses its code with one
//! `match` and no feature test.
//!
//! Which code each variant selects is up to the kernels (`crate::kernels`); this module only
//! says what the CPU has, and names it for `lookout check` and the operators' `info`.

/// Which code the kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable code (what the compiler makes of it for the target's baseline).
    Scalar,
    /// x86-64 with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// x86-64 with AVX2 and FMA, and AVX-512F with AVX512-VNNI and AVX512-VL (Ice Lake, Zen 4
    /// and later): the quantized convolutions' matrix product runs on 512-bit `vpdpbusd`
    /// (`kernels::qdot`), the float convolutions' tile on 512-bit registers
    /// (`kernels::fgemm`); every other kernel runs its AVX2 code.
    #[cfg(target_arch = "x86_64")]
    Avx2Vnni,
    /// aarch64 with the dot-product instructions: the quantized convolutions' matrix product
    /// runs on `sdot` (`kernels::qdot`); every other kernel runs its portable (NEON) code.
    /// Constructed only on aarch64.
    NeonDot,
}

impl Isa {
    /// The best the running CPU offers. `LOOKOUT_KERNELS=scalar` forces the portable code,
    /// `LOOKOUT_KERNELS=avx2` AVX2 without VNNI (to compare the two).
    pub fn detect() -> Isa {
        let forced = std::env::var("LOOKOUT_KERNELS").unwrap_or_default();
        if forced == "scalar" {
            return Isa::Scalar;
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            if forced != "avx2" && vnni_available() {
                return Isa::Avx2Vnni;
            }
            return Isa::Avx2Fma;
        }
        if dotprod_available() {
            return Isa::NeonDot;
        }
        Isa::Scalar
    }

    /// Every variant this CPU can run (for tests).
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            v.push(Isa::Avx2Fma);
            if vnni_available() {
                v.push(Isa::Avx2Vnni);
            }
        }
        if dotprod_available() {
            v.push(Isa::NeonDot);
        }
        v
    }

    /// The variant's name: what the quantized convolutions run on.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Vnni => "avx512+vnni",
            Isa::NeonDot => "neon+dotprod",
            _ => self.vector_name(),
        }
    }

    /// What the kernels without a dot-product or AVX-512 path (depthwise, element-wise) run
    /// on under this variant.
    pub fn vector_name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma | Isa::Avx2Vnni => "avx2+fma",
            _ if cfg!(target_arch = "aarch64") => "neon",
            _ => "scalar",
        }
    }

    /// What the float convolutions' tile runs on under this variant.
    pub fn float_tile_name(self) -> &'static str {
        if self.avx512() {
            "avx512f"
        } else {
            self.vector_name()
        }
    }

    /// Whether the CPU has AVX-512F (the VNNI variant requires it): the float convolutions'
    /// tile then runs on 512-bit registers.
    pub fn avx512(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            matches!(self, Isa::Avx2Vnni)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Whether the AVX2 + FMA kernels run (both x86-64 variants).
    pub fn avx2(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            matches!(self, Isa::Avx2Fma | Isa::Avx2Vnni)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// Whether this CPU has the aarch64 dot-product instructions (`sdot`, Armv8.2 DotProd).
pub(crate) fn dotprod_available() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

/// Whether this CPU has 256-bit `vpdpbusd` (AVX512-VNNI with AVX512-VL) and AVX2.
pub(crate) fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
