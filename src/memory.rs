//! Process-wide allocator settings.
//!
//! glibc's malloc gives each thread that allocates its own arena (up to eight per core). The
//! workers free and reallocate their inference tensors (hundreds of kilobytes each) every frame,
//! and with an arena per worker each keeps its own high-water mark of free memory: MobileNetV2
//! int8 with 2 workers peaked at 63.7 MB resident with the default, 48.5 MB with one arena, at
//! the same throughput (the workers allocate a few hundred times per frame, so the shared
//! arena's lock is not contended). `MALLOC_ARENA_MAX` in the environment still decides when set.

/// Limits glibc malloc to one arena, unless `MALLOC_ARENA_MAX` is set. Call before starting
/// threads. Elsewhere (musl, other systems) it does nothing.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes an allocator parameter; it is called before other threads
        // exist, and an unknown or refused value is reported by its return value (ignored: the
        // default arenas are a correct, if larger, fallback).
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
