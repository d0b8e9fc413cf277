//! Measures gzip speed and size per level on a file (for choosing defaults),
//! one core, in 1 MiB members as the tool writes them: libdeflate (what the
//! tool deflates with) against flate2 + zlib-rs (what it deflated with
//! before, and still inflates with).
//! `cargo run --release --example deflate_levels -p xtask -- dump.sql [LEVEL...]`
use std::io::Write;
use std::time::Instant;

const MEMBER: usize = 1024 * 1024;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("a file to compress");
    let data = std::fs::read(&path).expect("readable");
    let mut levels: Vec<u32> = args.map(|l| l.parse().expect("a level 1-9")).collect();
    if levels.is_empty() {
        levels = (1..=9).collect();
    }
    let report = |what: &str, level: u32, bytes: usize, t: Instant| {
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{what:<10} level {level}: {:.1} MiB ({:.3} of input), {:.0} MB/s",
            bytes as f64 / 1048576.0,
            bytes as f64 / data.len() as f64,
            data.len() as f64 / secs / 1e6
        );
    };
    for level in levels {
        let t = Instant::now();
        let lvl = libdeflater::CompressionLvl::new(level as i32).expect("a level 1-9");
        let mut deflater = libdeflater::Compressor::new(lvl);
        let mut out = vec![0; deflater.gzip_compress_bound(MEMBER)];
        let mut bytes = 0;
        for chunk in data.chunks(MEMBER) {
            bytes += deflater.gzip_compress(chunk, &mut out).unwrap();
        }
        report("libdeflate", level, bytes, t);

        let t = Instant::now();
        let mut bytes = 0;
        for chunk in data.chunks(MEMBER) {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(MEMBER / 2),
                flate2::Compression::new(level),
            );
            gz.write_all(chunk).unwrap();
            bytes += gz.finish().unwrap().len();
        }
        report("zlib-rs", level, bytes, t);
    }
}
