//! Measures gzip speed and size per level on a file (for choosing defaults):
//! `cargo run --example deflate_levels -p xtask -- dump.sql [threads]`
use std::io::Write;
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("a file to compress");
    let data = std::fs::read(&path).expect("readable");
    for level in 1..=9 {
        let t = Instant::now();
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(data.len() / 2),
            flate2::Compression::new(level),
        );
        for chunk in data.chunks(256 * 1024) {
            gz.write_all(chunk).unwrap();
        }
        let out = gz.finish().unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "level {level}: {:.1} MiB ({:.3} of input), {:.0} MB/s",
            out.len() as f64 / 1048576.0,
            out.len() as f64 / data.len() as f64,
            data.len() as f64 / secs / 1e6
        );
    }
}
