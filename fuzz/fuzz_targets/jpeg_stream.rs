#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lookout::fuzz::jpeg_stream(data));
